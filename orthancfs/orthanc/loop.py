"""Sending from a trio event loop: the FUSE frontend's `POST /instances`, without a thread per file.

Sending each upload from a worker thread cost a hand-off between the loop and the thread for
every file (futex wake-ups, GIL switches): with four writers orthancfs spent 1.35-1.6 ms of CPU
per file, from the loop about 1.0 ms (lab).  This is the client's POST, not a second client: the
same headers and credentials, TLS settings, timeouts, and the same pipeline (pipeline.py) judges
every try; only the sending is h11 on trio streams.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import TYPE_CHECKING, Any

import h11
import trio

from .answers import Answer
from .connection import request_headers
from .pipeline import Attempt, Retrying, TransportFailure, reason

if TYPE_CHECKING:
    from .client import OrthancClient

log = logging.getLogger("orthancfs.orthanc")  # the client's log: one line per request, as the blocking path
RECEIVE = 1 << 16
Connection = tuple[trio.abc.Stream, h11.Connection]


class _Broken(Exception):  # noqa: N818 - internal to this module
    """The connection failed; `sent` once the whole request had gone, `answered` if any byte of
    the answer had come."""

    def __init__(self, cause: BaseException, answered: bool, sent: bool = False):
        super().__init__(reason(cause))
        self.cause, self.answered, self.sent = cause, answered, sent


class LoopUploader:
    """Uploads for one trio loop, on keep-alive connections (used from that loop only)."""

    def __init__(self, client: OrthancClient):
        self.client = client
        settings = client.settings
        self.host, self.port = settings.host, settings.port
        self.target = (settings.prefix + "/instances").encode()
        self.tls = tls_context(client) if settings.tls else None
        headers = {**request_headers(settings), "Content-Type": "application/dicom"}
        self.headers = [(b"Host", settings.netloc.encode()),
                        *((name.encode(), value.encode()) for name, value in headers.items())]
        self._idle: list[Connection] = []

    async def upload(self, body: bytes) -> Any:
        """`POST /instances` of `body`; Orthanc's answer, or the model error the client would raise."""
        retrying = Retrying("POST", "/instances", self.client.base_url)
        with self.client.health.watching("POST", "/instances"):
            for attempt in self.client.attempts():
                try:
                    outcome: Answer | TransportFailure = await self._try(body, attempt)
                except TransportFailure as failure:
                    outcome = failure
                answer = retrying.judge(attempt, outcome)
                if answer is not None:
                    return answer.json("POST /instances")
                await trio.sleep(attempt.delay)
        raise AssertionError("unreachable: the last attempt always returns or raises")

    def close(self) -> None:
        """Drop the idle connections; called after the loop has ended (trio's own close needs one)."""
        idle, self._idle = self._idle, []
        for stream, _ in idle:
            os.close(_socket_of(stream).detach())

    async def _try(self, body: bytes, attempt: Attempt) -> Answer:
        log.debug("POST /instances")
        try:
            return await self._exchange(body, attempt.connect_timeout, self.client.settings.timeout)
        except trio.TooSlowError:  # connected, so the file may have arrived
            raise TransportFailure("timeout", "timed out", sent=True) from None
        except _Broken as exc:
            tls = isinstance(exc.cause, ssl.SSLError) or isinstance(exc.cause.__cause__, ssl.SSLError)
            raise TransportFailure("tls" if tls else "lost" if exc.sent else "refused", str(exc), exc.sent) from None

    async def _exchange(self, body: bytes, connect: float, timeout: float) -> Answer:
        """Send the request and read the answer, on an idle connection if there is one.  A failure
        on an idle connection before any answer (the server closed it meanwhile) goes on a new one:
        the request was not taken, and storing an instance twice would only say AlreadyStored."""
        while True:
            reused = bool(self._idle)
            stream, connection = self._idle.pop() if reused else await self._connect(connect)
            answer = None
            try:
                with trio.fail_after(timeout):
                    answer = await self._roundtrip(stream, connection, body)
            except _Broken as exc:
                if reused and not exc.answered:
                    continue
                raise
            finally:
                if answer is not None and connection.our_state is connection.their_state is h11.DONE:
                    connection.start_next_cycle()  # kept for the next upload
                    self._idle.append((stream, connection))
                else:
                    _socket_of(stream).close()
            return answer

    async def _connect(self, timeout: float) -> Connection:
        try:
            with trio.fail_after(timeout):
                stream: trio.abc.Stream = await trio.open_tcp_stream(self.host, self.port)
                if self.tls is not None:
                    stream = trio.SSLStream(stream, self.tls, server_hostname=self.host, https_compatible=True)
                    await stream.do_handshake()
        except (OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
            raise _Broken(exc, answered=False) from exc
        return stream, h11.Connection(h11.CLIENT)

    async def _roundtrip(self, stream: trio.abc.Stream, connection: h11.Connection, body: bytes) -> Answer:
        request = h11.Request(method="POST", target=self.target,
                              headers=[*self.headers, (b"Content-Length", str(len(body)).encode())])
        answered = sent = False
        try:
            await stream.send_all(connection.send(request) + connection.send(h11.Data(data=body))
                                  + connection.send(h11.EndOfMessage()))
            sent = True
            status, headers, content = 0, {}, []
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(RECEIVE)
                    answered = answered or bool(data)
                    connection.receive_data(data)  # b"": the server closed (next_event says how)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in event.headers}
                elif isinstance(event, h11.Data):
                    content.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    return Answer(status, headers, b"".join(content))
                elif isinstance(event, h11.ConnectionClosed):
                    raise trio.BrokenResourceError("the connection closed before the answer")
        except h11.RemoteProtocolError as exc:  # its own cause is an internal KeyError: say what happened
            closed = ConnectionError(f"Orthanc closed the connection {'after' if answered else 'before'} answering")
            raise _Broken(closed, answered, sent) from exc
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError) as exc:
            raise _Broken(exc, answered, sent) from exc


def tls_context(client: OrthancClient) -> ssl.SSLContext:
    """What the blocking transport verifies with: the system's CAs (or --ca-file), the client
    certificate, or nothing with --insecure."""
    settings = client.settings
    context = ssl.create_default_context(cafile=None if settings.insecure else settings.ca_file)
    if settings.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if settings.client_cert:
        context.load_cert_chain(settings.client_cert, settings.client_key)
    return context


def _socket_of(stream: trio.abc.Stream) -> Any:
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return stream.socket
