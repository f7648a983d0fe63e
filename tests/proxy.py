"""A real TCP proxy on loopback, optionally terminating TLS: Orthanc behind HTTPS.

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

    `cut_after`: if set, each connection is dropped once it has carried that many
    bytes from upstream (a network that fails in the middle of a download).
    """

    def __init__(self, upstream_port: int, tls: ssl.SSLContext | None = None):
        self.upstream_port = upstream_port
        self.tls = tls
        self.cut_after: int | None = None
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            if self.tls is not None:
                client = self.tls.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:  # a failed handshake is the client's business (that is what we test)
            client.close()
            return
        threading.Thread(target=_pump, args=(upstream, client, lambda: self.cut_after), daemon=True).start()
        _pump(client, upstream)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()


def _pump(source: socket.socket, target: socket.socket, limit: Callable[[], int | None] = lambda: None) -> None:
    """Copy until either side closes, or until `limit()` bytes went through (read as we go)."""
    carried = 0
    try:
        while data := source.recv(65536):
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
