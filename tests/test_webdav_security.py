"""`orthancfs webdav` as an attacker on the network would try it (issue 16), on loopback, with real clients."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from orthancfs.demo.server import OrthancServer, free_port

from . import uploads_data as data

PASSWORDS = {"viewer": "v-pass", "importer": "i-pass", "importer2": "j-pass", "admin": "a-pass"}
ROLES = {"viewer": "read", "importer": "upload", "importer2": "upload", "admin": "delete"}


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


@pytest.mark.parametrize(("users", "args", "message"), [
    ("", [], "names no user"),
    ("# only comments\n\n", [], "names no user"),
    ("admin:$2b$12$malformed:delete\n", [], "users:1: the password must be a bcrypt hash"),
    ("good", ["--listen", "0.0.0.0:{port}"], "refusing plain http on 0.0.0.0"),
    (None, ["--listen", "0.0.0.0:{port}", "--allow-anonymous"], "refusing plain http on 0.0.0.0"),
    (None, ["--listen", "0.0.0.0:{port}", "--allow-anonymous", "--allow-insecure-http", "--allow-delete"],
     "refusing anonymous deletes on 0.0.0.0"),
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
