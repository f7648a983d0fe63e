"""`orthancfs umount`: wait for pending uploads, then unmount."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from .errors import StartupError

PENDING_XATTR = "user.orthancfs.pending"


def is_orthancfs(path: str) -> bool:
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        return any(fields[1] == path and fields[2] == "fuse.orthancfs"
                   for fields in (line.split() for line in mounts))


def pending_uploads(path: str) -> list[str]:
    try:
        return [name for name in os.getxattr(path, PENDING_XATTR).decode("utf-8").split("\n") if name]
    except OSError:
        return []


def unmount(mountpoint: str, wait: float, lazy: bool) -> int:
    path = os.path.abspath(mountpoint)
    if not is_orthancfs(path):
        raise StartupError(f"{path} is not an orthancfs mount")
    deadline = time.monotonic() + wait
    while pending := pending_uploads(path):
        if time.monotonic() > deadline:
            print(f"orthancfs: not unmounted, uploads pending: {', '.join(pending)}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    command = ["fusermount3", "-u", *(["-z"] if lazy else []), path]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["fusermount3 failed"])[-1]
        raise StartupError(f"cannot unmount {path}: {reason}")
    return 0
