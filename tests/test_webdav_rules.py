"""The WebDAV export's rules without a server: users file, roles, throttling, bodies, paths, logs, locks."""

from __future__ import annotations

import gc
import logging
import socket
from pathlib import Path
from urllib.parse import quote

import bcrypt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsgidav.dav_error import DAVError

from orthancfs.errors import UsageError
from orthancfs.webdav import bodies, connections, error_pages, locks, policy, throttle
from orthancfs.webdav.access_log import SAFE, escaped
from orthancfs.webdav.auth import basic_credentials
from orthancfs.webdav.logins import Logins, Throttled
from orthancfs.webdav.paths import destination_problem, path_problem
from orthancfs.webdav.quoting import quoted
from orthancfs.webdav.users import load_users
from orthancfs.webdav.views import HREF_SAFE

HASH = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()


def write_users(tmp_path: Path, text: str) -> str:
    path = tmp_path / "users"
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


@pytest.mark.parametrize(("text", "message"), [
    ("", "names no user"),
    ("# nobody yet\n\n   \n", "names no user"),
    ("alice:$2y$05$tooshort\n", ":1: the password must be a bcrypt hash"),
    ("alice:secret\n", ":1: the password must be a bcrypt hash"),
    (f"# ok\nalice:{HASH}:admin\n", ":2: role must be one of"),
    (f"alice:{HASH}\nalice:{HASH}:upload\n", ":2: user 'alice' is defined twice"),
    (f"alice:{HASH}:read:nothex\n", ":1: the digest field"),
    (f"al\x01ice:{HASH}\n", ":1: expected name:bcrypt-hash"),
    (f"alice:{HASH}:read::extra\n", ":1: expected name:bcrypt-hash"),
])
def test_a_users_file_that_lets_nobody_in_properly_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = write_users(tmp_path, text)
    with pytest.raises(UsageError, match=message) as caught:
        load_users(path)
    assert path in str(caught.value)


def test_a_good_users_file(tmp_path: Path) -> None:
    users = load_users(write_users(tmp_path, f"# team\nalice:{HASH}\nbob:{HASH.replace('$2b$', '$2y$')}:delete\n"))
    assert {name: user.role for name, user in users.items()} == {"alice": "read", "bob": "delete"}
    assert users["bob"].cost == 4


@pytest.mark.parametrize(("method", "path", "destination", "role"), [
    ("GET", "/by-patients/x", None, "read"),
    ("PROPFIND", "/uploads/", None, "read"),
    ("OPTIONS", "*", None, "read"),
    ("PUT", "/uploads/a.dcm", None, "upload"),
    ("PUT", "/Uploads/a.dcm", None, "upload"),  # wsgidav routes shares case-blind
    ("MKCOL", "/uploads/d/", None, "upload"),
    ("LOCK", "/uploads/d/", None, "upload"),
    ("UNLOCK", "/uploads/", None, "upload"),
    ("PROPPATCH", "/uploads/", None, "upload"),
    ("MOVE", "/uploads/a", "http://h/uploads/b", "upload"),
    ("COPY", "/uploads/a", "/uploads/d/a", "upload"),
    ("DELETE", "/uploads/a", None, "upload"),
    ("DELETE", "/by-uids/1.2.3/", None, "delete"),
    ("PROPPATCH", "/by-uids/1.2/", None, "upload"),  # a study's labels (the views provider refuses the rest)
])
def test_the_role_each_request_needs(method: str, path: str, destination: str | None, role: str) -> None:
    assert policy.needed_role(method, path, destination) == role


@pytest.mark.parametrize(("method", "path", "destination", "status"), [
    ("PUT", "/by-patients/x.dcm", None, 403),
    ("LOCK", "/", None, 403),
    ("LOCK", "/uploads/", None, 403),
    ("PROPPATCH", "/", None, 403),
    ("DELETE", "/uploads/", None, 403),
    ("MOVE", "/uploads/", "/uploads/x/", 403),
    ("MOVE", "/uploads/a", "/by-patients/a", 403),
    ("MOVE", "/uploads/a/", "/uploads/", 403),  # would replace uploads/ itself
    ("COPY", "/by-uids/1.2/", "/uploads/x/", 403),
    ("COPY", "/uploads/a", "http://[::1", 400),
    ("POST", "/uploads/", None, 405),
    ("TRACE", "/", None, 405),
])
def test_what_no_role_may_do(method: str, path: str, destination: str | None, status: int) -> None:
    with pytest.raises(DAVError) as refused:
        policy.needed_role(method, path, destination)
    assert refused.value.value == status


def test_the_wait_grows_then_locks_out_then_is_forgotten() -> None:
    now = [1000.0]
    gate = throttle.Throttle(lambda: now[0])
    waits = [gate.failed(["a"]) for _ in range(11)]
    assert waits == [0, 0, 0, 1, 2, 4, 8, 16, 32, throttle.LOCKOUT_SECONDS, throttle.LOCKOUT_SECONDS]
    assert gate.wait(["b", "a"]) == throttle.LOCKOUT_SECONDS and gate.wait(["b"]) == 0
    now[0] += throttle.LOCKOUT_SECONDS + 1
    assert gate.wait(["a"]) == 0 and gate.failed(["a"]) == 0  # forgotten: a fresh start
    gate.succeeded("a")
    assert gate.wait(["a"]) == 0


@pytest.mark.allow_warnings
def test_logins_are_throttled_cached_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    logins = Logins(load_users(write_users(tmp_path, f"alice:{HASH}:upload\n")), clock=lambda: now[0])
    assert logins.check_basic("alice", b"secret", "10.0.0.1")
    for _ in range(throttle.FREE_FAILURES):
        assert not logins.check_basic("alice", b"guess", "10.0.0.2")
    assert not logins.check_basic("mallory", b"guess", "10.0.0.2")
    with pytest.raises(Throttled) as throttled:
        logins.check_basic("mallory", b"secret", "10.0.0.2")  # not even checked while it must wait
    assert throttled.value.seconds == 1
    assert logins.check_basic("alice", b"secret", "10.0.0.2")  # verified before the failures: passes
    now[0] += throttle.FIRST_WAIT
    assert logins.check_basic("alice", b"x" * 100 + b"secret", "10.0.0.2") is False  # longer than bcrypt reads
    messages = [r.getMessage() for r in caplog.records if r.name == "orthancfs.webdav.logins"]
    assert "login failed: user 'alice' from 10.0.0.2 (wrong password)" in messages
    assert "login failed: user 'mallory' from 10.0.0.2 (unknown user)" in messages
    assert not any("guess" in message or "secret" in message for message in messages)


@pytest.mark.allow_warnings
def test_guesses_at_one_name_from_many_addresses_hold_that_name_only(tmp_path: Path) -> None:
    """A name guessed at from address after address waits everywhere, the right password from a
    fresh address included (it was never verified before the failures); other names from that
    address are not held, and the wait ends."""
    now = [0.0]
    users = load_users(write_users(tmp_path, f"alice:{HASH}:upload\nbob:{HASH}:read\n"))
    logins = Logins(users, clock=lambda: now[0])
    for n in range(throttle.FREE_FAILURES + 1):  # each address fails once: within its own free failures
        assert not logins.check_basic("alice", b"guess", f"10.0.1.{n}")
    with pytest.raises(Throttled) as throttled:
        logins.check_basic("alice", b"secret", "10.0.9.9")
    assert throttled.value.seconds == throttle.FIRST_WAIT
    assert logins.check_basic("bob", b"secret", "10.0.9.9")  # the address itself is not held
    now[0] += throttle.FIRST_WAIT
    assert logins.check_basic("alice", b"secret", "10.0.9.9")


@pytest.mark.allow_warnings
def test_an_ipv6_host_is_throttled_as_one_address(tmp_path: Path) -> None:
    logins = Logins(load_users(write_users(tmp_path, f"alice:{HASH}\n")))
    for host in range(throttle.FREE_FAILURES + 1):
        logins.failed(None, f"2001:db8::{host + 1}", "test")
    with pytest.raises(Throttled):
        logins.refuse_if_throttled("alice", "2001:db8::ffff")
    logins.refuse_if_throttled("alice", "2001:db8:0:1::1")  # another /64





@pytest.mark.parametrize(("header", "expected"), [
    ("Basic YWxpY2U6czNjcjN0", ("alice", b"s3cr3t")),
    ("basic YWxpY2U6YTpi", ("alice", b"a:b")),
    ("Basic YWxpY2U=", None),  # no colon: wsgidav answered 500
    ("Basic %%%", None),
    ("Basic OnBhc3M=", None),  # no name
    ("Basic /w==", None),  # not UTF-8
    ("Bearer abc", None),
])
def test_basic_credentials_are_read_strictly(header: str, expected: tuple | None) -> None:
    assert basic_credentials(header) == expected


@pytest.mark.parametrize(("body", "status"), [
    (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><D:propfind xmlns:D="DAV:">&a;</D:propfind>', 400),
    (b'<!DOCTYPE x SYSTEM "http://example.invalid/x.dtd"><D:propfind xmlns:D="DAV:"/>', 400),
    (b'<D:propfind xmlns:D="DAV:"><D:prop>' + b"<a>" * 40 + b"</a>" * 40 + b"</D:prop></D:propfind>", 400),
    (b"<not xml", 400),
])
def test_xml_bodies_must_be_plain_and_shallow(body: bytes, status: int) -> None:
    with pytest.raises(DAVError) as refused:
        bodies.parse_xml(body)
    assert refused.value.value == status


def test_a_plain_xml_body_parses() -> None:
    assert bodies.parse_xml(b'<D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>').tag == "{DAV:}propfind"


@pytest.mark.parametrize(("path", "problem"), [
    ("/uploads/a.dcm", None),
    ("/by-patients/M\xc3\xbcller/", None),  # UTF-8 bytes, as WSGI hands them over (latin-1)
    ("/uploads/a\x00b", "control character"),
    ("/uploads/a\nb", "control character"),
    ("/\xff", "not UTF-8"),
])
def test_paths_that_name_nothing(path: str, problem: str | None) -> None:
    found = path_problem(path)
    assert found == problem if problem is None else problem in found


def test_destinations_that_name_nothing() -> None:
    assert destination_problem(None) is None and destination_problem("http://h/uploads/b%C3%BC") is None
    assert "control" in destination_problem("http://h/uploads/a%00b")
    assert "UTF-8" in destination_problem("http://h/uploads/%ff")


def test_log_lines_cannot_be_forged() -> None:
    assert escaped('GET /a"b\\c\r\n127.0.0.1 - admin') == 'GET /a\\"b\\\\c\\x0d\\x0a127.0.0.1 - admin'
    assert escaped("m\u00fcller", "utf-8") == "m\\xc3\\xbcller"
    for char in map(chr, range(0x180)):  # plain text is written as it is: exactly what escaping it gives
        assert escaped(f"a{char}b") == "".join(SAFE.get(byte) or f"\\x{byte:02x}"
                                              for byte in f"a{char}b".encode("latin-1", "backslashreplace"))


def test_locks_last_an_hour_at_most_and_delete_may_break_them() -> None:
    assert [locks.capped(t) for t in (None, -1, 60, 10**9)] == [3600, 3600, 60, 3600]
    manager = locks.BoundedLockManager(lambda name: name == "admin")
    lock = manager.acquire(url="/uploads/a", lock_type="write", lock_scope="exclusive", lock_depth="infinity",
                           lock_owner=b"", timeout=-1, principal="alice", token_list=[])
    assert lock["timeout"] == 3600
    assert manager.refresh(lock["token"], timeout=None)["timeout"] == 3600
    assert manager.is_token_locked_by_user(lock["token"], "alice")
    assert manager.is_token_locked_by_user(lock["token"], "admin")
    assert not manager.is_token_locked_by_user(lock["token"], "bob")
    assert not manager.is_token_locked_by_user("opaquelocktoken:none", "admin")


def crash(environ: dict, start_response: object) -> list[bytes]:
    raise RuntimeError("secret detail /etc/orthancfs")


@pytest.mark.allow_warnings
def test_a_500_says_nothing_of_the_exception_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    app = error_pages.ErrorPages(None, crash, {})
    seen = {}
    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"}, lambda s, h, e=None: seen.update(status=s)))
    assert seen["status"] == "500 Internal Server Error"
    assert b"secret" not in body and b"RuntimeError" not in body
    [record] = [r for r in caplog.records if r.name == "orthancfs.webdav.error_pages"]
    assert record.levelno == logging.ERROR and record.exc_info[0] is RuntimeError


class _Server:
    timeout = 10.0
    peercreds_enabled = peercreds_resolve_enabled = False

    def __init__(self) -> None:
        self.released: list[str] = []

    def release(self, address: str) -> None:
        self.released.append(address)


def test_a_closed_connection_leaves_nothing_to_flush() -> None:
    """What could not be sent is dropped at close: Python 3.13 reports a flush onto the closed socket
    when the writer is collected (issue 22)."""
    ours, theirs = socket.socketpair()
    server = _Server()
    conn = connections.GuardedConnection(server, ours, ("127.0.0.1", 1))  # type: ignore[arg-type]
    theirs.close()
    with pytest.raises(OSError):
        for _ in range(64):  # until the dead peer makes a write fail, leaving bytes in the buffer
            conn.wfile.write(b"x" * (connections.DIRECT - 1))  # (larger writes are sent unbuffered)
    assert conn.wfile._write_buf
    conn.close()
    conn.close()
    assert conn.wfile.closed and not conn.wfile._write_buf and server.released == ["127.0.0.1"]
    del conn
    gc.collect()


def test_an_answer_leaves_in_order_its_head_with_its_first_piece() -> None:
    """The writer holds the head for the body's first piece, sends large pieces without copying them
    into its buffer, and sends a head without a body at the end of the answer."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        conn = connections.GuardedConnection(_Server(), ours, ("127.0.0.1", 1))  # type: ignore[arg-type]
        writer = conn.wfile
        writer.hold()
        writer.write(b"HEAD\r\n\r\n")
        theirs.settimeout(0.2)
        with pytest.raises(TimeoutError):
            theirs.recv(100)  # held
        body = bytes(range(256)) * (connections.DIRECT // 128)
        writer.write(body)
        writer.write(b"tail")
        assert not writer._write_buf
        wanted = b"HEAD\r\n\r\n" + body + b"tail"
        received = b""
        while len(received) < len(wanted):
            received += theirs.recv(1 << 16)
        assert received == wanted and writer.bytes_written == len(wanted)
        writer.hold()
        writer.write(b"204 HEAD ONLY")
        writer.release()
        assert theirs.recv(100) == b"204 HEAD ONLY"


def test_head_lines_are_read_from_what_came_ahead() -> None:
    """cheroot reads a head line by line: from what the accepting thread read ahead, then from the socket."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        reader = connections.AheadReader(ours, timeout=5.0)
        reader.raw.add(b"PROPFIND / HTTP/1.1\r\nHost: x\r\nDep")
        assert reader.readline() == b"PROPFIND / HTTP/1.1\r\n"
        assert reader.readline(4) == b"Host"
        assert reader.readline() == b": x\r\n"
        theirs.sendall(b"th: 1\r\n\r\nbody")
        assert reader.readline() == b"Depth: 1\r\n"  # the line goes on beyond what came ahead
        assert reader.readline() == b"\r\n" and reader.read(4) == b"body"


def test_a_request_head_is_complete_only_with_its_blank_line() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        io = connections.AheadIO(ours, 10.0)
        assert not io.add(b"\r\n") and not io.add(b"GET / HTTP/1.1\r\nHost: x\r\n")
        assert io.add(b"\r\n")
        io = connections.AheadIO(ours, 10.0)
        assert io.add(b"\r\n\r\n\r\n")  # blank lines only: cheroot refuses that without waiting


def test_allprop_members_are_written_as_their_resources_would_be(tmp_path: Path) -> None:
    """propfind.py writes an allprop's members from their nodes: the same text as from their resources."""
    from orthancfs.demo.samples import Spec, make_dicom
    from orthancfs.webdav.propfind import ALL, allprop_response, response
    from orthancfs.webdav.server import PrefixedDAVApp, wsgidav_config
    from orthancfs.webdav.views import TreeFolder

    from .fake_orthanc import FakeOrthanc
    from .trees import tree_of

    with FakeOrthanc() as fake, tree_of(fake, tmp_path, metadata_ttl=60) as tree:
        fake.add(make_dicom(Spec("T&J", "Tom & <Jerry>", "1.2.3", "1.2.3.4", study_description="A:B*")),
                 make_dicom(Spec("Q(1),$ 100%", "Ünïcode^Zoë", "1.2.5", "1.2.5.6", modality="MR")))
        provider = PrefixedDAVApp(wsgidav_config(tree, {}, Logins({}), True, False)).provider_map["/"]
        folders, members = ["/"], 0
        while folders:
            folder = provider.get_resource_inst(folders.pop(), {"wsgidav.provider": provider})
            if not isinstance(folder, TreeFolder):
                continue
            for (href, name, node), member in zip(folder.listed(), folder.iter_members(), strict=True):
                assert allprop_response(tree, href, name, node) == response(member, ALL)
                members += 1
                if node.is_dir:
                    folders.append(member.path)
        assert members > 30


@pytest.mark.parametrize("prefix", ["", "/webdav"])
def test_a_folder_asked_for_without_its_slash_is_redirected_to_its_full_path(tmp_path: Path, prefix: str) -> None:
    """The directory browser's 301 keeps --prefix and the uploads/ share (wsgidav's lost both)."""
    from orthancfs.webdav.server import webdav_app

    from .behaviour.webdav_frontend import environ_for
    from .fake_orthanc import FakeOrthanc
    from .trees import tree_of

    def location(app: object, path: str) -> str | None:
        started: dict = {}

        def start_response(status: str, headers: list, exc_info: object = None) -> object:
            started.update(status=status, headers=dict(headers))
            return lambda data: None

        list(app(environ_for("GET", prefix + path, b"", {}), start_response))  # type: ignore[operator]
        assert started["status"].startswith("301"), (path, started)
        return started["headers"].get("Location")

    with FakeOrthanc() as fake, tree_of(fake, tmp_path) as tree:
        tree.mkdir(tree.resolve("uploads"), "CD 1")
        app = webdav_app(tree, users={}, windows_names=True, debug=False, prefix=prefix)
        for path, wanted in (("/by-patients", "/by-patients/"), ("/uploads", "/uploads/"),
                             ("/uploads/CD 1", "/uploads/CD%201/")):
            assert location(app, path) == prefix + wanted


@pytest.mark.allow_warnings
def test_browsing_skips_wsgidav_only_for_credentials_it_has_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """fast_path.py answers a views PROPFIND of a user whose Basic credentials passed a moment ago, with
    wsgidav's answer; anything else (first or wrong credentials, Digest, If, bad bodies, infinity)
    goes through wsgidav, and a wrong password is counted once."""
    import base64

    from orthancfs.demo.samples import Spec, make_dicom
    from orthancfs.webdav import propfind
    from orthancfs.webdav.server import webdav_app

    from .behaviour.webdav_frontend import environ_for
    from .fake_orthanc import FakeOrthanc
    from .trees import tree_of

    through_wsgidav = []
    wsgidav_propfind = propfind.ViewsPropfind.__call__
    monkeypatch.setattr(propfind.ViewsPropfind, "__call__", lambda self, environ, start: (
        through_wsgidav.append(environ["PATH_INFO"]), wsgidav_propfind(self, environ, start))[1])

    def ask(app: object, password: str, path: str, body: bytes = b"", **headers: str) -> tuple[str, list, bytes]:
        started: dict = {}

        def start_response(status: str, header_list: list, exc_info: object = None) -> object:
            started.update(status=status, headers=sorted(name for name, _ in header_list if name != "Date"))
            return lambda data: None
        credentials = base64.b64encode(f"ann:{password}".encode()).decode()
        environ = environ_for("PROPFIND", path, body, {"Authorization": f"Basic {credentials}", **headers})
        answer = b"".join(app(environ, start_response))  # type: ignore[operator]
        return started["status"], started["headers"], answer

    named = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:O="http://orthancfs.invalid/ns"><D:prop>'
             b"<D:getetag/><D:displayname/><O:labels/><D:nothing/></D:prop></D:propfind>")
    users = load_users(write_users(tmp_path, f"ann:{HASH}:read\n"))
    with FakeOrthanc() as fake, tree_of(fake, tmp_path, metadata_ttl=60) as tree:
        fake.add(make_dicom(Spec("P1", "Ann^Lee", "1.2.3", "1.2.3.4")))
        asked = (("/by-patients/", "1", b""), ("/by-uids/1.2.3", "1", named), ("/by-studies", "0", b""))
        for path, depth, body in asked:
            app = webdav_app(tree, users=users, windows_names=False, debug=False)
            through_wsgidav.clear()
            first = ask(app, "secret", path, body, Depth=depth)
            again = ask(app, "secret", path, body, Depth=depth)
            assert first[0].startswith("207") and first == again, path
            assert len(through_wsgidav) == 1, through_wsgidav  # the first: the credentials were new
        through_wsgidav.clear()
        assert ask(app, "wrong", "/by-patients/", Depth="1")[0].startswith("401")
        assert ask(app, "secret", "/by-patients/", Depth="infinity")[0].startswith("403")
        assert ask(app, "secret", "/by-patients/", b"<D:propfind", Depth="1")[0].startswith("400")
        assert ask(app, "secret", "/by-patients/", Depth="1", If="(<urn:x>)")[0][:3] in ("207", "412")
        assert ask(app, "secret", "/by-patients/nobody/", Depth="1")[0].startswith("404")
        # 401, 403 and 400 are answered before wsgidav reaches its PROPFIND of the views
        assert through_wsgidav == ["/by-patients", "/by-patients/nobody"]
    assert [r.getMessage() for r in caplog.records if "login failed" in r.getMessage()] == [
        "login failed: user 'ann' from 127.0.0.1 (wrong password)"]


def test_kept_answers_are_served_only_while_the_tree_is_unchanged(tmp_path: Path) -> None:
    """fast_path.py serves an answer it wrote again while the tree's stamp stays: a change found
    (here by the follower's invalidation of new patients) shows in the next PROPFIND."""
    from orthancfs.demo.samples import Spec, make_dicom
    from orthancfs.orthanc import Level
    from orthancfs.tree.follower import Invalidation
    from orthancfs.webdav.server import webdav_app

    from .behaviour.webdav_frontend import entries, environ_for
    from .fake_orthanc import FakeOrthanc
    from .trees import tree_of

    def patients(app: object) -> set[str]:
        answer = b"".join(app(environ_for("PROPFIND", "/by-patients/", b"", {"Depth": "1"}),  # type: ignore[operator]
                              lambda status, headers, exc_info=None: None))
        return {path for path in entries(answer) if path != "by-patients"}

    with FakeOrthanc() as fake, tree_of(fake, tmp_path, metadata_ttl=60) as tree:
        fake.add(make_dicom(Spec("P1", "Ann^Lee", "1.2.3", "1.2.3.4")))
        app = webdav_app(tree, users={}, windows_names=False, debug=False)
        first = patients(app)
        assert len(first) == 1 and patients(app) == first
        fake.add(make_dicom(Spec("P2", "Bo^Lee", "1.2.5", "1.2.5.6")))
        assert patients(app) == first  # within the metadata TTL, nothing said it changed
        tree.changed_elsewhere(Invalidation(added={Level.PATIENTS}))
        assert len(patients(app)) == 2


def test_kept_answers_stay_within_their_budget() -> None:
    from orthancfs.webdav.fast_path import ENTRY_OVERHEAD, KeptAnswers

    entry = 100 + 3 + ENTRY_OVERHEAD  # the answer, the key's ("/", "NN"), the bookkeeping
    kept = KeptAnswers(budget=8 * entry)
    for n in range(20):
        kept.keep(("/", f"{n:02d}"), 7, [b"x" * 50, b"y" * 50])
    assert kept.get(("/", "19"), 7) == [b"x" * 50, b"y" * 50] and kept.get(("/", "19"), 8) is None
    assert kept.get(("/", "00"), 7) is None  # the least recently used went first
    assert sum(kept.get(("/", f"{n:02d}"), 7) is not None for n in range(20)) == 8
    kept.keep(("/", "huge"), 7, [b"z" * 101])  # more than an eighth of the budget: never kept
    assert kept.get(("/", "huge"), 7) is None and kept.get(("/", "07"), None) is None
    kept.keep(("/", "p" * 4 * entry), 7, [b"tiny"])  # a long path counts too
    assert kept.get(("/", "p" * 4 * entry), 7) is None


@pytest.mark.allow_warnings
def test_a_failed_answer_is_not_asked_for_again_by_wsgidav(tmp_path: Path) -> None:
    """When the fast path fails (Orthanc answers 500), wsgidav writes the error page from that failure
    instead of asking Orthanc again: one request, one wait."""
    from orthancfs.demo.samples import Spec, make_dicom
    from orthancfs.webdav.server import webdav_app

    from .behaviour.webdav_frontend import environ_for
    from .fake_orthanc import FakeOrthanc
    from .trees import tree_of

    with FakeOrthanc() as fake, tree_of(fake, tmp_path, metadata_ttl=60) as tree:
        fake.add(make_dicom(Spec("P1", "Ann^Lee", "1.2.3", "1.2.3.4")))
        app = webdav_app(tree, users={}, windows_names=False, debug=False)
        started: dict = {}
        app(environ_for("PROPFIND", "/", b"", {"Depth": "1"}), lambda status, headers, exc_info=None: None)
        fake.faults.fail(500)
        answer = b"".join(app(environ_for("PROPFIND", "/by-patients/", b"", {"Depth": "1"}),  # type: ignore[operator]
                              lambda status, headers, exc_info=None: started.update(status=status)))
        assert started["status"][:1] == "5" and b"Traceback" not in answer
        assert fake.faults.failed == 1


@given(st.text(st.characters(max_codepoint=0x7F)) | st.text())
@pytest.mark.parametrize("safe", ["", HREF_SAFE])
def test_hrefs_quote_names_exactly_as_urllib_does(safe: str, name: str) -> None:
    """Member hrefs quote names with quoting.py's fast path for ASCII: byte for byte quote()'s answer."""
    assert quoted(name, safe) == quote(name, safe=safe)
