"""Whether a FLUSH is the writer's last close, or another descriptor's.

The kernel sends FLUSH at every close(2) of a descriptor of the file: also when a process
that forked closes its copy (at exec, for close-on-exec descriptors, or at exit), while the
writer goes on writing.  Sending the upload at such a flush would send a prefix of the file,
which Orthanc may well store (a file cut between two elements parses).  pyfuse3 does not say
who flushes, so we ask the kernel who still holds the file: if the process that opened it
still has a descriptor on it, this flush was not its last close, and the file is sent at a
later one (or, if every close is another's, when the last reference is released).

Costs one scan of that process's descriptors per upload (about 16 us for a `cp`, with its
six).  A file reached through another path (a bind mount) is not recognised, and is then sent
at its first flush, as it always was.
"""

from __future__ import annotations

import os


def holds(pid: int, path: str) -> bool:
    """Whether process `pid` has a descriptor open on `path` (a path inside our mount)."""
    directory = f"/proc/{pid}/fd"
    try:
        descriptors = os.listdir(directory)
    except OSError:  # gone: it holds nothing
        return False
    for descriptor in descriptors:
        try:
            if os.readlink(f"{directory}/{descriptor}") == path:
                return True
        except OSError:  # closed meanwhile
            continue
    return False
