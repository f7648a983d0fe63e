"""pyfuse3 request handlers.

Each handler looks up a node, calls the tree model (in a worker thread when it
may touch the network) and translates errors; nothing else.  Only FUSEError
may leave a handler (pyfuse3's contract).
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import math
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pyfuse3
import trio
from pyfuse3 import FUSEError

from ..content import Content
from ..errors import OrthancFSError
from ..tree import Node, Tree
from ..tree.naming import MAX_NAME_BYTES
from .errors import WarningLimiter, report
from .inodes import InodeTable

log = logging.getLogger(__name__)

T = TypeVar("T")
BLOCK_SIZE = 4096


@dataclass(frozen=True)
class FuseSettings:
    """What the frontend needs beyond the tree."""

    uid: int
    gid: int
    cache_timeout: float = 10.0  # how long the kernel may trust names and attributes
    workers: int = 16  # concurrent model calls (threads) at most


class OrthancOperations(pyfuse3.Operations):
    """The orthancfs file system, as the kernel sees it."""

    supports_dot_lookup = False  # no NFS export, so the kernel never looks up "." or ".."

    def __init__(self, tree: Tree, settings: FuseSettings):
        super().__init__()
        self.tree = tree
        self.settings = settings
        self.inodes = InodeTable(tree.root)
        self.limiter = trio.CapacityLimiter(settings.workers)
        self._handles = itertools.count(1)
        self._dirs: dict[int, list[tuple[str, Node]]] = {}
        self._files: dict[int, Content] = {}
        self._warnings = WarningLimiter()

    async def _model(self, operation: str, fn: Callable[..., T], *args: Any) -> T:
        """Run a model call in a worker thread, with model errors as errno."""
        try:
            return await trio.to_thread.run_sync(functools.partial(fn, *args), limiter=self.limiter)
        except OrthancFSError as exc:
            raise FUSEError(report(exc, operation, self._warnings)) from None
        except Exception:
            log.exception("%s failed unexpectedly", operation)
            raise FUSEError(errno.EIO) from None

    def _node(self, inode: int) -> Node:
        node = self.inodes.node(inode)
        if node is None:
            raise FUSEError(errno.ENOENT)
        return node

    def _attributes(self, node: Node, inode: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        attr.entry_timeout = attr.attr_timeout = self.settings.cache_timeout
        attr.st_mode = (stat.S_IFDIR | 0o555) if node.is_dir else (stat.S_IFREG | 0o444)
        attr.st_nlink = 2 if node.is_dir else 1
        attr.st_uid, attr.st_gid = self.settings.uid, self.settings.gid
        attr.st_size = node.size
        attr.st_blksize = BLOCK_SIZE
        attr.st_blocks = math.ceil(node.size / 512)
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = node.mtime_ns
        return attr

    # --- names and attributes -------------------------------------------------

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if len(name) > MAX_NAME_BYTES:
            raise FUSEError(errno.ENAMETOOLONG)
        parent = self._node(parent_inode)
        node = await self._model("lookup", self.tree.lookup, parent, os.fsdecode(name))
        return self._attributes(node, self.inodes.remember(node))

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            self.inodes.forget(inode, count)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attributes(self._node(inode), inode)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        stats = await self._model("statfs", self.tree.statfs)
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLOCK_SIZE
        data.f_blocks = math.ceil(stats.used_bytes / BLOCK_SIZE)
        data.f_bfree = data.f_bavail = 0
        data.f_files = stats.instances
        data.f_ffree = data.f_favail = 0
        data.f_namemax = MAX_NAME_BYTES
        return data

    # --- directories ----------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self._node(inode)
        children = await self._model("opendir", self.tree.children, node)
        # A snapshot per open directory keeps readdir offsets stable whatever
        # Orthanc does meanwhile.
        handle = next(self._handles)
        self._dirs[handle] = list(children.items())
        return handle

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = self._dirs[fh]
        for position in range(start_id, len(entries)):
            name, node = entries[position]
            inode = self.inodes.remember(node)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._attributes(node, inode), position + 1):
                self.inodes.forget(inode, 1)  # the kernel did not take this entry
                return

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    # --- files ----------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise FUSEError(errno.EROFS)
        node = self._node(inode)
        content = await self._model("open", self.tree.open, node)
        handle = next(self._handles)
        self._files[handle] = content
        # JSON documents may change size between stat and open: let reads, not
        # the cached size, decide where they end.
        return pyfuse3.FileInfo(fh=handle, direct_io=not node.size_is_exact)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return self._files[fh].read(off, size)  # a local pread: cheap enough for the loop

    async def release(self, fh: int) -> None:
        content = self._files.pop(fh, None)
        if content is not None:
            content.close()

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        raise FUSEError(errno.ENODATA)

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return []

    # --- everything that would change the tree: read-only for now --------------

    async def setattr(self, inode, attr, fields, fh, ctx):  # noqa: ANN001 - pyfuse3 signature
        raise FUSEError(errno.EROFS)

    async def mknod(self, parent_inode, name, mode, rdev, ctx):  # noqa: ANN001
        raise FUSEError(errno.EROFS)

    async def mkdir(self, parent_inode, name, mode, ctx):  # noqa: ANN001
        raise FUSEError(errno.EROFS)

    async def create(self, parent_inode, name, mode, flags, ctx):  # noqa: ANN001
        raise FUSEError(errno.EROFS)

    async def unlink(self, parent_inode, name, ctx):  # noqa: ANN001
        raise FUSEError(errno.EROFS)

    async def rmdir(self, parent_inode, name, ctx):  # noqa: ANN001
        raise FUSEError(errno.EROFS)

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):  # noqa: ANN001
        raise FUSEError(errno.EROFS)

    async def symlink(self, parent_inode, name, target, ctx):  # noqa: ANN001
        raise FUSEError(errno.EROFS)

    async def link(self, inode, new_parent_inode, new_name, ctx):  # noqa: ANN001
        raise FUSEError(errno.EROFS)

    async def write(self, fh, off, buf):  # noqa: ANN001
        raise FUSEError(errno.EROFS)

    async def setxattr(self, inode, name, value, ctx):  # noqa: ANN001
        raise FUSEError(errno.EROFS)

    async def removexattr(self, inode, name, ctx):  # noqa: ANN001
        raise FUSEError(errno.EROFS)
