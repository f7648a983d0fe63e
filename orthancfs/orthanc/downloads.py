"""An instance's bytes, from Orthanc's answer into a file, as they arrive.

A plain-HTTP body of known length moves from the socket into the file inside the kernel
(splice.py): a download thread copying each chunk through Python held the GIL for every
chunk, while the FUSE loop, which needs it too, served the same bytes (measured: a 64 MiB
download under a `cat` took 74-106 ms copied, 64-85 ms spliced).  Others are copied in
chunks that double in size (the first bytes are there at once; fewer wake-ups stream faster).
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable
from dataclasses import dataclass

import urllib3

from .splice import FileWriteError, splice_into, takes_splice, write_at

FIRST_CHUNK_SIZE = 64 * 1024
CHUNK_SIZE = 1024 * 1024
SPLICE_FROM = 1 << 20  # smaller files copy faster than a pipe is set up (measured on a study of small files)


def fill(response: urllib3.BaseHTTPResponse, fd: int, arrived: Callable[[int], None]) -> tuple[int, bool]:
    """Write the body of `response` into `fd` from offset 0, calling `arrived(total)` as bytes land;
    (the total, whether it was spliced).  Raises FileWriteError for the local disk's failures, and
    the network's own errors (urllib3's, OSError) for the rest."""
    body = _spliceable(response, fd)
    if body is None:
        return _copied(response, fd, arrived), False
    write_at(fd, body.head, 0)
    arrived(len(body.head))
    splice_into(body.sock, fd, len(body.head), body.length, FIRST_CHUNK_SIZE, arrived)
    return body.length, True


def _copied(response: urllib3.BaseHTTPResponse, fd: int, arrived: Callable[[int], None]) -> int:
    size, total = FIRST_CHUNK_SIZE, 0
    # Undecoded reads skip urllib3's decoding buffer (a copy of every byte): a fifth less CPU per
    # byte; only a server or proxy that compresses anyway needs decoding.
    decode = response.headers.get("Content-Encoding", "identity").lower() != "identity"
    while chunk := response.read(size, decode_content=decode):
        write_at(fd, chunk, total)
        total += len(chunk)
        arrived(total)
        size = min(size * 2, CHUNK_SIZE)
    return total


@dataclass(frozen=True)
class _SpliceableBody:
    head: bytes  # what http.client had read past the headers already
    sock: socket.socket  # whose next bytes are the rest of the body
    length: int  # of the whole body


def _spliceable(response: urllib3.BaseHTTPResponse, fd: int) -> _SpliceableBody | None:
    """The body of `response` as a socket to splice from, if it can be: plain TCP (TLS bytes
    must be decrypted here), a Content-Length of at least SPLICE_FROM, no content or transfer
    coding, a file that takes spliced bytes.  Reaches into urllib3 for its http.client response
    and connection; if they are not what we expect (another urllib3), the body is copied."""
    headers = response.headers
    if headers.get("Content-Encoding", "identity").lower() != "identity" or "Transfer-Encoding" in headers:
        return None
    http_response = getattr(response, "_fp", None)
    sock = getattr(getattr(response, "connection", None), "sock", None)
    length = headers.get("Content-Length", "")
    if not (isinstance(http_response, http.client.HTTPResponse) and type(sock) is socket.socket
            and length.isdigit() and int(length) >= SPLICE_FROM and takes_splice(fd)):
        return None
    # http.client reads the socket through a buffer, which may hold the first bytes of the body:
    # peek() fills it if it is empty, read1() then takes exactly what it holds, and the socket's
    # next byte is the body's next byte.
    http_response.fp.peek(1)
    head = http_response.read1(int(length))
    return _SpliceableBody(head, sock, int(length))


__all__ = ["CHUNK_SIZE", "FIRST_CHUNK_SIZE", "SPLICE_FROM", "FileWriteError", "fill"]
