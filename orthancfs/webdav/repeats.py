"""Browsing again, answered from the request's bytes: a PROPFIND the fast path answered a moment ago.

File managers ask for the same folders again and again (every window, every refresh, every Back).
fast_path.py keeps those answers while the tree's stamp stays the same, but each request still
went through cheroot's parsing of the request, its WSGI environ, the access log and path checks
middleware, and cheroot's writing of the answer's head: two thirds of the CPU of a warm PROPFIND
(bench/RESULTS.md).  Here a worker looks at the request head as it lies in the connection's
buffer, and answers it itself when it is one it has seen the fast path answer:

- the same request target (bytes as sent), Depth and body as a request the fast path answered
  with an answer it keeps, and that answer is still kept for the tree's current stamp;
- a plain head: PROPFIND, HTTP/1.1, CRLF line ends and no other control bytes, at most one blank
  line before it, within cheroot's size limit, every header once, unfolded, and one of those that
  nothing between cheroot and the fast path reads differently (ALLOWED: no `If`, `Expect`,
  `Transfer-Encoding`, `Destination`, nor names cheroot would read as another's, `Content_Length`),
  `Connection` absent or keep-alive, a Content-Length of at most seven digits, the body all here;
- a target that is a path (no query: each distinct one would be remembered), of at most
  MAX_TARGET bytes;
- no users file (anonymous access, which server.py allows only where it is safe), or Basic
  credentials Logins verified a moment ago, exactly as the fast path asks.

The answer is the one the fast path would send, head and body, and the access log gets the same
line.  Anything else is left in the buffer untouched for cheroot and the whole stack.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

from wsgidav import util

from .access_log import write_line
from .auth import known_user
from .bodies import DEFAULT_LIMIT
from .logins import Logins

log = logging.getLogger(__name__)

REMEMBERED = 65536  # requests: a folder's key is small, and a walk of 100,000 patients asks for one folder
MAX_TARGET = 2048  # bytes: what 65,536 remembered targets may hold is bounded (a path of by-patients/ is ~300)
# What browsing clients send (gvfs, Finder, the Windows redirector, rclone, curl) that neither cheroot,
# the middlewares nor the fast path read, or that the lane checks as they do (Depth, Authorization,
# Content-Length, Connection).  Any other header sends the request the whole way.
ALLOWED = frozenset((b"host", b"depth", b"authorization", b"content-length", b"content-type", b"user-agent",
                     b"referer", b"accept", b"accept-encoding", b"accept-language", b"connection",
                     b"cache-control", b"pragma", b"translate"))
HEAD_END = b"\r\n\r\n"
CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # in a head line (CRLF ends lines; tab is allowed)


class Head(NamedTuple):
    method: bytes
    target: bytes
    version: bytes
    headers: dict[bytes, bytes]  # lower-case names
    length: int  # of the head, its blank line included


def parse_head(buffer: bytearray, start: int, limit: int) -> Head | None:
    """The request head at `start` in `buffer`, of at most `limit` bytes; None if it is not all
    here or not plain."""
    end = buffer.find(HEAD_END, start, start + limit)
    if end < 0:
        return None
    lines = bytes(buffer[start:end]).split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or any(CONTROL.search(line) for line in lines):
        return None  # a bare CR or LF, a NUL: cheroot refuses them, or reads them its own way
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        name = name.lower()
        if not colon or name not in ALLOWED or name in headers:
            return None  # folded, repeated (cheroot joins some) or another header: the whole way
        headers[name] = value.strip()
    return Head(parts[0], parts[1], parts[2], headers, end + len(HEAD_END) - start)


def request_key(target: bytes, depth: bytes, body: bytes) -> tuple[bytes, bytes, bytes]:
    return target, depth, hashlib.sha256(body).digest() if body else b""


class Repeats:
    """Requests the fast path answered (their bytes, to the key of the answer it keeps), and the
    lane that answers them again from the connection's buffer."""

    def __init__(self, answers: Any, logins: Logins, stamp: Callable[[], int | None], access: logging.Logger):
        self.answers = answers  # fast_path.KeptAnswers
        self.logins = logins
        self.stamp = stamp
        self.access = access
        self._keys: OrderedDict[tuple[bytes, bytes, bytes], Hashable] = OrderedDict()
        self._lock = threading.Lock()
        self._dated = (0, b"")  # the Date header's value, made once a second (a tenth of an answer here)
        self.answered = 0  # requests answered here (for tests and status)

    def _date(self) -> bytes:
        second, text = self._dated
        now = int(time.time())
        if now != second:
            text = util.get_rfc1123_time().encode()
            self._dated = (now, text)
        return text

    def remember(self, environ: dict, body: bytes, key: Hashable) -> None:
        """The fast path answered this request with the answer it keeps under `key`."""
        target = environ.get("REQUEST_URI", "").encode("latin-1")
        if not target.startswith(b"/") or b"?" in target or len(target) > MAX_TARGET:
            return
        known = request_key(target, environ["HTTP_DEPTH"].encode("latin-1"), body)
        with self._lock:
            self._keys[known] = key
            self._keys.move_to_end(known)
            if len(self._keys) > REMEMBERED:
                self._keys.popitem(last=False)

    def answer(self, conn: Any) -> bool | None:
        """Answer the request at the head of `conn`'s buffer if it is one seen before: True (the
        connection stays open), False (it failed: close it), None (not answered; untouched)."""
        started = time.monotonic()
        ahead = conn.rfile.raw.ahead
        if not ahead or conn.rfile.buffered():
            return None
        try:
            start = 2 if ahead.startswith(b"\r\n") else 0  # cheroot skips one blank line, no more
            head = parse_head(ahead, start, conn.server.max_request_header_size)
            found = self._chunks(head, ahead, start) if head else None
        except Exception:  # noqa: BLE001 - whatever it is, cheroot and the whole stack judge it
            log.debug("left to the whole stack", exc_info=True)
            return None
        if found is None:
            return None
        user, chunks, used = found
        del ahead[:used]
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)  # the fast path keeps them joined
        try:
            # The head cheroot writes for the fast path's answer, in its order.
            conn.wfile.write(b"HTTP/1.1 207 Multi-Status\r\nContent-Type: application/xml; charset=utf-8\r\n"
                             b"Date: %s\r\nContent-Length: %d\r\nServer: %s\r\n\r\n"
                             % (self._date(), len(body), conn.server.server_name.encode()))
            conn.wfile.write(body)
            conn.wfile.flush()
        except OSError as exc:
            log.debug("connection from %s dropped: %s", conn.remote_addr, exc)
            return False
        finally:
            self._log(conn, head, user, "207", len(body), started)  # as the whole stack logs it, sent or not
        return True

    def _chunks(self, head: Head, ahead: bytearray, start: int) -> tuple[str, list[bytes], int] | None:
        """(user, the kept answer, bytes the request takes in the buffer) if this is ours to answer."""
        headers = head.headers
        if head.method != b"PROPFIND" or head.version != b"HTTP/1.1" \
                or headers.get(b"connection", b"keep-alive").lower() != b"keep-alive":
            return None
        length = headers.get(b"content-length", b"0")
        if len(length) > 7 or not length.isdigit() or int(length) > DEFAULT_LIMIT:
            return None
        used = start + head.length + int(length)
        if len(ahead) < used:
            return None  # the body is still on its way: cheroot reads it
        user = known_user(self.logins, headers.get(b"authorization", b"").decode("latin-1"))  # as the fast path asks
        if user is None:
            return None
        body = bytes(ahead[start + head.length:used])
        known = request_key(head.target, headers.get(b"depth", b""), body)
        with self._lock:
            key = self._keys.get(known)
        chunks = None if key is None else self.answers.get(key, self.stamp())
        if chunks is None:
            return None
        with self._lock:
            if known in self._keys:  # (it may have gone meanwhile)
                self._keys.move_to_end(known)
            self.answered += 1  # before the answer leaves: whoever reads it may count next
        return user, chunks, used

    def _log(self, conn: Any, head: Head, user: str, status: str, sent: int, started: float) -> None:
        request = b" ".join((head.method, head.target, head.version)).decode("latin-1")
        headers = head.headers
        write_line(self.access, conn.remote_addr or "-", user or "-", request, status, sent,
                   headers.get(b"referer", b"-").decode("latin-1"), headers.get(b"user-agent", b"-").decode("latin-1"),
                   time.monotonic() - started)
