"""cheroot's connections, made to withstand slow and many clients.

cheroot hands a connection to a worker thread as soon as its first byte arrives; the
worker then waits for the rest of the request head, up to 10 s per byte: 20 clients
sending their headers slowly held all 16 workers, and everyone else waited.  Its TLS
handshake runs in the thread that accepts connections, so one silent client stalled
every new connection.  Here:

- the thread that accepts connections also reads what arrives (without waiting) until
  a request head is complete, and only then hands the connection to a worker; the TLS
  handshake is done the same way.  A connection whose head is not complete within the
  server's timeout of its arrival (or of its last answer) is closed.  Slow clients
  cost a file descriptor each, never a thread;
- a body must keep coming: each read waits at most the timeout, and after GRACE
  seconds the body must have averaged MIN_RATE bytes a second (Apache's
  mod_reqtimeout does the same);
- at most PER_ADDRESS connections per client address and MAX_CONNECTIONS in all;
  the next one gets a 503 and is closed;
- an answer given before a long body was read closes the connection instead of
  reading it (cheroot read the rest into memory, however long it said it was); the
  connection lingers in the accepting thread for LINGER seconds first, throwing away
  what still comes, so the client reads its answer instead of a reset;
- closing a connection drops what could not be sent, so nothing is written later
  to a closed socket (Python 3.13 reports that write when the writer is collected).
"""

from __future__ import annotations

import logging
import select
import selectors
import socket
import ssl
import threading
import time
from collections import Counter
from contextlib import suppress
from typing import Any

from cheroot import wsgi
from cheroot.connections import ConnectionManager, prevent_socket_inheritance
from cheroot.makefile import StreamReader, StreamWriter
from cheroot.server import HTTPConnection, HTTPRequest

from .repeats import Repeats

log = logging.getLogger(__name__)

HEAD_LIMIT = 64 * 1024  # bytes of request line and headers
PER_ADDRESS = 64  # a desktop client opens a few; NAT and proxies put many users behind one address
MAX_CONNECTIONS = 512  # below the usual 1024 open files
BACKLOG = 511  # what Apache and nginx ask listen() for
GRACE, MIN_RATE = 20.0, 500.0  # seconds; bytes a second
DRAIN_LIMIT = 64 * 1024  # an unread body up to this long is read so the connection can be kept
LINGER = 2.0  # seconds
# How long a worker waits for the next request on a connection it has just answered, before handing
# it back to the accepting thread (a browsing client asks again within a millisecond).
KEEP_WARM = 0.005  # seconds
DIRECT = 64 * 1024  # bytes of a write sent without copying it into the buffer
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 10\r\nConnection: close\r\n\r\n"


class AheadIO(socket.SocketIO):
    """A socket's reads: first what was read ahead for the worker, then the socket, within a deadline."""

    def __init__(self, sock: socket.socket, timeout: float):
        super().__init__(sock, "rb")
        self.ahead = bytearray()
        self.timeout = timeout
        self._started: float | None = None  # a request is being read: reads have a deadline
        self._received = 0
        self.timed_out = False  # a read timed out: the socket cannot be read any more
        self._start: int | None = None  # where the head began in `ahead` (blank lines skipped)
        self._scan = 0  # where to look for the head's end next

    def add(self, data: bytes) -> bool:
        """Bytes read ahead; whether they hold a whole request head now (or more than a head may be)."""
        self.ahead += data
        if self._start is None:
            stripped = self.ahead.lstrip(b"\r\n")
            if not stripped:
                return len(self.ahead) > 4  # nothing but blank lines: cheroot refuses that at once
            self._start = self._scan = len(self.ahead) - len(stripped)
        if self.ahead.find(b"\n\n", self._scan) >= 0 or self.ahead.find(b"\n\r\n", self._scan) >= 0:
            return True
        self._scan = max(self._start, len(self.ahead) - 2)
        return len(self.ahead) >= HEAD_LIMIT

    def begin_request(self) -> None:
        self._started, self._received = time.monotonic(), 0
        self._start, self._scan = None, 0

    def end_request(self) -> None:
        self._started = None

    def readinto(self, buffer: Any) -> int | None:
        if self.ahead:
            count = min(len(buffer), len(self.ahead))
            buffer[:count] = self.ahead[:count]
            del self.ahead[:count]
            return count
        left = self._left()
        try:
            if left <= 0:
                raise TimeoutError("timed out")  # cheroot answers 408 in the middle of a request
            count = self._read(buffer, left)
        except TimeoutError:
            self.timed_out = True
            raise
        self._received += count or 0
        return count

    def _read(self, buffer: Any, left: float) -> int | None:
        if left >= self.timeout:
            return super().readinto(buffer)
        self._sock.settimeout(left)
        try:
            return super().readinto(buffer)
        finally:
            self._sock.settimeout(self.timeout)

    def _left(self) -> float:
        if self._started is None:
            return self.timeout
        return self._started + GRACE + self._received / MIN_RATE - time.monotonic()


class AheadReader(StreamReader):
    """cheroot's socket reader over AheadIO."""

    def __init__(self, sock: socket.socket, mode: str = "rb", bufsize: int = 8192, timeout: float = 10.0):
        super(StreamReader, self).__init__(AheadIO(sock, timeout), bufsize)  # not StreamReader's own raw
        self.bytes_read = 0

    def has_data(self) -> bool:
        return super().has_data() or bool(self.raw.ahead)

    def buffered(self) -> bool:
        """Whether the reader's own buffer holds bytes (what was read ahead is not there)."""
        return StreamReader.has_data(self)

    def readline(self, size: int | None = -1) -> bytes:
        """A line of the head, cut straight from what was read ahead (cheroot reads the head line by
        line, 256 bytes at a time, through _pyio's BufferedReader: a fifth of a small request)."""
        ahead = self.raw.ahead
        if not ahead or StreamReader.has_data(self):
            return super().readline(size)
        limit = len(ahead) if size is None or size < 0 else min(size, len(ahead))
        end = ahead.find(b"\n", 0, limit) + 1
        if not end:
            if limit == len(ahead):
                return super().readline(size)  # the line goes on beyond what has arrived
            end = limit
        line = bytes(ahead[:end])
        del ahead[:end]
        return line


class DroppingWriter(StreamWriter):
    """cheroot's socket writer, which can let go of what it could not send; holds an answer's head
    until its body (or its end) comes (cheroot sent them in two segments, and the client woke up
    for each); sends large pieces as they are.  cheroot copied each piece into its buffer, then
    what was left of the buffer once more for every send (a 1 MiB block of a GET goes out in
    several): 138M instructions for a GET of 64 MiB."""

    held = False

    def write(self, data: bytes) -> int:
        if self.held:
            self.held = False
            with self._write_lock:
                self._write_buf.extend(data)
        elif len(data) >= DIRECT:
            with self._write_lock:
                self._send_directly(data)
        else:
            return super().write(data)
        self.bytes_written += len(data)
        return len(data)

    def _send_directly(self, data: bytes) -> None:
        """With the lock held: what is buffered, then `data`, each send within the socket's timeout."""
        self._checkClosed()
        if self._write_buf:
            self._flush_unlocked()
        view = memoryview(data)
        while view:
            view = view[self.raw.write(view) or 0:]  # None: would block (no timeout): try again

    def hold(self) -> None:
        """Keep the next write until another one comes, or release()."""
        self.held = True

    def release(self) -> None:
        self.held = False
        with self._write_lock:
            if self._write_buf:
                self._flush_unlocked()

    def drop(self) -> None:
        with self._write_lock:
            del self._write_buf[:]
        with suppress(OSError):
            self.close()


class GuardedRequest(HTTPRequest):
    def send_headers(self) -> None:
        if self.conn.rfile.raw.timed_out or (b"connection", b"close") in (
                (k.lower(), v.lower()) for k, v in self.outheaders):
            self.close_connection = True  # the body was not (or cannot be) read: nothing to drain
        unread = getattr(self.rfile, "remaining", 0)
        if unread > DRAIN_LIMIT or (unread and self.status[:3] == b"413") or (
                self.chunked_read and self.status[:1] in (b"4", b"5")):
            self.close_connection = True  # rather than read (and hold) a long body nobody wants
            self.conn.unread_body = True
        self.conn.wfile.hold()  # sent with the first piece of the body
        super().send_headers()

    def respond(self) -> None:
        try:
            super().respond()
        finally:
            self.conn.wfile.release()  # an answer without a body (or that failed) ends here


class GuardedConnection(HTTPConnection):
    RequestHandlerClass = GuardedRequest

    def __init__(self, server: GuardedServer, sock: socket.socket, address: tuple):
        super().__init__(server, sock, makefile=self._files)
        self.remote_addr, self.remote_port = address[0], address[1]
        self.ssl_env: dict = {}
        self.handshaken = not isinstance(sock, ssl.SSLSocket)
        self.last_used = time.time()
        self.unread_body = False  # the answer was sent before the body was read
        self.lingering = False
        self._closed = False

    def _files(self, sock: socket.socket, mode: str, bufsize: int) -> Any:
        if "r" in mode:
            return AheadReader(sock, mode, bufsize, self.server.timeout)
        return DroppingWriter(sock, mode, bufsize)

    def read_ahead(self) -> bool | None:
        """What has arrived, without waiting: True once a worker can answer, False to wait, None: over."""
        if self.lingering:
            return self._discard()
        if StreamReader.has_data(self.rfile) or self.rfile.raw.add(b""):
            return True  # here already (pipelined, or read ahead before the last answer)
        self.socket.settimeout(0)
        try:
            if not self.handshaken:
                self.socket.do_handshake()
                self.handshaken = True
                self.ssl_env = self.server.ssl_adapter.get_environ(self.socket)
            while True:
                data = self.socket.recv(65536)
                if not data:
                    return None
                if self.rfile.raw.add(data):
                    return True
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except OSError as exc:  # reset, or a failed handshake (plain HTTP to the https port, ...)
            log.debug("connection from %s dropped: %s", self.remote_addr, exc)
            return None
        finally:
            with suppress(OSError):
                self.socket.settimeout(self.server.timeout)

    def next_request_within(self, seconds: float) -> bool:
        """Whether a whole request head is here, or arrives within `seconds`."""
        if self.lingering:
            return False
        ready = self.read_ahead()
        if ready is not False:
            return bool(ready)  # None: the client has gone (the accepting thread will see it)
        poller = select.poll()  # not select(): descriptors past 1023 are common in a busy server
        try:
            poller.register(self.socket.fileno(), select.POLLIN)
            readable = poller.poll(seconds * 1000)
        except (OSError, ValueError):  # closed meanwhile: the accepting thread will see it
            return False
        return bool(readable) and self.read_ahead() is True

    def _discard(self) -> bool | None:
        """Throw away what a lingering connection is still sent; None at its end."""
        self.socket.settimeout(0)
        try:
            for _ in range(16):  # then let others have the thread
                if not self.socket.recv(65536):
                    return None
            return False
        except (BlockingIOError, ssl.SSLWantReadError):
            return False
        except OSError:
            return None

    def _linger(self) -> bool:
        """Instead of closing: stop sending, and let the accepting thread drain what still comes."""
        try:
            self.socket.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        self.lingering = True
        self.last_used = time.time() - self.server.timeout + LINGER  # expired after LINGER seconds
        self.server.linger(self)
        return True

    def communicate(self) -> bool:
        self.rfile.raw.begin_request()  # (also: the next head is looked for from the start of what is here)
        try:
            repeated = self.server.repeats.answer(self) if self.server.repeats is not None else None
            if repeated is not None:
                return repeated  # a PROPFIND answered a moment ago, answered again from its bytes (repeats.py)
            return super().communicate()
        finally:
            self.rfile.raw.end_request()

    def close(self) -> None:
        if self._closed:
            return
        if self.unread_body and not self.lingering and self.server.ready and self._linger():
            return
        self._closed = True
        self.wfile.drop()
        try:
            super().close()
        finally:
            self.server.release(self.remote_addr)


class GuardedConnections(ConnectionManager):
    """Accepts (within the limits) and keeps connections until their request head is complete."""

    def wait(self, conn: GuardedConnection) -> None:
        self._selector.register(conn.socket.fileno(), selectors.EVENT_READ, data=conn)

    def _from_server_socket(self, server_socket: socket.socket) -> GuardedConnection | None:
        try:
            sock, address = server_socket.accept()
        except OSError:  # timeout, EINTR, EAGAIN, or closed while stopping: nothing to accept
            return None
        if not self.server.admit(address[0]):
            _refuse(sock, plain=self.server.ssl_adapter is None)
            return None
        try:
            prevent_socket_inheritance(sock)
            sock.settimeout(self.server.timeout)
            if self.server.ssl_adapter is not None:
                sock = self.server.ssl_adapter.context.wrap_socket(sock, server_side=True,
                                                                  do_handshake_on_connect=False)
            return GuardedConnection(self.server, sock, address)
        except BaseException:
            self.server.release(address[0])
            sock.close()
            raise


def _refuse(sock: socket.socket, plain: bool) -> None:
    with suppress(OSError):
        sock.setblocking(False)
        if plain:
            sock.send(BUSY)
    sock.close()


class GuardedServer(wsgi.Server):
    """cheroot's WSGI server with the connection handling above; cheroot's messages go to our log."""

    def __init__(self, bind_addr: tuple[str, int], app: Any, threads: int = 16, timeout: float = 10.0,
                 per_address: int = PER_ADDRESS, max_connections: int = MAX_CONNECTIONS):
        super().__init__(bind_addr, app, numthreads=threads, server_name="orthancfs", request_queue_size=BACKLOG,
                         timeout=timeout)
        self.max_request_header_size = HEAD_LIMIT
        self.keep_alive_conn_limit = max_connections  # cheroot counts every waiting connection here
        self.per_address, self.max_connections = per_address, max_connections
        self._open: Counter[str] = Counter()
        self._open_lock = threading.Lock()
        self._refused, self._refusals_logged = 0, 0.0
        self.repeats: Repeats | None = None  # set by who serves the views (server.py)

    def prepare(self) -> None:
        super().prepare()
        plain, self._connections = self._connections, GuardedConnections(self)
        plain.close()

    def put_conn(self, conn: GuardedConnection) -> None:
        """A connection answered and kept open: its worker answers the next request itself when it
        comes within KEEP_WARM and no other connection waits for a worker; else back to the
        accepting thread.  The trip through that thread and the queue cost a browsing client
        two thread hand-offs per request (bench/RESULTS.md)."""
        try:
            while self.ready and self.requests.qsize == 0 and self.requests.idle > 0 and \
                    conn.next_request_within(KEEP_WARM):
                if not self._answer_here(conn):
                    return
        except Exception:  # anything escaping here would end the worker thread, or the server
            log.exception("keeping the connection from %s", conn.remote_addr)
            conn.close()
            return
        super().put_conn(conn)

    def _answer_here(self, conn: GuardedConnection) -> bool:
        """One more request of `conn` in this worker, as cheroot's worker answers; whether it stays open."""
        try:
            if conn.communicate():
                return True
        except ConnectionError as exc:
            log.debug("connection from %s dropped: %s", conn.remote_addr, exc)
        except Exception:
            log.exception("unhandled error answering %s", conn.remote_addr)
        conn.close()
        return False

    def linger(self, conn: GuardedConnection) -> None:
        self._connections.wait(conn)

    def process_conn(self, conn: GuardedConnection) -> None:
        """A connection has something to read: to a worker once its head is complete."""
        ready = conn.read_ahead()
        if ready:
            super().process_conn(conn)
        elif ready is None:
            conn.close()
        elif self.ready:
            self._connections.wait(conn)
        else:
            conn.close()

    def admit(self, address: str) -> bool:
        """Count a new connection from `address`, if the limits leave room for it."""
        with self._open_lock:
            if self._open[address] < self.per_address and self._open.total() < self.max_connections:
                self._open[address] += 1
                return True
            self._refused += 1
            if time.monotonic() - self._refusals_logged < 10:
                return False
            refused, self._refused, self._refusals_logged = self._refused, 0, time.monotonic()
        log.warning("%d connections refused (limits: %d per address, %d in all); the last from %s", refused,
                    self.per_address, self.max_connections, address)
        return False

    def release(self, address: str) -> None:
        with self._open_lock:
            self._open[address] -= 1
            if self._open[address] <= 0:
                del self._open[address]

    def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        """cheroot's own messages; its notes on clients that went away are for debugging only."""
        log.log(level if level >= logging.WARNING else logging.DEBUG, "%s", msg, exc_info=traceback)
