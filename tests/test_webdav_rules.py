"""The WebDAV export's rules without a server."""

from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest

from orthancfs.errors import UsageError
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
