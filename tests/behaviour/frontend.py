"""What every frontend adapter offers the suite: a few file operations and one error vocabulary.

Each adapter turns what its frontend says (the model's exceptions, FUSE errnos, HTTP statuses)
into an `Error`, so an expectation is written once.  Where a frontend cannot say something as
finely as the others (WebDAV has one 403 for "forbidden", "read-only" and "not permitted"), the
adapter declares it in `coarser`, and `says()` accepts that coarser word from it alone.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol


class Error(enum.Enum):
    NOT_FOUND = "not found"
    NOT_A_DIRECTORY = "not a directory"
    IS_A_DIRECTORY = "is a directory"
    FORBIDDEN = "forbidden by the server's settings"
    NOT_PERMITTED = "makes no sense here"
    READ_ONLY = "read-only"
    REFUSED = "refused by Orthanc"
    UNAVAILABLE = "Orthanc unavailable"
    FULL = "no room"
    EXISTS = "exists already"
    CROSS_DEVICE = "between uploads/ and the views"
    CANCELLED = "cancelled"
    NOT_EMPTY = "not empty"
    INVALID = "invalid name"
    CONFLICT = "conflict"  # only as WebDAV's coarser word (409)
    FAILED = "failed"  # anything else: a bug, unless a test asks for it


class Failed(Exception):  # noqa: N818 - what an adapter raises: the frontend said no
    """An operation failed; `kind` is what its frontend said, in the common vocabulary."""

    def __init__(self, kind: Error, detail: object = ""):
        super().__init__(f"{kind.name}: {detail}")
        self.kind = kind


class Frontend(Protocol):
    """One frontend, driven as its clients drive it.  Paths are relative to the root, "/"-separated,
    in the names this frontend shows (see shown())."""

    name: str
    coarser: Mapping[Error, Error]  # kinds this frontend can only say as a coarser one
    keeps_receipts: bool  # a stored upload stays readable at its path for a while (WebDAV's clients read back)
    touches: bool  # has touch (WebDAV has no way to set a time: its clients PUT a file again)

    def shown(self, name: str) -> str:
        """How this frontend shows a name of the views (WebDAV maps Windows-unsafe characters)."""

    def listdir(self, path: str) -> list[str]: ...

    def stat(self, path: str) -> tuple[bool, int]:
        """(is a directory, size)."""

    def read(self, path: str, offset: int = 0, size: int | None = None) -> bytes: ...

    def write_file(self, path: str, data: bytes) -> Error | None:
        """Create (or replace) and write a file, then close it: None if every step succeeded, else
        what the first failing step said (for uploads, the close says how sending went)."""

    def remove(self, path: str) -> None: ...

    def rmdir(self, path: str) -> None: ...

    def rename(self, old: str, new: str) -> None: ...

    def mkdir(self, path: str) -> None: ...

    def touch(self, path: str) -> None:
        """Set its times to now (in uploads/, a kept file is sent again)."""

    def status(self, path: str) -> str | None:
        """Why an upload is still in uploads/ (FUSE: its xattr; WebDAV: its status property)."""

    def close(self) -> None: ...


def says(frontend: Frontend, got: Error | None, expected: Error | None) -> bool:
    """Whether `got` is `expected`, or the coarser word `frontend` has for it."""
    return got == expected or (expected is not None and frontend.coarser.get(expected) == got)


@contextlib.contextmanager
def fails(frontend: Frontend, expected: Error) -> Iterator[None]:
    """Asserts that the block fails with `expected` (as `frontend` can say it)."""
    try:
        yield
    except Failed as failure:
        assert says(frontend, failure.kind, expected), f"{frontend.name}: {failure} instead of {expected.name}"
    else:
        raise AssertionError(f"{frontend.name}: succeeded instead of failing with {expected.name}")


def read_range(read: Callable[[int, int], bytes], offset: int, size: int | None, chunk: int) -> bytes:
    """`size` bytes from `offset` (None: to the end), asked for `chunk` at a time as a client
    reads, until a read comes back empty."""
    parts, end = [], None if size is None else offset + size
    while end is None or offset < end:
        data = read(offset, chunk if end is None else min(chunk, end - offset))
        if not data:
            break
        parts.append(data)
        offset += len(data)
    return b"".join(parts)
