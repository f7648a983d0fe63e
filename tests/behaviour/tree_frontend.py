"""The model itself, `orthancfs.tree.Tree`, driven as the frontends drive it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from orthancfs import errors
from orthancfs.tree import Node, Tree

from .frontend import Error, Failed, read_range

CHUNK = 1 << 20

ERRORS: dict[type[errors.OrthancFSError], Error] = {
    errors.NotFound: Error.NOT_FOUND,
    errors.NotADirectory: Error.NOT_A_DIRECTORY,
    errors.IsADirectory: Error.IS_A_DIRECTORY,
    errors.Forbidden: Error.FORBIDDEN,
    errors.AccessDenied: Error.FORBIDDEN,
    errors.NotPermitted: Error.NOT_PERMITTED,
    errors.ReadOnly: Error.READ_ONLY,
    errors.StorageFull: Error.FULL,
    errors.UploadConflict: Error.EXISTS,
    errors.UploadRejected: Error.REFUSED,
    errors.LocalDiskFull: Error.FULL,
    errors.OrthancUnavailable: Error.UNAVAILABLE,
    errors.Cancelled: Error.CANCELLED,
    errors.InvalidName: Error.INVALID,
    errors.NameTooLong: Error.INVALID,
    errors.AlreadyExists: Error.EXISTS,
    errors.NotEmpty: Error.NOT_EMPTY,
    errors.CrossDevice: Error.CROSS_DEVICE,
}


def kind_of(exc: errors.OrthancFSError) -> Error:
    """The most specific word for a model error (StorageFull is an UploadRejected, but FULL)."""
    return next((ERRORS[cls] for cls in type(exc).__mro__ if cls in ERRORS), Error.FAILED)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    try:
        yield
    except errors.OrthancFSError as exc:
        raise Failed(kind_of(exc), exc) from exc


class TreeFrontend:
    """Tree.resolve/children/open/create/unlink/rmdir/rename/mkdir/status, as a frontend calls them
    (a writer's close is closing().send(), as WebDAV's end of a PUT)."""

    name = "tree"
    coarser: dict[Error, Error] = {}
    keeps_receipts = False
    touches = True

    def __init__(self, tree: Tree):
        self.tree = tree

    def shown(self, name: str) -> str:
        return name

    def _parent(self, path: str) -> tuple[Node, str]:
        parent, _, name = path.rpartition("/")
        return self.tree.resolve(parent), name

    def listdir(self, path: str) -> list[str]:
        with translated():
            return list(self.tree.children(self.tree.resolve(path)))

    def stat(self, path: str) -> tuple[bool, int]:
        with translated():
            node = self.tree.resolve(path)
        return node.is_dir, node.size

    def read(self, path: str, offset: int = 0, size: int | None = None) -> bytes:
        with translated():
            handle = self.tree.open(self.tree.resolve(path))
            try:
                return read_range(handle.read, offset, size, CHUNK)
            finally:
                handle.close()

    def write_file(self, path: str, data: bytes) -> Error | None:
        try:
            self._write(path, data)
        except errors.OrthancFSError as exc:
            return kind_of(exc)
        return None

    def _write(self, path: str, data: bytes) -> None:
        _, handle = self.tree.create(*self._parent(path))
        try:
            for offset in range(0, len(data), CHUNK):
                handle.write(offset, data[offset : offset + CHUNK])
            closing = handle.closing()
            if closing is not None:
                closing.send()
        finally:
            handle.close()

    def remove(self, path: str) -> None:
        with translated():
            self.tree.unlink(*self._parent(path))

    def rmdir(self, path: str) -> None:
        with translated():
            self.tree.rmdir(*self._parent(path))

    def rename(self, old: str, new: str) -> None:
        with translated():
            self.tree.rename(*self._parent(old), *self._parent(new))

    def mkdir(self, path: str) -> None:
        with translated():
            self.tree.mkdir(*self._parent(path))

    def touch(self, path: str) -> None:
        now = time.time_ns()
        with translated():
            self.tree.set_attributes(self.tree.resolve(path), atime_ns=now, mtime_ns=now)

    def status(self, path: str) -> str | None:
        with translated():
            return self.tree.status(self.tree.resolve(path))

    def close(self) -> None:
        pass  # the tree is closed by whoever built it
