"""The private Orthanc that tests, bench and demo start: its port is never lost to a race."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from orthancfs.demo.server import OrthancServer, PortTakenError, _ephemeral_range, free_port


@contextmanager
def held_by_a_connection(port: int) -> Iterator[None]:
    """`port` taken the way an outgoing connection takes it: bound and connected, not listening."""
    with socket.create_server(("127.0.0.1", 0)) as listener, socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.connect(listener.getsockname())
        yield


def test_ports_come_from_below_the_range_outgoing_connections_use_and_are_handed_out_once() -> None:
    low, _high = _ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(port < low for port in ports)


def test_a_port_taken_before_orthanc_binds_it_is_replaced_by_another(tmp_path: Path) -> None:
    server = OrthancServer(tmp_path / "orthanc")
    taken = server.port
    with held_by_a_connection(taken), server, server.client() as client:
        assert server.port != taken
        assert client.system["Version"]


def test_a_port_the_caller_set_is_kept_and_its_loss_named(tmp_path: Path) -> None:
    server = OrthancServer(tmp_path / "orthanc")
    server.port = free_port()  # as a restart on the same URL does
    try:
        with held_by_a_connection(server.port), pytest.raises(PortTakenError, match="already in use"):
            server.start()
        assert server.process is None
    finally:
        server.__exit__(None, None, None)  # its workdir, when it lives in another Debian's root
