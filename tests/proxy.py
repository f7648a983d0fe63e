"""A real TCP proxy on loopback, optionally terminating TLS: Orthanc behind HTTPS.

(Debian's Orthanc 1.10.1 crashes in civetweb on its first TLS handshake, and
real deployments put a TLS proxy in front of Orthanc anyway.)
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading

from orthancfs.demo.server import free_port


class Proxy:
    """Forwards 127.0.0.1:port to an upstream port, wrapping the client side in TLS if given a context."""

    def __init__(self, upstream_port: int, tls: ssl.SSLContext | None = None):
        self.upstream_port = upstream_port
        self.tls = tls
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
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
