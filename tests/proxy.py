"""A real TCP proxy on loopback, optionally terminating TLS: Orthanc behind HTTPS, or a network that fails.

(Debian's Orthanc 1.10.1 crashes in civetweb on its first TLS handshake, and
real deployments put a TLS proxy in front of Orthanc anyway.)
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Callable

from orthancfs.demo.server import free_port


class Proxy:
    """Forwards 127.0.0.1:port to an upstream port, wrapping the client side in TLS if given a context.

    Faults, each set and cleared while it runs:
    - `cut_after`: each connection is dropped once it has carried that many bytes from upstream
      (a network that fails in the middle of a download);
    - `drop_answers_to`: a request that starts with these bytes (b"POST /instances") is forwarded
      whole, but Orthanc's answer never reaches the client: once it starts, both sides of the
      connection are dropped (the request was handled, the answer lost); `drops` counts them;
    - `refuse`: connections are closed, new ones at once, open ones at their next piece (Orthanc unreachable);
    - stall() / resume(): nothing goes through, on any connection, new or open (Orthanc frozen).
    """

    def __init__(self, upstream_port: int, tls: ssl.SSLContext | None = None):
        self.upstream_port = upstream_port
        self.tls = tls
        self.cut_after: int | None = None
        self.drop_answers_to: bytes | None = None
        self.refuse = False
        self._flowing = threading.Event()
        self._flowing.set()
        self.drops = 0
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        if self.refuse:
            client.close()
            return
        self._flowing.wait()
        try:
            if self.tls is not None:
                client = self.tls.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:  # a failed handshake is the client's business (that is what we test)
            client.close()
            return
        connection = _Connection()
        threading.Thread(target=_pump, args=(upstream, client, self._gate, self._answer_limit(connection)),
                         daemon=True).start()
        _pump(client, upstream, self._gate, watch=lambda data: self._request_seen(connection, data))

    def _gate(self) -> None:
        """Before each piece: hold it while stalled; drop the connection while refusing."""
        self._flowing.wait()
        if self.refuse:
            raise ConnectionAbortedError("the proxy refuses")

    def _request_seen(self, connection: _Connection, data: bytes) -> None:
        """A piece from the client: the start of a request whose answer must be dropped?"""
        prefix = self.drop_answers_to
        if prefix is not None and data.startswith(prefix):
            connection.dropping = True

    def _answer_limit(self, connection: _Connection) -> Callable[[], int | None]:
        def limit() -> int | None:
            if connection.dropping:
                self.drops += 1
                return 0
            return self.cut_after
        return limit

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        self._listener.close()


class _Connection:
    dropping = False  # a request was seen whose answer is to be dropped


def _pump(source: socket.socket, target: socket.socket, gate: Callable[[], object] = lambda: None,
          limit: Callable[[], int | None] = lambda: None, watch: Callable[[bytes], None] = lambda data: None) -> None:
    """Copy until either side closes, or until `limit()` bytes went through (read as we go);
    `gate()` holds each piece while the proxy is stalled, `watch` sees each piece first."""
    carried = 0
    try:
        while data := source.recv(65536):
            gate()
            watch(data)
            if (cut := limit()) is not None and carried + len(data) > cut:
                target.sendall(data[: max(cut - carried, 0)])
                break  # and drop both sides, mid-answer
            target.sendall(data)
            carried += len(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
