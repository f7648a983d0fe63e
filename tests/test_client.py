"""OrthancClient against a real scripted HTTP server: retries, timeouts, error mapping."""

from __future__ import annotations

import base64
import gzip
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import trio

from orthancfs.demo.server import free_port
from orthancfs.errors import AccessDenied, NotFound, OrthancFailed, OrthancUnavailable, UploadRejected
from orthancfs.orthanc import Capabilities, ClientSettings, LoopUploader, OrthancClient
from orthancfs.orthanc import client as orthanc_module

from .helpers import QuietHTTPServer, loop_upload


class Script:
    """The statuses the server answers, in order (the last one repeats), and what it saw."""

    def __init__(self) -> None:
        self.statuses: list[int] = [200]
        self.delay = 0.0
        self.requests = 0
        self.bodies: list[bytes] = []  # what POSTs sent
        self.headers: list[dict[str, str]] = []


@pytest.fixture
def scripted() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            script.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            script.headers.append(dict(self.headers))
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/compressed":  # a proxy that compresses whatever the client asked for
                body = gzip.compress(COMPRESSIBLE)
                self.send_response(200)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            script.requests += 1
            time.sleep(script.delay)
            status = script.statuses.pop(0) if len(script.statuses) > 1 else script.statuses[0]
            body = b'{"Version": "1.10.1"}' if status == 200 else b'{"Message": "scripted failure"}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = QuietHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", script
    server.shutdown()
    server.server_close()


COMPRESSIBLE = b"DICM" * 100_000


def client(url: str, **settings: object) -> OrthancClient:
    return OrthancClient(ClientSettings(url, **settings))  # type: ignore[arg-type]


def test_502_and_503_are_retried(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.statuses = [503, 502, 200]
    assert client(url).get_json("/system") == {"Version": "1.10.1"}
    assert script.requests == 3


def test_retries_are_bounded(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.statuses = [503]
    with pytest.raises(OrthancUnavailable, match="503"):
        client(url, retries=2).get_json("/system")
    assert script.requests == 3


@pytest.mark.parametrize(("status", "error"), [(500, OrthancFailed), (400, OrthancFailed), (404, NotFound),
                                               (401, AccessDenied), (403, AccessDenied)])
def test_other_errors_are_not_retried_and_keep_orthancs_words(scripted: tuple[str, Script], status: int,
                                                               error: type) -> None:
    url, script = scripted
    script.statuses = [status, 200]
    with pytest.raises(error, match="scripted failure"):
        client(url).get_json("/system")
    assert script.requests == 1


def test_a_silent_server_fails_within_the_timeout(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.delay = 5
    started = time.monotonic()
    with pytest.raises(OrthancUnavailable, match="no answer"):
        client(url, timeout=0.5).get_json("/system")
    assert time.monotonic() - started < 2
    assert script.requests == 1  # the request may have had an effect: never resent


def test_refused_connections_are_retried_then_reported() -> None:
    started = time.monotonic()
    with pytest.raises(OrthancUnavailable, match="refused"):
        client(f"http://127.0.0.1:{free_port()}", timeout=5).get_json("/system")
    assert time.monotonic() - started < 5


@pytest.mark.allow_warnings
def test_an_outage_fails_fast_then_recovers(scripted: tuple[str, Script], caplog: pytest.LogCaptureFixture) -> None:
    url, script = scripted
    caplog.set_level(logging.INFO, "orthancfs")
    orthanc = client(url, retries=0)
    orthanc.health.fail_fast_seconds = 0.3
    script.statuses = [200, 503, 200]
    orthanc.get_json("/system")
    with pytest.raises(OrthancUnavailable):
        orthanc.get_json("/system")
    with pytest.raises(OrthancUnavailable, match="not tried"):
        orthanc.get_json("/system")
    assert script.requests == 2
    time.sleep(0.3)  # the fail-fast window itself is what is under test
    assert orthanc.get_json("/system") == {"Version": "1.10.1"}
    messages = [r.getMessage() for r in caplog.records if r.name == "orthancfs.orthanc"]
    assert len(messages) == 2 and "unavailable" in messages[0] and "answers again" in messages[1], messages


@pytest.mark.parametrize(("text", "version"), [("1.10.1", (1, 10, 1)), ("1.11.0", (1, 11, 0)), ("1.12.5", (1, 12, 5)),
                                              ("mainline", (999, 0, 0)), ("1.9", (1, 9, 0))])
def test_capabilities_from_the_version(text: str, version: tuple) -> None:
    assert Capabilities.from_system({"Version": text}).version == version


@pytest.mark.parametrize("streamed", [False, True])
def test_uploads_send_the_whole_file_with_the_sessions_credentials(scripted: tuple[str, Script], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   streamed: bool) -> None:
    url, script = scripted
    if streamed:  # above the limit, the file goes from disk, not from memory
        monkeypatch.setattr(orthanc_module, "DIRECT_BODY_LIMIT", 1000)
    path = tmp_path / "a.dcm"
    path.write_bytes(os.urandom(300_000))
    script.statuses = [503, 200]  # and the retry sends it whole again
    with open(path, "rb") as file:
        client(url, username="alice", password="secret").upload_fd(file.fileno())
    assert script.bodies == [path.read_bytes()] * 2
    headers = script.headers[-1]
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"alice:secret").decode()
    assert headers["Content-Type"] == "application/dicom" and headers["User-Agent"] == "orthancfs"
    client(url, token="t0ken").upload(b"DICM")
    assert script.bodies[-1] == b"DICM" and script.headers[-1]["Authorization"] == "Bearer t0ken"


UPLOADS = [OrthancClient.upload, loop_upload]  # from a thread (WebDAV, archives), from the mount's trio loop


@pytest.mark.parametrize("upload", UPLOADS)
def test_upload_failures_keep_orthancs_words(scripted: tuple[str, Script], upload: Callable) -> None:
    url, script = scripted
    script.statuses = [400]
    with pytest.raises(UploadRejected, match="scripted failure"):
        upload(client(url), b"not DICOM")
    script.statuses, script.delay, script.requests = [200], 5, 0
    started = time.monotonic()
    with pytest.raises(OrthancUnavailable, match="no answer"):
        upload(client(url, timeout=0.5), b"DICM")
    assert time.monotonic() - started < 2 and script.requests == 1


@pytest.mark.parametrize("upload", UPLOADS)
def test_uploads_to_a_closed_port_are_reported(upload: Callable) -> None:
    with pytest.raises(OrthancUnavailable, match="refused"):
        upload(client(f"http://127.0.0.1:{free_port()}", timeout=5), b"DICM")


def test_uploads_from_the_loop_send_the_same_request(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    data = os.urandom(300_000)
    script.statuses = [503, 200]  # and the retry sends it whole again
    assert loop_upload(client(url, username="alice", password="secret"), data) == {"Version": "1.10.1"}
    assert script.bodies == [data] * 2
    headers = script.headers[-1]
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"alice:secret").decode()
    assert headers["Content-Type"] == "application/dicom" and headers["User-Agent"] == "orthancfs"
    loop_upload(client(url, token="t0ken"), b"DICM")
    assert script.bodies[-1] == b"DICM" and script.headers[-1]["Authorization"] == "Bearer t0ken"


@pytest.mark.parametrize("closes_idle", [False, True])
def test_the_loop_uploader_keeps_connections_and_survives_idle_ones_closed(closes_idle: bool) -> None:
    """HTTP/1.1 keep-alive: one connection for many uploads; a server that closes an idle connection
    without saying so gets each upload once, on a new connection."""
    seen = {"connections": 0, "requests": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            seen["connections"] += 1

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self.rfile.read(int(self.headers["Content-Length"]))
            seen["requests"] += 1
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            self.close_connection = closes_idle  # closed after the answer, as if idle too long

        def log_message(self, *args: object) -> None:
            pass

    server = QuietHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uploader = LoopUploader(client(f"http://127.0.0.1:{server.server_address[1]}"))

        async def three_uploads() -> None:
            for _ in range(3):
                assert await uploader.upload(b"DICM") == {}

        trio.run(three_uploads)
        uploader.close()
    finally:
        server.shutdown()
        server.server_close()
    assert seen == {"connections": 3 if closes_idle else 1, "requests": 3}


def test_downloads_are_decoded_only_when_compressed(scripted: tuple[str, Script], tmp_path: Path) -> None:
    url, _ = scripted
    for path, expected in (("/compressed", COMPRESSIBLE), ("/system", b'{"Version": "1.10.1"}')):
        with open(tmp_path / "file", "w+b") as file:
            assert client(url).download(path, file.fileno(), lambda total: None) == len(expected)
            assert os.pread(file.fileno(), len(COMPRESSIBLE) + 1, 0) == expected


def test_settings_never_show_the_password() -> None:
    assert "hunter2" not in repr(ClientSettings("http://x", "alice", "hunter2"))
