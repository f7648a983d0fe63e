"""OrthancClient.download against a real HTTP server: spliced or copied, the file comes out exact,
and a server that cuts or stalls a body fails the download within the timeout."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from orthancfs.content import Spool
from orthancfs.errors import OrthancUnavailable
from orthancfs.fuse.readahead import raise_readahead
from orthancfs.orthanc import FIRST_CHUNK_SIZE, SPLICE_FROM, ClientSettings, OrthancClient
from orthancfs.orthanc.splice import takes_splice

from .helpers import QuietHTTPServer, wait_for

LARGE = os.urandom(3 * SPLICE_FROM + 12345)  # spliced, in pieces of growing size
SMALL = os.urandom(SPLICE_FROM // 2)  # copied


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, threading.Event]]:
    """Bodies by path: /large, /small, /chunked (copied whatever its size), /cut/... (the
    connection closes halfway), /stall/... (the server goes silent halfway)."""
    released = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # for chunked answers

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = SMALL if self.path.endswith("/small") else LARGE
            self.send_response(200)
            if self.path == "/chunked":
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(body), 100_000):
                    piece = body[start:start + 100_000]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if "/cut/" in self.path or "/stall/" in self.path:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                if "/stall/" in self.path:
                    released.wait(30)
                self.close_connection = True
                return
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    http_server = QuietHTTPServer(("127.0.0.1", 0), Handler)
    http_server.daemon_threads = True
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{http_server.server_address[1]}", released
    released.set()
    http_server.shutdown()
    http_server.server_close()


def download(url: str, path: str, timeout: float = 30.0) -> tuple[bytes, list[int]]:
    """What `path` downloads into a fresh file, and each total that `arrived` was told."""
    totals: list[int] = []
    with tempfile.TemporaryFile() as file:
        total = OrthancClient(ClientSettings(url, timeout=timeout)).download(path, file.fileno(), totals.append)
        assert total == totals[-1] == os.fstat(file.fileno()).st_size
        return os.pread(file.fileno(), total + 1, 0), totals


@pytest.mark.parametrize(("path", "expected", "how"), [("/large", LARGE, "spliced"), ("/small", SMALL, "copied"),
                                                       ("/chunked", LARGE, "copied")])
def test_the_file_is_exact_and_readers_hear_of_every_piece(server: tuple[str, threading.Event], path: str,
                                                           expected: bytes, how: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    url, _ = server
    with caplog.at_level(logging.DEBUG, logger="orthancfs.orthanc"):
        data, totals = download(url, path)
    assert data == expected
    assert totals == sorted(set(totals)) and len(totals) > 2  # growing, in several pieces
    assert totals[0] <= FIRST_CHUNK_SIZE + 65536  # the first bytes are announced early
    assert f"downloaded {path}: {len(expected)} bytes, {how}" in caplog.text


@pytest.mark.parametrize("size", ["large", "small"])
def test_a_body_cut_midway_is_an_interrupted_download(server: tuple[str, threading.Event], size: str) -> None:
    url, _ = server
    with pytest.raises(OrthancUnavailable, match="download interrupted"):
        download(url, f"/cut/{size}")


@pytest.mark.parametrize("size", ["large", "small"])
def test_a_server_silent_midway_fails_within_the_timeout(server: tuple[str, threading.Event], size: str) -> None:
    url, _ = server
    started = time.monotonic()
    with pytest.raises(OrthancUnavailable, match="download interrupted"):
        download(url, f"/stall/{size}", timeout=0.5)
    assert time.monotonic() - started < 3


def test_a_spool_evicted_while_downloading_keeps_its_file_until_the_download_stops(
        server: tuple[str, threading.Event], tmp_path: Path) -> None:
    """The download writes by descriptor number: closing the file under it would let that number
    be reused by another file, and the rest of the download would land there."""
    url, _ = server
    spool = Spool("stall", len(LARGE), str(tmp_path))  # GET /instances/stall/file: half, then silence
    download = threading.Thread(target=spool.fill, args=(OrthancClient(ClientSettings(url, timeout=1.0)),))
    download.start()
    wait_for(lambda: spool.ready_for(0, 4096), 10, "the first bytes")
    spool.discard()
    assert spool.read(0, 4096) == LARGE[:4096]  # still open: the download still holds it
    download.join(10)
    assert spool.failed
    with pytest.raises(ValueError):  # closed once the download stopped
        spool.read(0, 4096)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system of 1 MiB, smaller than LARGE."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "tiny"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("path", ["/large", "/chunked"])  # spliced, copied
def test_a_full_local_disk_is_its_own_error_not_orthancs(server: tuple[str, threading.Event], full_disk: Path,
                                                          path: str) -> None:
    url, _ = server
    with open(full_disk / "spool", "w+b") as file, pytest.raises(OSError) as caught:
        OrthancClient(ClientSettings(url)).download(path, file.fileno(), lambda total: None)
    assert caught.value.errno == errno.ENOSPC


def test_files_that_refuse_spliced_bytes_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    with open(path, "w+b") as file:
        assert takes_splice(file.fileno())
        assert os.fstat(file.fileno()).st_size == 0  # the probe leaves nothing behind
    with open(path, "ab") as appending:  # splice(2) refuses files opened for appending
        assert not takes_splice(appending.fileno())


DEVICE = os.makedev(0, 40)  # a FUSE mount's st_dev: /sys/class/bdi/0:40


@pytest.mark.parametrize(("before", "after", "raised"), [("128", "1024", True), ("4096", "4096", True)])
def test_readahead_is_raised_never_lowered(tmp_path: Path, before: str, after: str, raised: bool) -> None:
    setting = tmp_path / "bdi" / "0:40" / "read_ahead_kb"
    setting.parent.mkdir(parents=True)
    setting.write_text(before)
    assert raise_readahead(DEVICE, 1024, str(tmp_path / "bdi")) is raised
    assert setting.read_text() == after


def test_readahead_that_cannot_be_changed_is_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="orthancfs.fuse.readahead"):
        assert not raise_readahead(DEVICE, 1024, str(tmp_path / "bdi"))
    assert caplog.text.count("echo 1024 >") == 1
