"""Browsing again, answered from the request's bytes: a PROPFIND the fast path answered a moment ago.

File managers ask for the same folders again and again (every window, every refresh, every Back).
fast_path.py keeps those answers while the tree's stamp stays the same, but each request still
went through cheroot's parsing of the request, its WSGI environ, the access log and path checks
middleware, and cheroot's writing of the answer's head: two thirds of the CPU of a warm PROPFIND
(bench/RESULTS.md).  Here a worker looks at the request head as it lies in the connection's
buffer, and answers it itself when it is one it has seen the fast path answer:

- the same request target (bytes as sent), Depth and body as a request the fast path answered
  with an answer it keeps, and that answer is still kept for the tree's current stamp;
- a plain head: PROPFIND, HTTP/1.1, CRLF line ends, every header once and unfolded, no `If`,
  `Expect`, `Transfer-Encoding` or `Connection: close`, and the whole body already here;
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
from .auth import basic_credentials
from .bodies import DEFAULT_LIMIT
from .logins import Logins

log = logging.getLogger(__name__)

REMEMBERED = 65536  # requests: a folder's key is small, and a walk of 100,000 patients asks for one folder
# Headers that send a request the whole way: conditions, bodies still to come, a connection to close.
REFUSED_HEADERS = (b"if", b"expect", b"transfer-encoding")
HEAD_END = b"\r\n\r\n"
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # a header name (RFC 9110)


class Head(NamedTuple):
    method: bytes
    target: bytes
    version: bytes
    headers: dict[bytes, bytes]  # lower-case names
    length: int  # of the head, its blank line included


def parse_head(buffer: bytearray, start: int) -> Head | None:
    """The request head at `start` in `buffer`; None if it is not all here or not plain."""
    end = buffer.find(HEAD_END, start)
    if end < 0:
        return None
    lines = bytes(buffer[start:end]).split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return None
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN.fullmatch(name):
            return None  # folded, nameless or oddly named: cheroot judges it
        name = name.lower()
        if name in headers:
            return None  # a repeated header: cheroot joins some, refuses others
        headers[name] = value.strip(b" \t")
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
        if not target.startswith(b"/"):
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
        start = len(ahead) - len(ahead.lstrip(b"\r\n"))  # blank lines before a request are allowed
        head = parse_head(ahead, start)
        found = self._chunks(head, ahead, start) if head else None
        if found is None:
            return None
        user, chunks, used = found
        del ahead[:used]
        body = b"".join(chunks)
        status = "-"
        self.answered += 1  # before the answer leaves: whoever reads it may count next
        try:
            # The head cheroot writes for the fast path's answer, in its order.
            conn.wfile.write(b"HTTP/1.1 207 Multi-Status\r\nContent-Type: application/xml; charset=utf-8\r\n"
                             b"Date: %s\r\nContent-Length: %d\r\nServer: %s\r\n\r\n%s"
                             % (self._date(), len(body), conn.server.server_name.encode(), body))
            conn.wfile.flush()
            status = "207"
        except OSError as exc:
            log.debug("connection from %s dropped: %s", conn.remote_addr, exc)
            return False
        finally:
            self._log(conn, head, user, status, len(body), started)
        return True

    def _chunks(self, head: Head, ahead: bytearray, start: int) -> tuple[str, list[bytes], int] | None:
        """(user, the kept answer, bytes the request takes in the buffer) if this is ours to answer."""
        headers = head.headers
        if head.method != b"PROPFIND" or head.version != b"HTTP/1.1" or any(h in headers for h in REFUSED_HEADERS) \
                or headers.get(b"connection", b"keep-alive").lower() != b"keep-alive":
            return None
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > DEFAULT_LIMIT:
            return None
        used = start + head.length + int(length)
        if len(ahead) < used:
            return None  # the body is still on its way: cheroot reads it
        user = self._user(headers)
        if user is None:
            return None
        body = bytes(ahead[start + head.length:used])
        with self._lock:
            key = self._keys.get(request_key(head.target, headers.get(b"depth", b""), body))
        chunks = None if key is None else self.answers.get(key, self.stamp())
        return None if chunks is None else (user, chunks, used)

    def _user(self, headers: dict[bytes, bytes]) -> str | None:
        """Who asks ("" for anonymous access) if their credentials are known good, as the fast path asks."""
        if not self.logins.users:
            return ""
        credentials = basic_credentials(headers.get(b"authorization", b"").decode("latin-1"))
        if credentials is None or not self.logins.verified(*credentials):
            return None
        return credentials[0]

    def _log(self, conn: Any, head: Head, user: str, status: str, sent: int, started: float) -> None:
        request = b" ".join((head.method, head.target, head.version)).decode("latin-1")
        headers = head.headers
        write_line(self.access, conn.remote_addr or "-", user or "-", request, status, sent,
                   headers.get(b"referer", b"-").decode("latin-1"), headers.get(b"user-agent", b"-").decode("latin-1"),
                   time.monotonic() - started)
