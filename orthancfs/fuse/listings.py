"""Which folder listings the kernel may keep (its readdir cache, FOPEN_CACHE_DIR).

A warm walk of a mount is mostly round trips: per folder an OPENDIR, READDIRPLUS until the end
and a RELEASEDIR, all answered from memory.  The kernel can keep a listing and serve readdir
itself, but it has no timeout for that copy: it keeps it for as long as each opendir answers
"keep your cache" (FOPEN_KEEP_CACHE), and drops it at the first that does not.

So opendir decides, every time, from what the tree says now: the kernel keeps its copy only if
what readdir would hand it now is exactly what it was handed (the same names, the same nodes,
the same inode numbers).  Anything else (an arrival, a deletion, an expired listing asked again
of Orthanc with a different answer, a child inode the kernel has forgotten and would get a new
number for) makes it read the folder again.  Nothing is trusted longer than the tree trusts it,
and no notice has to reach the kernel in time.

pyfuse3 3.5 cannot say FOPEN_CACHE_DIR from opendir; `make` builds it with a small patch
(.ci/pyfuse3-cache-readdir.patch) that lets opendir return a FileInfo.  With an unpatched pyfuse3
opendir returns a handle, as before, and the kernel asks every time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pyfuse3

from ..tree import Node

Entries = list[tuple[str, Node]]


_PATCHED = hasattr(pyfuse3.FileInfo, "cache_readdir")


def kernel_keeps_listings() -> bool:
    """Whether this pyfuse3 lets opendir ask the kernel to keep a listing."""
    return _PATCHED


@dataclass
class Handed:
    """One listing as the kernel got it: the entries, and the inode number each went out with
    (None until readdir hands it over; the kernel asks for those it lacks)."""

    entries: Entries
    inodes: list[int | None] = field(init=False)

    def __post_init__(self) -> None:
        self.inodes = [None] * len(self.entries)


class KernelListings:
    """The last listing of each folder the kernel may hold, to tell opendir whether it still may."""

    def __init__(self, current_inode: Callable[[Node], int | None]):
        self._current_inode = current_inode  # the inode number a node has now, None if it has none
        self._handed: dict[int, Handed] = {}  # folder inode -> what its cached listing came from

    def open(self, folder: int, entries: Entries, handle: int) -> tuple[Handed, int | pyfuse3.FileInfo]:
        """The record readdir fills for this open, and opendir's answer to the kernel."""
        if not kernel_keeps_listings():
            return Handed(entries), handle
        if not entries:
            # The kernel checks a cached empty listing for its end before its (missing) page, so
            # it would never see it dropped: an empty folder is read from us every time.
            self._handed.pop(folder, None)
            return Handed(entries), handle
        handed = self._handed.get(folder)
        if handed is not None and self._unchanged(handed, entries):
            return handed, pyfuse3.FileInfo(fh=handle, keep_cache=True, cache_readdir=True)  # type: ignore[call-arg]
        # The kernel drops its copy and fills a new one from this open's entries alone.
        handed = self._handed[folder] = Handed(entries)
        return handed, pyfuse3.FileInfo(fh=handle, keep_cache=False, cache_readdir=True)  # type: ignore[call-arg]

    def _unchanged(self, handed: Handed, entries: Entries) -> bool:
        if handed.entries != entries:  # mostly the same Node objects: compared by identity first
            return False
        current = self._current_inode
        return all(inode is None or current(node) == inode
                   for inode, (_, node) in zip(handed.inodes, entries, strict=True))

    def forget(self, folder: int) -> None:
        """The kernel forgot the folder's inode, and with it its listing."""
        self._handed.pop(folder, None)
