"""The WebDAV export's rules without a server."""

from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest
from wsgidav.dav_error import DAVError

from orthancfs.errors import UsageError
from orthancfs.webdav import bodies, locks, policy
from orthancfs.webdav.users import load_users

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
])
def test_the_role_each_request_needs(method: str, path: str, destination: str | None, role: str) -> None:
    assert policy.needed_role(method, path, destination) == role


@pytest.mark.parametrize(("method", "path", "destination", "status"), [
    ("PUT", "/by-patients/x.dcm", None, 403),
    ("LOCK", "/", None, 403),
    ("LOCK", "/uploads/", None, 403),
    ("PROPPATCH", "/by-uids/1.2/", None, 403),
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
