"""pyfuse3 request handlers.

Each handler looks up a node, calls the tree model (in a worker thread when it
may touch the network or disk) and translates errors; nothing else.  Only FUSEError
may leave a handler (pyfuse3's contract).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import math
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pyfuse3
import trio
from pyfuse3 import FUSEError

from ..errors import OrthancFSError, WouldBlock
from ..tree import ChangedElsewhere, Closing, FolderRemoved, Handle, Kind, Node, Tree
from ..tree.naming import MAX_NAME_BYTES
from ..tree.nodes import Role
from ..tree.uploads import STATUS_XATTR, UPLOADS, upload_root
from .errors import WarningLimiter, report
from .holders import holds
from .inodes import InodeTable
from .listings import Handed, KernelListings
from .notify import KernelNotifier

log = logging.getLogger(__name__)

T = TypeVar("T")


class LoopSender(Protocol):
    """`POST /instances` from this loop (the composition root passes the client's LoopUploader):
    a thread hop per small upload cost twice the CPU, and the model stays synchronous."""

    async def upload(self, body: bytes) -> Any: ...

    def close(self) -> None: ...


BLOCK_SIZE = 4096
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2  # renameat2(2) flags
PENDING_XATTR = b"user.orthancfs.pending"
LABELS_XATTR = b"user.orthanc.labels"  # a study's labels (Orthanc 1.12), comma-separated


@dataclass(frozen=True)
class FuseSettings:
    """What the frontend needs beyond the tree."""

    uid: int
    gid: int
    umask: int = 0o022
    cache_timeout: float = 10.0  # how long the kernel may trust names and attributes
    workers: int = 16  # concurrent model calls (threads) at most
    upload_workers: int = 4  # concurrent uploads to Orthanc at most
    mountpoint: str = ""  # where we are mounted: to tell a writer's last close from another's (holders.py)


class OrthancOperations(pyfuse3.Operations):
    """The orthancfs file system, as the kernel sees it."""

    supports_dot_lookup = False  # no NFS export, so the kernel never looks up "." or ".."

    def __init__(self, tree: Tree, settings: FuseSettings, sender: LoopSender):
        super().__init__()
        self.tree = tree
        self.settings = settings
        self.inodes = InodeTable(tree.root)
        self.limiter = trio.CapacityLimiter(settings.workers)
        # Uploads get their own threads, so a big `cp -r` into uploads/ never
        # starves reads of the rest of the tree.
        self.upload_limiter = trio.CapacityLimiter(settings.upload_workers)
        self._handles = itertools.count(1)
        self._dirs: dict[int, tuple[int, Handed]] = {}  # handle -> (folder inode, its entries as handed out)
        self.listings = KernelListings(self.inodes.current)
        self._files: dict[int, Handle] = {}
        self._writers: dict[int, int] = {}  # handle of an upload open for writing -> pid of the opener
        self._warnings = WarningLimiter()
        self.notifier = KernelNotifier()
        self._unsubscribe = tree.events.subscribe(self._changed)
        self._sender = sender  # small uploads are POSTed from the loop itself

    @contextmanager
    def _errno(self, operation: str) -> Iterator[None]:
        """The one translation of what the model raises into FUSEError (nothing else may leave a handler)."""
        try:
            yield
        except WouldBlock:
            raise  # not an error: the caller asks again in a worker thread
        except OrthancFSError as exc:
            raise FUSEError(report(exc, operation, self._warnings)) from None
        except OSError as exc:  # the local staging area (disk full, ...)
            log.warning("%s: %s", operation, exc)
            raise FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed unexpectedly", operation)
            raise FUSEError(errno.EIO) from None

    async def _model(self, operation: str, fn: Callable[..., T], *args: Any,
                     limiter: trio.CapacityLimiter | None = None) -> T:
        """Run a model call in a worker thread, with model errors as errno."""
        with self._errno(operation):
            return await trio.to_thread.run_sync(functools.partial(fn, *args), limiter=limiter or self.limiter)

    async def _cached_or_model(self, operation: str, fn: Callable[..., T], *args: Any) -> T:
        """Answer in the loop from what the tree knows when it can (no thread hop), else in a worker thread."""
        try:
            with self._errno(operation):
                return self.tree.at_once(fn, *args)
        except WouldBlock:
            return await self._model(operation, fn, *args)

    def _node(self, inode: int) -> Node:
        node = self.inodes.node(inode)
        if node is None:
            raise FUSEError(errno.ENOENT)
        return node

    def _attributes(self, node: Node, inode: int) -> pyfuse3.EntryAttributes:
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = inode
        # Names of files in uploads/ vanish under the writer's hands (sent, then gone): the
        # kernel must ask each time.  Their attributes change only through this mount, which
        # the kernel follows itself, so it may keep them (two getattr fewer per copied file).
        # Folders change only through this mount, or by the sweep of emptied folders, which
        # takes their names back (_forget_upload_folder); caching them saves `cp -r` five of
        # its eleven requests per file.
        timeout = 0.0 if node.view == UPLOADS and not node.is_dir else self.settings.cache_timeout
        attr.entry_timeout = timeout
        attr.attr_timeout = self.settings.cache_timeout if node.kind is Kind.UPLOAD else timeout
        writable = self.tree.writable(node)
        if writable and node.mode is not None:
            permissions = node.mode
        else:
            permissions = ((0o555 if node.is_dir else 0o444) | (0o200 if writable else 0)) & ~self.settings.umask
        attr.st_mode = (stat.S_IFDIR if node.is_dir else stat.S_IFREG) | permissions
        attr.st_nlink = 2 if node.is_dir else 1
        attr.st_uid, attr.st_gid = self.settings.uid, self.settings.gid
        attr.st_size = node.size
        attr.st_blksize = BLOCK_SIZE
        attr.st_blocks = math.ceil(node.size / 512)
        attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = node.mtime_ns
        return attr

    def _changed(self, event: FolderRemoved | ChangedElsewhere) -> None:
        """The model changed something the kernel may cache (called in the thread that changed it)."""
        if isinstance(event, FolderRemoved):
            self._forget_upload_folder(event.rel)
        elif event.deleted:
            self._forget_view_names()

    def _forget_view_names(self) -> None:
        """Resources were deleted elsewhere, Orthanc cannot say which: the kernel forgets every
        name of the views it caches and looks each up again (answered from the tree's fresh
        listings), so a deleted file is not found from then on, instead of for cache_timeout."""
        for parent, name in self.inodes.names(lambda node: node.view != UPLOADS):
            self.notifier.forget_entry(parent, name)

    def _forget_upload_folder(self, rel: str) -> None:
        """The model removed uploads/`rel` (an emptied folder): the kernel must not trust that name any more."""
        parent_rel, _, name = rel.rpartition("/")
        parent_key = (UPLOADS, Role.UPLOAD_DIR, parent_rel) if parent_rel else upload_root().key
        parent_inode = self.inodes.inode_of(parent_key)
        if parent_inode is not None:  # the kernel never saw the parent: it has no name to forget
            self.notifier.forget_entry(parent_inode, os.fsencode(name))

    def close(self) -> None:
        """Before the FUSE session closes (the trio loop has ended)."""
        self._unsubscribe()
        self.notifier.close()
        self._sender.close()

    def _name(self, name: bytes) -> str:
        """A name the kernel gave us, as text; names that cannot be ours are refused."""
        if len(name) > MAX_NAME_BYTES:
            raise FUSEError(errno.ENAMETOOLONG)
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError:
            raise FUSEError(errno.EINVAL) from None

    # --- names and attributes -------------------------------------------------

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        node = await self._cached_or_model("lookup", self.tree.lookup, parent, self._name(name))
        return self._attributes(node, self.inodes.remember(node, parent_inode, name))

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            self.inodes.forget(inode, count)
            if self.inodes.node(inode) is None:
                self.listings.forget(inode)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        if node.view == UPLOADS:  # a local lstat: answered in the loop, like uploads/ lookups
            node = await self._cached_or_model("getattr", self.tree.refresh, node)
            self.inodes.update(inode, node)
        return self._attributes(node, inode)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        stats = await self._model("statfs", self.tree.statfs)
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLOCK_SIZE
        # The size is what Orthanc holds plus the room for uploads, so that df's Used
        # (size - free) is Orthanc's own use, never negative; likewise the inodes.
        data.f_bfree = data.f_bavail = stats.free_bytes // BLOCK_SIZE
        data.f_blocks = math.ceil(stats.used_bytes / BLOCK_SIZE) + data.f_bfree
        data.f_ffree = data.f_favail = stats.free_files
        data.f_files = stats.instances + stats.free_files
        data.f_namemax = MAX_NAME_BYTES
        return data

    # --- directories ----------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int | pyfuse3.FileInfo:
        node = self._node(inode)
        children = await self._cached_or_model("opendir", self.tree.children, node)
        # A snapshot per open directory keeps readdir offsets stable whatever
        # Orthanc does meanwhile.
        # The kernel keeps the listing it has only if it is this one (listings.py).
        handle = next(self._handles)
        handed, answer = self.listings.open(inode, list(children.items()), handle)
        self._dirs[handle] = (inode, handed)
        return answer

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        parent, handed = self._dirs[fh]
        entries = handed.entries
        for position in range(start_id, len(entries)):
            name, node = entries[position]
            encoded = os.fsencode(name)
            inode = self.inodes.remember(node, parent, encoded)
            if not pyfuse3.readdir_reply(token, encoded, self._attributes(node, inode), position + 1):
                self.inodes.forget(inode, 1)  # the kernel did not take this entry
                return
            handed.inodes[position] = inode

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    # --- files ----------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self._node(inode)
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        args = (node, writable, bool(flags & os.O_TRUNC))
        if self.tree.opens_locally(node):  # a local file: cheaper in the loop than a thread hop
            with self._errno("open"):
                content = self.tree.open(*args)
        else:
            content = await self._model("open", self.tree.open, *args)
        handle = next(self._handles)
        self._files[handle] = content
        if writable:
            self._writers[handle] = ctx.pid
        # Generated documents may change size between stat and open: let reads,
        # not the cached size, decide where they end.  An instance's inode stands for
        # one version of it (inodes.py), so the kernel may keep its pages across opens.
        return pyfuse3.FileInfo(fh=handle, direct_io=not node.size_is_exact, keep_cache=node.kind is Kind.INSTANCE)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        parent = self._node(parent_inode)
        with self._errno("create"):  # a local open(O_CREAT) in uploads/: cheaper than a thread hop
            node, content = self.tree.create(parent, self._name(name), mode, exclusive=bool(flags & os.O_EXCL))
        handle = next(self._handles)
        self._files[handle] = content
        self._writers[handle] = ctx.pid
        return pyfuse3.FileInfo(fh=handle), self._attributes(node, self.inodes.remember(node))

    async def read(self, fh: int, off: int, size: int) -> bytes:
        content = self._files[fh]
        if not content.ready_for(off, size):
            if content.fetches(off, size):  # far ahead of the download: these bytes alone, in a thread
                return await self._model("read", content.read, off, size)
            await _arrival(content, off, size)  # bytes still on their way: wait in the loop, no thread
        with self._errno("read"):  # a failed download says why here
            return content.read(off, size)  # a local pread: cheap enough for the loop

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        content = self._files[fh]
        if not content.writable:
            raise FUSEError(errno.EBADF)
        with self._errno("write"):  # a local pwrite: cheap enough for the loop
            return content.write(off, buf)

    async def flush(self, fh: int) -> None:
        """close(): the moment an upload is sent to Orthanc, so the writer hears how it went."""
        content = self._files.get(fh)
        if content is None or not content.changed or self._held_elsewhere(fh, content):
            return
        await self._flush_now(content)  # local work first (the file takes its name); then the send

    async def _send(self, closing: Closing) -> None:
        """A plain DICOM file is POSTed from the loop (a thread per file cost twice the CPU); an
        archive, a big file, and the rare answer that must be confirmed with Orthanc, in a thread."""
        if closing.body is None:
            await self._model("upload", closing.send, limiter=self.upload_limiter)
            return
        async with self.upload_limiter:
            with self._errno("upload"):
                try:
                    answer = await self._sender.upload(closing.body)
                except OrthancFSError as exc:
                    settled = closing.answered(error=exc)
                else:
                    settled = closing.answered(answer=answer)
        if settled is None:
            await self._model("upload", closing.confirm, limiter=self.upload_limiter)

    def _held_elsewhere(self, fh: int, content: Handle) -> bool:
        """Whether this flush is not the writer's last close (see holders.py)."""
        pid = self._writers.get(fh)
        if not self.settings.mountpoint or pid is None:
            return False
        return holds(pid, f"{self.settings.mountpoint}/{UPLOADS}/{content.rel}")  # type: ignore[attr-defined]

    def uploads_being_sent(self) -> list[str]:
        return self.tree.pending()[1]

    def uploads_open_for_writing(self) -> list[str]:
        return self.tree.pending()[0]

    async def fsync(self, fh: int, datasync: bool) -> None:
        pass  # staged data reaches Orthanc at close; before that it is a local file like any other

    async def release(self, fh: int) -> None:
        content = self._files.pop(fh, None)
        self._writers.pop(fh, None)
        if content is not None and content.changed:
            # Every close was another descriptor's (holders.py): the last reference is gone now. Nobody
            # can be told how it went; the outcome is recorded as for any upload.
            with contextlib.suppress(FUSEError):
                await self._flush_now(content)
        if content is not None:
            content.close()

    async def _flush_now(self, content: Handle) -> None:
        with self._errno("upload"):
            closing = content.closing()
        if closing is not None:
            await self._send(closing)

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._node(inode)
        if not (fields.update_size or fields.update_mode or fields.update_atime or fields.update_mtime):
            return self._attributes(node, inode)  # chown to anything: owners are fixed, nothing to do
        changes = {
            "size": attr.st_size if fields.update_size else None,
            "mode": attr.st_mode if fields.update_mode else None,
            "atime_ns": attr.st_atime_ns if fields.update_atime else None,
            "mtime_ns": attr.st_mtime_ns if fields.update_mtime else None,
        }
        handle = self._files.get(fh) if fh is not None else None
        changes["handle"] = handle if handle is not None and handle.writable else None
        node = await self._model("setattr", functools.partial(self.tree.set_attributes, node, **changes),
                                 limiter=self.upload_limiter)
        self.inodes.update(inode, node)
        return self._attributes(node, inode)

    # --- extended attributes: why an upload was kept ------------------------------

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        node = self._node(inode)
        if name == PENDING_XATTR and inode == pyfuse3.ROOT_INODE:  # what `orthancfs umount` waits for
            pending = sorted(set(self.uploads_being_sent() + self.uploads_open_for_writing()))
            return "\n".join(pending).encode("utf-8")
        if name == STATUS_XATTR.encode():
            status = await self._model("getxattr", self.tree.status, node)
            if status is not None:
                return status.encode("utf-8")
        if name == LABELS_XATTR:
            labels = await self._cached_or_model("getxattr", self.tree.labels, node)
            if labels is not None:
                return ",".join(labels).encode()
        raise FUSEError(errno.ENODATA)

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        node = self._node(inode)
        status = await self._model("listxattr", self.tree.status, node)
        labels = await self._cached_or_model("listxattr", self.tree.labels, node)
        return [STATUS_XATTR.encode()] * (status is not None) + [LABELS_XATTR] * (labels is not None)

    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext) -> None:
        """user.orthanc.labels on a study folder: its labels, comma-separated (--allow-labels)."""
        if name != LABELS_XATTR:
            raise FUSEError(errno.ENOTSUP)
        try:
            labels = value.decode("utf-8").split(",")
        except UnicodeDecodeError:
            raise FUSEError(errno.EINVAL) from None
        await self._model("setxattr", self.tree.set_labels, self._node(inode), labels)

    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        if name != LABELS_XATTR:
            raise FUSEError(errno.ENOTSUP)
        await self._model("removexattr", self.tree.set_labels, self._node(inode), [])

    # --- changing the tree ------------------------------------------------------------

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = await self._model("mkdir", self.tree.mkdir, self._node(parent_inode), self._name(name), mode)
        return self._attributes(node, self.inodes.remember(node))

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._model("unlink", self.tree.unlink, self._node(parent_inode), self._name(name))

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._model("rmdir", self.tree.rmdir, self._node(parent_inode), self._name(name))

    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: pyfuse3.RequestContext) -> None:
        if flags & RENAME_EXCHANGE:
            raise FUSEError(errno.EINVAL)
        old_parent, new_parent = self._node(parent_inode_old), self._node(parent_inode_new)
        old, new = await self._model("rename", self.tree.rename, old_parent, self._name(name_old), new_parent,
                                     self._name(name_new), not flags & RENAME_NOREPLACE)
        self.inodes.rename_subtree(UPLOADS, old, new)

    async def mknod(self, parent_inode, name, mode, rdev, ctx):  # noqa: ANN001 - pyfuse3 signature
        raise FUSEError(errno.EPERM)  # no devices, pipes or sockets in uploads/

    async def symlink(self, parent_inode, name, target, ctx):  # noqa: ANN001
        raise FUSEError(errno.EPERM)

    async def link(self, inode, new_parent_inode, new_name, ctx):  # noqa: ANN001
        raise FUSEError(errno.EPERM)


async def _arrival(content: Handle, offset: int, size: int) -> None:
    """Wait until the download has the bytes of this read (or has failed: the read then says so)."""
    arrived = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def wake() -> None:  # called in the download thread
        with contextlib.suppress(trio.RunFinishedError):  # unmounted meanwhile: nobody to wake
            token.run_sync_soon(arrived.set)

    if content.when_ready(offset, size, wake):
        await arrived.wait()
