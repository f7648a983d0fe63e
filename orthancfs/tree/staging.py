"""Where files being written into uploads/ live until they are closed, and how much disk they may take.

Every open for writing gets a private staging file of its own: two writers of one name
never write into the same bytes, and a writer's close sends exactly what it wrote.  A
staging file is named after the upload it will become, so that after a crash its data
can be shown again under its name instead of being lost.

Uploads and download spools share the cache disk.  Uploads may fill it only down to a
reserve kept free for downloads (a full uploads/ must not make reads fail); before a
write is refused, whatever is kept only for speed (finished spools nobody reads,
receipts) is given up.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote, unquote

from ..errors import LocalDiskFull

log = logging.getLogger(__name__)

MIN_RESERVE = 64 << 20  # bytes kept free for downloads, at least (capped at a quarter of the disk)
MAX_NAME = 240  # bytes of a staging file name; longer upload paths go to a side file
LONG = "%"  # the name part of a staging file whose upload path is in a side file (quote() never leaves a %)
SIDE = ".path"


class SpaceBudget:
    """How full uploads may make the cache disk: all but `reserve` bytes, kept for downloads."""

    def __init__(self, path: str, reserve: int, relief: list[Callable[[], object]] | None = None):
        self.path = path
        self.reserve = reserve
        self.relief = relief if relief is not None else []  # what to give up before refusing a write

    @classmethod
    def for_disk(cls, path: str, download_cache: int) -> SpaceBudget:
        """The reserve: what downloads may keep (--cache-size), at least MIN_RESERVE, at most a
        quarter of the disk (a small disk must still take uploads)."""
        total = _statvfs_bytes(path)[0]
        return cls(path, min(max(download_cache, MIN_RESERVE), total // 4))

    def claim(self, growth: int) -> None:
        """Room for `growth` more bytes of uploads, or LocalDiskFull."""
        if growth <= 0 or self.free() - growth >= self.reserve:
            return
        for relieve in self.relief:
            relieve()
        if self.free() - growth < self.reserve:
            raise LocalDiskFull(f"no space left for uploads on {self.path}: {self.reserve >> 20} MiB "
                                "stay free for reading files")

    def free(self) -> int:
        return _statvfs_bytes(self.path)[1]


def _statvfs_bytes(path: str) -> tuple[int, int]:
    info = os.statvfs(path)
    return info.f_blocks * info.f_frsize, info.f_bavail * info.f_frsize


class Staging:
    """The private directory of staging files."""

    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._numbers = itertools.count(1)
        self._prefix = f"{time.time_ns():x}"  # names never repeat, not even across restarts

    def new(self, rel: str, mode: int) -> tuple[str, int]:
        """A new, empty staging file for an upload to `rel`: its path and a read-write descriptor."""
        stem = f"{self._prefix}-{next(self._numbers)}."
        quoted = quote(rel, safe=" ")
        name = stem + (quoted if len(stem) + len(quoted.encode()) <= MAX_NAME else LONG)
        path = os.path.join(self.directory, name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        if name.endswith("." + LONG):
            _write_side_file(path + SIDE, rel)
        return path, fd

    def forget(self, path: str) -> None:
        """The staging file left this directory (placed in uploads/ or removed): drop its side file."""
        if path.endswith("." + LONG):
            _unlink_quietly(path + SIDE)

    def discard(self, path: str) -> None:
        _unlink_quietly(path)
        self.forget(path)

    def leftovers(self) -> Iterator[tuple[str, str]]:
        """(path, upload path) of every staging file found: writers that never closed (a crash)."""
        for name in sorted(os.listdir(self.directory)):
            path = os.path.join(self.directory, name)
            if name.endswith(SIDE) or not os.path.isfile(path):
                continue
            _, _, quoted = name.partition(".")
            rel = _read_side_file(path + SIDE) if quoted == LONG else unquote(quoted)
            yield path, rel or f"recovered {name}"  # a lost side file loses the name, not the data


def copy_content(source: int, target: int, size: int) -> None:
    """Copy `size` bytes from offset 0 of one descriptor to another, in the kernel where it can."""
    offset = 0
    while offset < size:
        try:
            moved = os.copy_file_range(source, target, size - offset, offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            moved = os.pwrite(target, os.pread(source, min(size - offset, 1 << 20), offset), offset)
        if moved == 0:
            return  # the source is shorter than it said: what there is, is copied
        offset += moved


def _write_side_file(path: str, rel: str) -> None:
    with open(path, "w", encoding="utf-8") as side:
        side.write(rel)


def _read_side_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as side:
            return side.read()
    except OSError:
        return ""


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc)
