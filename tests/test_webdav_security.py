"""`orthancfs webdav` as an attacker on the network would try it (issue 16), on loopback, with real clients.

The abuse loads are bounded and stop by themselves; while they run, a probe request from
another loopback address (127.0.0.0/8 is all loopback) must be answered within a bound.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import http.client
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests

from orthancfs.demo.server import OrthancServer, free_port
from orthancfs.webdav.connections import PER_ADDRESS

from . import uploads_data as data
from .helpers import http_answers, wait_for
from .test_webdav import WebDAV, propfind

PASSWORDS = {"viewer": "v-pass", "importer": "i-pass", "importer2": "j-pass", "admin": "a-pass"}
ROLES = {"viewer": "read", "importer": "upload", "importer2": "upload", "admin": "delete"}
LOCK_BODY = (b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
             b'</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>me</D:owner></D:lockinfo>')
BOMB = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a0 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">'
        + b"".join(b'<!ENTITY a%d "%s">' % (level, b"&a%d;" % (level - 1) * 10) for level in range(1, 7))
        + b']><D:propfind xmlns:D="DAV:"><D:prop><D:displayname>&a6;</D:displayname></D:prop></D:propfind>')


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    with OrthancServer(tmp_path_factory.mktemp("orthanc")) as server, server.client() as client:
        for payload in data.instances(2, "SEC"):
            client.upload(payload)
        yield server


def write_users(tmp_path: Path, cost: int = 4, **costs: int) -> Path:
    lines = []
    for name, password in PASSWORDS.items():
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(costs.get(name, cost))).decode()
        digest = hashlib.md5(f"{name}:orthancfs:{password}".encode()).hexdigest()  # noqa: S324 - htdigest's HA1
        lines.append(f"{name}:{hashed}:{ROLES[name]}:{digest}")
    path = tmp_path / "users"
    path.write_text("# issue 16\n" + "\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def secured(orthanc: OrthancServer, tmp_path: Path) -> Iterator[WebDAV]:
    dav = WebDAV(orthanc.url, tmp_path, "--users-file", str(write_users(tmp_path)), "--allow-delete",
                 "--access-log", str(tmp_path / "access.log"))
    yield dav
    assert dav.stop() == 0
    log = dav.log.read_text()
    assert "Traceback" not in log and "Exception ignored" not in log, log


def call(dav: WebDAV, method: str, path: str, user: str | None = None, source: str = "127.0.0.1",
         headers: dict | None = None, body: bytes | None = None) -> tuple[int, dict, bytes, float]:
    """One request on its own connection, from `source` (a loopback address): status, headers, body, seconds."""
    headers = dict(headers or {})
    if user:
        credentials = base64.b64encode(f"{user}:{PASSWORDS.get(user, 'nope')}".encode()).decode()
        headers["Authorization"] = f"Basic {credentials}"
    connection = http.client.HTTPConnection("127.0.0.1", dav.port, timeout=30, source_address=(source, 0))
    try:
        started = time.perf_counter()
        connection.request(method, path, body=body, headers=headers, encode_chunked="Transfer-Encoding" in headers)
        answer = connection.getresponse()
        content = answer.read()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, content, time.perf_counter() - started
    finally:
        connection.close()


def status(dav: WebDAV, method: str, path: str, user: str | None = None, **kwargs: object) -> int:
    return call(dav, method, path, user, **kwargs)[0]  # type: ignore[arg-type]


def rss_mb(pid: int) -> float:
    [line] = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS")]
    return int(line.split()[1]) / 1024


@pytest.mark.parametrize(("users", "args", "message"), [
    ("", [], "names no user"),
    ("# only comments\n\n", [], "names no user"),
    ("admin:$2b$12$malformed:delete\n", [], "users:1: the password must be a bcrypt hash"),
    ("good", ["--listen", "0.0.0.0:{port}"], "refusing plain http on 0.0.0.0"),
    (None, ["--listen", "0.0.0.0:{port}", "--allow-anonymous"], "refusing plain http on 0.0.0.0"),
    (None, ["--listen", "0.0.0.0:{port}", "--allow-anonymous", "--allow-insecure-http", "--allow-delete"],
     "refusing anonymous deletes on 0.0.0.0"),
    (None, ["--access-log", "/nonexistent/access.log"], "cannot open access log /nonexistent/access.log"),
])
def test_start_is_refused_where_it_would_fail_open(orthanc: OrthancServer, tmp_path: Path, users: str | None,
                                                    args: list[str], message: str) -> None:
    command = [sys.executable, "-m", "orthancfs", "webdav", "--url", orthanc.url, "--cache-dir", str(tmp_path / "c")]
    if users is not None:
        path = write_users(tmp_path) if users == "good" else tmp_path / "users"
        if users != "good":
            path.write_text(users)
            path.chmod(0o600)
        command += ["--users-file", str(path)]
    if "--listen" not in args:
        command += ["--listen", f"127.0.0.1:{free_port()}"]
    result = subprocess.run([*command, *(a.format(port=free_port()) for a in args)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1, result


def test_roles_govern_every_method(secured: WebDAV, orthanc: OrthancServer) -> None:
    for method in ("GET", "HEAD", "OPTIONS"):
        assert status(secured, method, "/uploads/", "viewer") == 200
    assert status(secured, "PROPFIND", "/uploads/", "viewer", headers={"Depth": "1"}) == 207
    for method, extra in (("PUT", {}), ("MKCOL", {}), ("LOCK", {}), ("PROPPATCH", {}), ("DELETE", {}),
                          ("COPY", {"Destination": "/uploads/b.txt"}), ("MOVE", {"Destination": "/uploads/b.txt"})):
        assert status(secured, method, "/uploads/a.txt", "viewer", headers=extra, body=b"") == 403, method
    assert status(secured, "PUT", "/uploads/a.txt", "importer", body=b"hello") == 201
    assert status(secured, "MKCOL", "/uploads/folder/", "importer") == 201
    copy = {"Destination": "/uploads/folder/a.txt"}
    assert status(secured, "COPY", "/uploads/a.txt", "importer", headers=copy) == 201
    assert status(secured, "MOVE", "/uploads/a.txt", "importer", headers={"Destination": "/uploads/b.txt"}) == 201
    update = (b'<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><x xmlns="urn:x">1</x></D:prop></D:set>'
              b'</D:propertyupdate>')
    assert status(secured, "PROPPATCH", "/uploads/b.txt", "importer", body=update) == 207
    assert status(secured, "DELETE", "/uploads/b.txt", "importer") == 204
    assert status(secured, "DELETE", "/uploads/", "admin") == 403  # the drop folder stays
    assert status(secured, "MOVE", "/uploads/folder/", "importer", headers={"Destination": "/uploads/"}) == 403
    [patient] = [h for h in re.findall(r"<D:href>([^<]+)</D:href>", propfind(
        secured.url + "/by-patients/", auth=("viewer", "v-pass")).text) if "SEC" in h]
    assert status(secured, "DELETE", patient, "importer") == 403
    assert status(secured, "POST", "/uploads/", "admin") == 405
    with orthanc.client() as client:
        assert len(client.get_json("/patients")) == 1  # nothing was deleted


def test_a_lock_ends_within_the_hour_and_the_delete_role_can_remove_it(secured: WebDAV) -> None:
    infinite = {"Depth": "infinity", "Timeout": "Infinite, Second-4100000000"}
    assert status(secured, "LOCK", "/uploads/", "viewer", headers=infinite, body=LOCK_BODY) == 403
    assert status(secured, "LOCK", "/uploads/", "importer", headers=infinite, body=LOCK_BODY) == 403
    assert status(secured, "MKCOL", "/uploads/shared/", "importer") == 201
    code, headers, body, _ = call(secured, "LOCK", "/uploads/shared/", "importer", headers=infinite, body=LOCK_BODY)
    assert code == 200
    assert int(re.search(rb"Second-(\d+)", body)[1]) <= 3600
    token = headers["lock-token"]
    assert token.strip("<>").encode() in propfind(secured.url + "/uploads/shared/", depth="0",
                                                  auth=("viewer", "v-pass")).content  # anyone can see it...
    assert status(secured, "PUT", "/uploads/shared/x.txt", "importer2", body=b"x") == 423
    assert status(secured, "UNLOCK", "/uploads/shared/", "importer2", headers={"Lock-Token": token}) == 403
    assert status(secured, "UNLOCK", "/uploads/shared/", "viewer", headers={"Lock-Token": token}) == 403
    assert status(secured, "UNLOCK", "/uploads/shared/", "admin", headers={"Lock-Token": token}) == 204
    assert status(secured, "PUT", "/uploads/shared/x.txt", "importer2", body=b"x") == 201


def test_xml_bodies_are_parsed_safely_and_bounded(secured: WebDAV) -> None:
    assert len(BOMB) < 1000
    depth0 = {"Depth": "0"}
    assert status(secured, "PROPFIND", "/by-patients/", "viewer", headers=depth0, body=BOMB) == 400
    assert status(secured, "PROPFIND", "/uploads/", "viewer", headers=depth0, body=BOMB) == 400
    def declared(length: int) -> dict:  # refused on what it says, before it is sent
        return {**depth0, "Content-Length": str(length)}

    assert status(secured, "PROPFIND", "/by-patients/", "viewer", headers=declared(65537)) == 413
    assert status(secured, "LOCK", "/uploads/l.txt", "importer", headers=declared(65537)) == 413
    assert status(secured, "PROPPATCH", "/uploads/", "importer", headers=declared((1 << 20) + 1)) == 413
    big = b'<D:propfind xmlns:D="DAV:"><D:prop>' + b"<D:displayname/>" * 5000 + b"</D:prop></D:propfind>"
    chunked = {**depth0, "Transfer-Encoding": "chunked"}
    assert status(secured, "PROPFIND", "/by-patients/", "viewer", headers=chunked, body=iter([big])) == 413
    before = rss_mb(secured.process.pid)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        bombs = [pool.submit(status, secured, "PROPFIND", "/by-patients/", "viewer", headers=depth0, body=BOMB)
                 for _ in range(64)]
        code, _, _, seconds = call(secured, "PROPFIND", "/by-patients/", "viewer", source="127.0.0.2",
                                   headers={"Depth": "1"})
        assert {bomb.result() for bomb in bombs} == {400}
    assert code == 207 and seconds < 1.0
    assert rss_mb(secured.process.pid) - before < 16


def test_slow_and_many_clients_hold_no_thread(secured: WebDAV) -> None:
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{secured.port}"], capture_output=True, text=True).stdout
    assert int(listening.split()[2]) >= 128  # Send-Q of a listening socket: its backlog
    slow = []
    for _ in range(20):  # each sends a part of its head, and no more
        client = socket.socket()
        client.bind(("127.0.0.2", 0))
        client.connect(("127.0.0.1", secured.port))
        client.sendall(b"PROPFIND /by-patients/ HTTP/1.1\r\nHost: x\r\nDepth: 1\r\n")
        slow.append(client)
    many = [socket.create_connection(("127.0.0.1", secured.port), source_address=("127.0.0.3", 0))
            for _ in range(PER_ADDRESS + 8)]
    try:
        code, _, _, seconds = call(secured, "PROPFIND", "/by-patients/", "viewer", headers={"Depth": "1"})
        assert code == 207 and seconds < 1.0
        for client in many:
            client.settimeout(0.05)
        busy = [client for client in many if _answer(client).startswith(b"HTTP/1.1 503")]
        assert len(busy) == 8  # beyond the per-address limit
        started = time.monotonic()
        for client in slow:
            client.settimeout(30)
            assert _answer(client) == b""  # closed by the server, its head never complete
        assert time.monotonic() - started < 15
    finally:
        for client in slow + many:
            client.close()


def test_silent_tls_clients_stall_nobody(orthanc: OrthancServer, tmp_path: Path) -> None:
    """cheroot did the TLS handshake in the thread that accepts connections: one silent client stalled
    every new connection for the server's timeout."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    dav = WebDAV(orthanc.url, tmp_path, "--users-file", str(write_users(tmp_path)), "--cert", str(cert), "--key",
                 str(key), scheme="https")
    silent = [socket.create_connection(("127.0.0.1", dav.port), source_address=("127.0.0.2", 0)) for _ in range(20)]
    try:
        for client in silent[:10]:
            client.sendall(b"\x16\x03\x01\x00")  # the start of a ClientHello, and no more
        for _ in range(3):
            started = time.perf_counter()
            answer = requests.request("PROPFIND", dav.url + "/", headers={"Depth": "0"}, auth=("viewer", "v-pass"),
                                      verify=str(cert))
            assert answer.status_code == 207 and time.perf_counter() - started < 1.0
        with socket.create_connection(("127.0.0.1", dav.port)) as plain:  # plain HTTP to the https port
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            plain.settimeout(10)
            assert plain.recv(100) == b""
    finally:
        for client in silent:
            client.close()
        assert dav.stop() == 0
    assert "Traceback" not in dav.log.read_text()


def _answer(client: socket.socket) -> bytes:
    try:
        return client.recv(100)
    except TimeoutError:
        return b"(nothing)"


def test_a_long_body_nobody_wants_is_not_read(secured: WebDAV) -> None:
    """A 401 before the body: the connection is closed, not drained (cheroot read it all into memory)."""
    before = rss_mb(secured.process.pid)
    with socket.create_connection(("127.0.0.1", secured.port)) as client:
        client.sendall(b"PUT /uploads/big.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n")
        client.sendall(b"\0" * (1 << 20))  # the server lingers: it reads and drops this, and answers
        client.settimeout(10)
        head = client.recv(1000)
        assert head.startswith(b"HTTP/1.1 401") and b"Connection: close" in head
        started = time.monotonic()
        with pytest.raises(OSError):
            while True:  # then it stops reading and closes: sending fails
                client.sendall(b"\0" * (1 << 16))
        assert time.monotonic() - started < 10
    assert rss_mb(secured.process.pid) - before < 16


def test_a_body_that_stops_coming_is_a_408_and_the_end_of_the_connection(secured: WebDAV) -> None:
    credentials = base64.b64encode(b"importer:i-pass").decode()
    with socket.create_connection(("127.0.0.1", secured.port)) as client:
        client.sendall(f"PUT /uploads/stalled.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {credentials}\r\n"
                       "Content-Length: 100\r\n\r\n0123456789".encode())
        client.settimeout(30)
        started = time.monotonic()
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"Connection: close" in answer
    assert 5 < time.monotonic() - started < 20  # the server's read timeout


@pytest.fixture
def guarded(orthanc: OrthancServer, tmp_path: Path) -> Iterator[WebDAV]:
    dav = WebDAV(orthanc.url, tmp_path, "--users-file", str(write_users(tmp_path, cost=12)))
    yield dav
    assert dav.stop() == 0


def test_bcrypt_is_paid_once_per_credential(guarded: WebDAV) -> None:
    session = requests.Session()
    session.auth = ("viewer", "v-pass")
    times = []
    for _ in range(6):
        started = time.perf_counter()
        assert session.request("PROPFIND", guarded.url + "/", headers={"Depth": "0"}).status_code == 207
        times.append(time.perf_counter() - started)
    assert times[0] > 0.1 and statistics.median(times[1:]) < 0.05, times


def test_guessing_is_slowed_refused_at_once_and_logged(guarded: WebDAV) -> None:
    # Known and unknown names cost the same (each from its own address: the first failures are free).
    known = [call(guarded, "GET", "/", source=f"127.0.1.{i}", headers=_wrong("viewer"))[3] for i in (1, 2)]
    unknown = [call(guarded, "GET", "/", source=f"127.0.1.{i}", headers=_wrong("nobody"))[3] for i in (3, 4)]
    assert min(unknown) > 0.5 * min(known) and min(known) > 0.1, (known, unknown)
    counts: dict[int, int] = {}
    refusals = []
    session = requests.Session()
    ended = time.monotonic() + 3
    while time.monotonic() < ended:  # guesses on one connection, as fast as they are answered
        answer = session.get(guarded.url + "/", auth=("admin", f"guess{sum(counts.values())}"))
        counts[answer.status_code] = counts.get(answer.status_code, 0) + 1
        if answer.status_code == 429:
            refusals.append(answer.elapsed.total_seconds())
            assert int(answer.headers["Retry-After"]) >= 1
    assert counts.get(401, 0) <= 6 and counts[429] > 100, counts  # 3 free, then 1 s, 2 s... apart
    assert statistics.median(refusals) < 0.02
    with concurrent.futures.ThreadPoolExecutor(16) as pool:  # 16 guessers do not hold the workers
        guesses = [pool.submit(status, guarded, "GET", "/", headers=_wrong("admin")) for _ in range(200)]
        code, _, _, seconds = call(guarded, "PROPFIND", "/", "viewer", source="127.0.1.9", headers={"Depth": "0"})
        assert {guess.result() for guess in guesses} == {429}
    assert code == 207 and seconds < 1.0
    log = guarded.log.read_text()
    assert "login failed: user 'admin' from 127.0.0.1 (wrong password)" in log
    assert "login failed: user 'nobody' from 127.0.1.3 (unknown user)" in log
    assert "guess" not in log and "v-pass" not in log


def _wrong(user: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:wrong".encode()).decode()}


ACCESS_LINE = re.compile(r'^(?P<address>[\d.]+) - (?P<user>\S+) \[[^]]+\] "(?P<request>[^"]*)" (?P<status>\d{3}) '
                         r'(?P<bytes>\d+|-) "[^"]*" "[^"]*" \d+\.\d{3}$')


def test_errors_are_plain_and_every_request_is_in_the_access_log(secured: WebDAV, tmp_path: Path) -> None:
    assert status(secured, "GET", "/by-patients/") == 401
    malformed = {"Authorization": "Basic " + base64.b64encode(b"nocolon").decode()}  # wsgidav answered 500
    assert status(secured, "GET", "/", headers=malformed) == 401
    assert status(secured, "GET", "/uploads/a%00b", "viewer") == 400  # the file system answered 500
    assert status(secured, "GET", "/by-patients/%ff", "viewer") == 400
    assert status(secured, "MOVE", "/uploads/a", "importer", headers={"Destination": "http://[::1"}) == 400
    assert status(secured, "MOVE", "/uploads/a", "importer", headers={"Destination": "/uploads/b%00"}) == 400
    assert status(secured, "PUT", "/uploads/a.txt", "viewer", body=b"x") == 403
    assert status(secured, "PROPFIND", "/", "viewer", headers={"Depth": "0"}) == 207
    wait_for(lambda: len((tmp_path / "access.log").read_text().splitlines()) >= 8, 10, "the access log")
    lines = (tmp_path / "access.log").read_text().splitlines()
    parsed = [ACCESS_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [m["status"] for m in parsed] == ["401", "401", "400", "400", "400", "400", "403", "207"]
    assert parsed[-1]["user"] == "viewer" and parsed[-1]["request"] == "PROPFIND / HTTP/1.1"
    text = "\n".join(lines) + secured.log.read_text()
    assert not any(secret in text for secret in (*PASSWORDS.values(), "Authorization", "bm9jb2xvbg"))
    assert "orthancfs.webdav.access" not in secured.log.read_text()  # with --access-log, only there


def test_kept_connections_answer_in_order_and_are_released(secured: WebDAV) -> None:
    """A worker answers the next request of the connection it has just answered (connections.py,
    KEEP_WARM): pipelined requests come back in order, clients that leave after an answer give their
    connection back (more of them than the per-address limit), and clients taking turns on their
    connections are all answered."""
    auth = "Basic " + base64.b64encode(b"viewer:v-pass").decode()
    head = f"PROPFIND {{}} HTTP/1.1\r\nHost: x\r\nDepth: {{}}\r\nAuthorization: {auth}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", secured.port), timeout=30) as client:
        client.sendall((head.format("/by-patients/", 1) + head.format("/", 0) + head.format("/nowhere/", 0)).encode())
        assert _pipelined_statuses(client, 3) == [207, 207, 404]
    for _ in range(PER_ADDRESS + 8):  # each leaves as soon as it has its answer
        assert status(secured, "PROPFIND", "/", "viewer", source="127.0.2.1", headers={"Depth": "0"}) == 207
    connections = [http.client.HTTPConnection("127.0.0.1", secured.port, timeout=30) for _ in range(20)]
    try:
        for turn in range(3):
            for connection in connections:
                connection.request("PROPFIND", "/by-patients/", headers={"Depth": "1", "Authorization": auth})
                answer = connection.getresponse()
                assert answer.status == 207 and b"multistatus" in answer.read(), turn
    finally:
        for connection in connections:
            connection.close()


def _pipelined_statuses(client: socket.socket, count: int) -> list[int]:
    """The statuses of `count` answers arriving on one connection."""
    return [status for status, _, _ in http_answers(client, count)]
