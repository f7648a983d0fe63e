"""The FUSE frontend without a kernel: OrthancOperations' handlers called as the kernel calls them.

Each operation is one system call: a `lookup` per name of its path (counted, as the kernel counts
them), the checks the kernel makes itself without asking the file system (only directories are
walked through, opendir of a file is ENOTDIR, read(2) of a directory EISDIR, unlink/rmdir/rename/
mkdir look their names up first and compare types), then the handlers, and finally a `forget` of
everything it looked up, as when the kernel evicts its dentries.  Permission checks
(`default_permissions`, `-o ro`) are the kernel's too, and are left out: the handlers must refuse
on their own, and the suite checks that they do.

The handlers run on one trio loop in a thread of its own, as under pyfuse3.main(): small uploads
are POSTed from the loop (orthancfs/orthanc/loop.py), and its connections belong to one loop.

readdir: pyfuse3 has no test hook, and its readdir_reply() takes only a ReaddirToken made by its C
side.  operations.py calls it through the module, so the suite replaces `pyfuse3.readdir_reply` (for
the test only, see conftest.py) with `readdir_reply` below, which fills a DirBuffer -- a kernel
buffer with room for a few entries, so that listings are read in several calls resumed at the
offsets the handler gave -- and hands any other token to pyfuse3's own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pyfuse3
import trio

from orthancfs.fuse.operations import FuseSettings, OrthancOperations
from orthancfs.orthanc import LoopUploader
from orthancfs.tree import Tree
from orthancfs.tree.uploads import STATUS_XATTR

from .frontend import Error, Failed, read_range

MAX_READ = MAX_WRITE = 128 * 1024  # what the kernel asks for at most, by default
DIR_BUFFER_ENTRIES = 5
CONTEXT = SimpleNamespace(pid=os.getpid(), uid=os.getuid(), gid=os.getgid(), umask=0o022)
TIMES = SimpleNamespace(update_atime=True, update_mtime=True, update_size=False, update_mode=False,
                        update_uid=False, update_gid=False, update_ctime=False)  # what touch(1) sets
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC  # what cp and shells open a new file with

ERRNOS = {
    errno.ENOENT: Error.NOT_FOUND,
    errno.ENOTDIR: Error.NOT_A_DIRECTORY,
    errno.EISDIR: Error.IS_A_DIRECTORY,
    errno.EACCES: Error.FORBIDDEN,
    errno.EPERM: Error.NOT_PERMITTED,
    errno.EROFS: Error.READ_ONLY,
    errno.EINVAL: Error.REFUSED,
    errno.EIO: Error.UNAVAILABLE,
    errno.ENOSPC: Error.FULL,
    errno.EEXIST: Error.EXISTS,
    errno.EXDEV: Error.CROSS_DEVICE,
    errno.ECANCELED: Error.CANCELLED,
    errno.ENOTEMPTY: Error.NOT_EMPTY,
    errno.ENAMETOOLONG: Error.INVALID,
}

_pyfuse3_readdir_reply = pyfuse3.readdir_reply


class DirBuffer:
    """The kernel's buffer for one readdir request: room for `room` entries."""

    def __init__(self, room: int):
        self.room = room
        self.entries: list[tuple[bytes, pyfuse3.EntryAttributes, int]] = []

    def take(self, name: bytes, attr: pyfuse3.EntryAttributes, next_id: int) -> bool:
        if len(self.entries) >= self.room:
            return False
        self.entries.append((name, attr, next_id))
        return True


def readdir_reply(token: Any, name: bytes, attr: pyfuse3.EntryAttributes, next_id: int) -> bool:
    """pyfuse3.readdir_reply, which also fills a DirBuffer (see the module's docstring)."""
    if isinstance(token, DirBuffer):
        return token.take(name, attr, next_id)
    return _pyfuse3_readdir_reply(token, name, attr, next_id)


class Loop:
    """One trio loop in a thread; run() is one request handled in it."""

    def __init__(self) -> None:
        started = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main, started), name="fuse-loop", daemon=True)
        self._thread.start()
        started.wait()

    async def _main(self, started: threading.Event) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        started.set()
        await self._stop.wait()

    def run(self, handler: Callable[..., Any], *args: Any) -> Any:
        return trio.from_thread.run(handler, *args, trio_token=self._token)

    def close(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()


class Notices:
    """Stands in for the KernelNotifier: with no kernel there is no name to make it forget."""

    def __init__(self) -> None:
        self.forgotten: list[tuple[int, bytes]] = []

    def forget_entry(self, parent_inode: int, name: bytes) -> None:
        self.forgotten.append((parent_inode, name))

    def close(self) -> None:
        pass


def failed(exc: pyfuse3.FUSEError) -> Failed:
    return Failed(ERRNOS.get(exc.errno, Error.FAILED), os.strerror(exc.errno))


def is_dir(attr: pyfuse3.EntryAttributes) -> bool:
    return stat.S_ISDIR(attr.st_mode)


def kernel_refuses(kind: Error, why: str) -> Failed:
    return Failed(kind, f"{why} (the kernel answers this itself)")


class Syscall:
    """One system call: the lookups it made, forgotten when it ends."""

    def __init__(self, frontend: FuseFrontend):
        self.frontend = frontend
        self.counts: Counter[int] = Counter()

    def lookup(self, parent: int, name: str) -> pyfuse3.EntryAttributes:
        attr = self.frontend.call(self.frontend.ops.lookup, parent, os.fsencode(name), CONTEXT)
        self.taken(attr.st_ino)
        return attr

    def release(self) -> None:
        """The kernel lets go of every reference this call took."""
        if self.counts:
            self.frontend.loop.run(self.frontend.ops.forget, list(self.counts.items()))
            self.counts.clear()

    def taken(self, inode: int) -> None:
        """The kernel holds one more reference to `inode` (a lookup, a readdirplus entry, create, mkdir)."""
        self.counts[inode] += 1

    def walk(self, path: str) -> pyfuse3.EntryAttributes:
        attr = self.frontend.call(self.frontend.ops.getattr, pyfuse3.ROOT_INODE, CONTEXT)
        for name in filter(None, path.split("/")):
            if not is_dir(attr):
                raise kernel_refuses(Error.NOT_A_DIRECTORY, f"a path through a file: {path}")
            attr = self.lookup(attr.st_ino, name)
        return attr

    def parent(self, path: str) -> tuple[int, str]:
        """The inode of the folder `path` is in, and its last name."""
        folder, _, name = path.rpartition("/")
        attr = self.walk(folder)
        if not is_dir(attr):
            raise kernel_refuses(Error.NOT_A_DIRECTORY, f"{folder} is a file")
        return attr.st_ino, name

    def lookup_if_any(self, parent: int, name: str) -> pyfuse3.EntryAttributes | None:
        try:
            return self.lookup(parent, name)
        except Failed as failure:
            if failure.kind is not Error.NOT_FOUND:
                raise
            return None


class ReaddirCache:
    """The kernel's copy of folder listings (FOPEN_CACHE_DIR), as fs/fuse/readdir.c keeps it: an open
    without keep_cache drops the folder's copy; one with cache_readdir that reads to the end fills it;
    an open with keep_cache is served from a complete copy without a readdir.  The references the
    filling readdirplus handed over are held with the copy (the kernel keeps those dentries, so
    their inodes live on), and so is the folder's own (its pages live with its inode); all are let
    go with the copy."""

    def __init__(self, frontend: FuseFrontend):
        self.frontend = frontend
        self._copies: dict[int, tuple[list[str], Syscall]] = {}
        self.served = 0  # listings the kernel answered itself

    def read(self, call: Syscall, folder: int, opened: Any, entries: Callable[[Syscall], list[str]]) -> list[str]:
        caching = getattr(opened, "cache_readdir", False)
        copy = self._copies.get(folder)
        if not (caching and opened.keep_cache) and copy is not None and copy[0]:
            self.drop(folder)  # its pages go; a copy of an empty listing has none, and stays
        if caching and folder in self._copies:
            self.served += 1
            return list(self._copies[folder][0])
        holder = Syscall(self.frontend)
        names = entries(holder)
        if caching:
            if call.counts[folder] > 0:  # the lookup that found the folder now belongs to its copy
                call.counts[folder] -= 1
                holder.counts[folder] += 1
            self._copies[folder] = (names, holder)
        else:
            holder.release()
        return names

    def drop(self, folder: int) -> None:
        copy = self._copies.pop(folder, None)
        if copy is not None:
            copy[1].release()

    def clear(self) -> None:
        for folder in list(self._copies):
            self.drop(folder)


class FuseFrontend:
    """OrthancOperations over a tree, with mountpoint="" (no last-close check: see fuse/holders.py)."""

    name = "fuse"
    # EIO is said for every failure that is not the caller's, EINVAL for bad names as for refusals.
    coarser = {Error.FAILED: Error.UNAVAILABLE, Error.INVALID: Error.REFUSED}
    keeps_receipts = False
    touches = True

    def __init__(self, tree: Tree):
        self.ops = OrthancOperations(tree, FuseSettings(uid=os.getuid(), gid=os.getgid()), LoopUploader(tree.client))
        self.ops.notifier.close()
        self.ops.notifier = Notices()  # type: ignore[assignment]
        self.loop = Loop()
        self.listings = ReaddirCache(self)

    def shown(self, name: str) -> str:
        return name

    def call(self, handler: Callable[..., Any], *args: Any) -> Any:
        try:
            return self.loop.run(handler, *args)
        except pyfuse3.FUSEError as exc:
            raise failed(exc) from None

    @contextlib.contextmanager
    def syscall(self) -> Iterator[Syscall]:
        call = Syscall(self)
        try:
            yield call
        finally:
            call.release()

    def listdir(self, path: str) -> list[str]:
        with self.syscall() as call:
            attr = call.walk(path)
            if not is_dir(attr):
                raise kernel_refuses(Error.NOT_A_DIRECTORY, f"opendir of a file: {path}")
            opened = self.call(self.ops.opendir, attr.st_ino, CONTEXT)
            fh = opened.fh if isinstance(opened, pyfuse3.FileInfo) else opened
            try:
                return self.listings.read(call, attr.st_ino, opened, lambda holder: self._entries(holder, fh))
            finally:
                self.call(self.ops.releasedir, fh)

    def _entries(self, call: Syscall, fh: int) -> list[str]:
        names, offset = [], 0
        while True:
            buffer = DirBuffer(DIR_BUFFER_ENTRIES)
            self.call(self.ops.readdir, fh, offset, buffer)
            if not buffer.entries:
                return names
            for name, attr, next_id in buffer.entries:
                call.taken(attr.st_ino)  # readdirplus: every entry handed over is a lookup
                names.append(os.fsdecode(name))
                offset = next_id

    def stat(self, path: str) -> tuple[bool, int]:
        with self.syscall() as call:
            attr = call.walk(path)
        return is_dir(attr), attr.st_size

    def read(self, path: str, offset: int = 0, size: int | None = None) -> bytes:
        with self.syscall() as call:
            attr = call.walk(path)
            if is_dir(attr):
                raise kernel_refuses(Error.IS_A_DIRECTORY, f"read(2) of a directory: {path}")
            fh = self.call(self.ops.open, attr.st_ino, os.O_RDONLY, CONTEXT).fh
            try:
                return read_range(lambda at, count: self.call(self.ops.read, fh, at, count), offset, size, MAX_READ)
            finally:
                self.call(self.ops.release, fh)

    def write_file(self, path: str, data: bytes) -> Error | None:
        try:
            with self.syscall() as call:
                fh = self._open_for_writing(call, *call.parent(path))
                self._write_and_close(fh, data)
        except Failed as failure:
            return failure.kind
        return None

    def _open_for_writing(self, call: Syscall, parent: int, name: str) -> int:
        """open(2) with O_WRONLY|O_CREAT|O_TRUNC: the kernel looks the name up, then opens or creates."""
        attr = call.lookup_if_any(parent, name)
        if attr is None:
            info, attr = self.call(self.ops.create, parent, os.fsencode(name), 0o644, WRITE_FLAGS, CONTEXT)
            call.taken(attr.st_ino)
            return info.fh
        if is_dir(attr):
            raise kernel_refuses(Error.IS_A_DIRECTORY, f"open(2) of a directory for writing: {name}")
        return self.call(self.ops.open, attr.st_ino, os.O_WRONLY | os.O_TRUNC, CONTEXT).fh

    def _write_and_close(self, fh: int, data: bytes) -> None:
        """The writes, then close(2) (flush, then release), also after a failed write, as cp does."""
        failure = None
        try:
            for offset in range(0, len(data), MAX_WRITE):
                self.call(self.ops.write, fh, offset, data[offset : offset + MAX_WRITE])
        except Failed as exc:
            failure = exc
        try:
            self.call(self.ops.flush, fh)
        except Failed as exc:
            failure = failure or exc
        finally:
            self.call(self.ops.release, fh)  # its answer never reaches the writer
        if failure is not None:
            raise failure

    def remove(self, path: str) -> None:
        with self.syscall() as call:
            parent, name = call.parent(path)
            if is_dir(call.lookup(parent, name)):
                raise kernel_refuses(Error.IS_A_DIRECTORY, f"unlink(2) of a directory: {path}")
            self.call(self.ops.unlink, parent, os.fsencode(name), CONTEXT)

    def rmdir(self, path: str) -> None:
        with self.syscall() as call:
            parent, name = call.parent(path)
            if not is_dir(call.lookup(parent, name)):
                raise kernel_refuses(Error.NOT_A_DIRECTORY, f"rmdir(2) of a file: {path}")
            self.call(self.ops.rmdir, parent, os.fsencode(name), CONTEXT)

    def mkdir(self, path: str) -> None:
        with self.syscall() as call:
            parent, name = call.parent(path)
            if call.lookup_if_any(parent, name) is not None:
                raise kernel_refuses(Error.EXISTS, f"mkdir(2) of a name that exists: {path}")
            call.taken(self.call(self.ops.mkdir, parent, os.fsencode(name), 0o755, CONTEXT).st_ino)

    def rename(self, old: str, new: str) -> None:
        with self.syscall() as call:
            old_parent, old_name = call.parent(old)
            new_parent, new_name = call.parent(new)
            source = call.lookup(old_parent, old_name)
            target = call.lookup_if_any(new_parent, new_name)
            if target is not None and is_dir(source) != is_dir(target):
                kind = Error.IS_A_DIRECTORY if is_dir(target) else Error.NOT_A_DIRECTORY
                raise kernel_refuses(kind, f"rename(2) of {old} onto {new}, of another type")
            self.call(self.ops.rename, old_parent, os.fsencode(old_name), new_parent, os.fsencode(new_name), 0,
                      CONTEXT)

    def touch(self, path: str) -> None:
        """utimensat(2) with UTIME_NOW, without a descriptor (the kernel's SetattrFields cannot be made here:
        the handler reads only its flags)."""
        with self.syscall() as call:
            inode = call.walk(path).st_ino
            attr = pyfuse3.EntryAttributes()
            attr.st_atime_ns = attr.st_mtime_ns = time.time_ns()
            self.call(self.ops.setattr, inode, attr, TIMES, None, CONTEXT)

    def status(self, path: str) -> str | None:
        with self.syscall() as call:
            inode = call.walk(path).st_ino
            try:
                return self.loop.run(self.ops.getxattr, inode, STATUS_XATTR.encode(), CONTEXT).decode("utf-8")
            except pyfuse3.FUSEError as exc:
                if exc.errno == errno.ENODATA:
                    return None
                raise failed(exc) from None

    def close(self) -> None:
        """Stop the loop, then close the frontend, as the mount does; every inode the kernel looked up
        has been forgotten, so the table must hold the root alone."""
        self.listings.clear()
        self.loop.close()
        self.ops.close()
        assert len(self.ops.inodes) == 1, f"inodes left after every lookup was forgotten: {len(self.ops.inodes) - 1}"
