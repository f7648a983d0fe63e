"""Who may use the WebDAV export: a users file of bcrypt hashes and roles.

Each line is `name:hash[:role[:digest]]`, as `htpasswd -B` writes it plus an
optional role: `read` (default), `upload` (read, and write into uploads/) or
`delete` (upload, and delete resources when the server allows deletes).  For
clients that need HTTP Digest, an optional fourth field holds the Digest hash
(HA1 = md5 of `name:orthancfs:password`, what `htdigest` stores for realm
orthancfs); users without one can only use Basic.  The file must not be
readable by group or others, like every file that holds secrets here.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

import bcrypt

from ..errors import UsageError

ROLES = ("read", "upload", "delete")
REALM = "orthancfs"


@dataclass(frozen=True)
class User:
    name: str
    password_hash: bytes
    role: str = "read"
    digest_ha1: str | None = None

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def load_users(path: str) -> dict[str, User]:
    try:
        if stat.S_IMODE(os.stat(path).st_mode) & 0o077:
            raise UsageError(f"users file {path} is accessible by group or others; run: chmod 600 {path}")
        lines = open(path, encoding="utf-8").read().splitlines()  # noqa: SIM115 - read at once
    except OSError as exc:
        raise UsageError(f"cannot read users file {path}: {exc.strerror}") from None
    users = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, password_hash, role, digest = (line.split(":") + ["", "", ""])[:4]
        if not name or not password_hash.startswith(("$2a$", "$2b$", "$2y$")):
            raise UsageError(f"{path}:{number}: expected name:bcrypt-hash[:role[:digest]] (htpasswd -B)")
        if (role or "read") not in ROLES:
            raise UsageError(f"{path}:{number}: role must be one of {', '.join(ROLES)}")
        if digest and not re.fullmatch(r"[0-9a-f]{32}", digest):
            raise UsageError(f"{path}:{number}: the digest field must be 32 hex digits (md5 of name:{REALM}:password)")
        users[name] = User(name, password_hash.encode(), role or "read", digest or None)
    return users


def check_password(user: User, password: str) -> bool:
    hashed = user.password_hash.replace(b"$2y$", b"$2b$", 1)  # htpasswd writes 2y; bcrypt reads 2b
    return bcrypt.checkpw(password.encode("utf-8"), hashed)
