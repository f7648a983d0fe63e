"""An in-memory pyfuse3 file system of a given shape: the limit of any walk through pyfuse3.

Issue 5 asks for a cold walk "within 3x of the limit"; this is that limit, measured in
the same run: the same tree, already in memory, answered with the same entry and
attribute timeouts as orthancfs's defaults, so the kernel asks it what it asks us.

    python bench/memfs.py SHAPE.json MOUNTPOINT

SHAPE.json: {"dirs": ["a", "a/b", ...], "files": [["a/b/c.dcm", size], ...]} (paths relative
to the root, parents listed before their children).  Serves until unmounted.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import time
from pathlib import Path

import pyfuse3
import trio

TIMEOUT = 300.0  # orthancfs's default entry and attribute timeouts while following the change log


class Shape(pyfuse3.Operations):
    def __init__(self, dirs: list[str], files: list[tuple[str, int]]):
        super().__init__()
        self.now_ns = time.time_ns()
        self.sizes: dict[int, int | None] = {pyfuse3.ROOT_INODE: None}  # None: a directory
        self.children: dict[int, list[tuple[bytes, int]]] = {pyfuse3.ROOT_INODE: []}
        self.by_name: dict[tuple[int, bytes], int] = {}
        inodes = {"": pyfuse3.ROOT_INODE}
        for path, size in [(d, None) for d in dirs] + [(f, s) for f, s in files]:
            parent, _, name = path.rpartition("/")
            inode = inodes[path] = len(self.sizes) + pyfuse3.ROOT_INODE
            self.sizes[inode] = size
            if size is None:
                self.children[inode] = []
            self.children[inodes[parent]].append((os.fsencode(name), inode))
            self.by_name[(inodes[parent], os.fsencode(name))] = inode
        for entries in self.children.values():
            entries.sort()

    def attributes(self, inode: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        size = self.sizes[inode]
        attr.st_ino = inode
        attr.st_mode = (stat.S_IFDIR | 0o555) if size is None else (stat.S_IFREG | 0o444)
        attr.st_nlink = 2 if size is None else 1
        attr.st_size = size or 0
        attr.st_blksize = 1 << 17
        attr.st_blocks = (attr.st_size + 511) // 512
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self.now_ns
        attr.st_uid, attr.st_gid = os.getuid(), os.getgid()
        attr.entry_timeout = attr.attr_timeout = TIMEOUT
        return attr

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        inode = self.by_name.get((parent_inode, name))
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.attributes(inode)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.attributes(inode)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = self.children[fh]
        for position in range(start_id, len(entries)):
            name, inode = entries[position]
            if not pyfuse3.readdir_reply(token, name, self.attributes(inode), position + 1):
                return

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        pass  # nothing to free: the whole tree lives as long as the mount


def main() -> None:
    shape_file, mountpoint = sys.argv[1:3]
    shape = json.loads(Path(shape_file).read_text())
    operations = Shape(shape["dirs"], [(path, size) for path, size in shape["files"]])
    pyfuse3.init(operations, mountpoint, set(pyfuse3.default_options) | {"fsname=memfs", "ro"})
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
