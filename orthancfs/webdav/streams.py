"""Model content as the seekable file objects wsgidav streams GET answers (and ranges) from."""

from __future__ import annotations

import io
from typing import Any, Protocol

from ..errors import NotFound


class Content(Protocol):
    """What Tree.open() hands out: an instance's spool, a document, an upload."""

    def read(self, offset: int, size: int) -> bytes: ...

    def close(self) -> None: ...


class ContentFile(io.RawIOBase):
    """A seekable file object over model content, so wsgidav can serve ranges and stream."""

    def __init__(self, content: Content, size: int):
        self._content, self._size, self._position = content, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int = -1) -> bytes:
        """The bytes themselves: RawIOBase's read() would copy them twice more (wsgidav reads 1 MiB blocks)."""
        if size is None or size < 0:
            return super().read(size)
        return self._next(size)

    def readinto(self, buffer: Any) -> int:
        data = self._next(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _next(self, size: int) -> bytes:
        try:
            data = self._content.read(self._position, size)
        except NotFound:
            data = b""
        self._position += len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            self._content.close()
        super().close()
