"""Who may use the WebDAV export: a users file of bcrypt hashes and roles.

Each line is `name:hash[:role[:digest]]`, as `htpasswd -B` writes it plus an
optional role: `read` (default), `upload` (read, and write into uploads/) or
`delete` (upload, and delete resources when the server allows deletes).  For
clients that need HTTP Digest, an optional fourth field holds the Digest hash
(HA1 = md5 of `name:orthancfs:password`, what `htdigest` stores for realm
orthancfs); users without one can only use Basic.  The file must not be
readable by group or others, like every file that holds secrets here.

Everything is checked at start (a hash bcrypt cannot read would otherwise
fail at the first login of that user), and a file that names nobody is
refused: it would leave the export without any way in, or, worse, open.
"""

from __future__ import annotations

import os
import re
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import bcrypt

from ..errors import UsageError

ROLES = ("read", "upload", "delete")
REALM = "orthancfs"
# $2a$/$2b$/$2y$, a two-digit cost, then 22 characters of salt and 31 of hash in bcrypt's base64.
BCRYPT_HASH = re.compile(r"\$2[aby]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{53}")
MIN_COST, MAX_COST = 4, 31  # what bcrypt accepts
NAME = re.compile(r"[^\x00-\x1f\x7f:]+")  # no control characters: names are logged


@dataclass(frozen=True)
class User:
    name: str
    password_hash: bytes
    role: str = "read"
    digest_ha1: str | None = None

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def cost(self) -> int:
        return int(self.password_hash[4:6])


def load_users(path: str) -> dict[str, User]:
    try:
        if stat.S_IMODE(os.stat(path).st_mode) & 0o077:
            raise UsageError(f"users file {path} is accessible by group or others; run: chmod 600 {path}")
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read users file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"users file {path} is not UTF-8") from None
    users: dict[str, User] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user = parse_line(line, f"{path}:{number}")
        if user.name in users:
            raise UsageError(f"{path}:{number}: user {user.name!r} is defined twice")
        users[user.name] = user
    if not users:
        raise UsageError(f"users file {path} names no user (expected name:bcrypt-hash[:role[:digest]] lines)")
    return users


def parse_line(line: str, where: str) -> User:
    name, password_hash, role, digest, *extra = [*line.split(":"), "", "", ""]
    if any(extra) or not NAME.fullmatch(name):
        raise UsageError(f"{where}: expected name:bcrypt-hash[:role[:digest]] (htpasswd -B)")
    found = BCRYPT_HASH.fullmatch(password_hash)
    if not found or not MIN_COST <= int(found["cost"]) <= MAX_COST:
        raise UsageError(f"{where}: the password must be a bcrypt hash, as htpasswd -B writes it")
    if (role or "read") not in ROLES:
        raise UsageError(f"{where}: role must be one of {', '.join(ROLES)}")
    if digest and not re.fullmatch(r"[0-9a-f]{32}", digest):
        raise UsageError(f"{where}: the digest field must be 32 hex digits (md5 of name:{REALM}:password)")
    return User(name, password_hash.encode(), role or "read", digest or None)


def check_password(user: User, password: bytes) -> bool:
    return bcrypt.checkpw(password, _readable(user.password_hash))


def _readable(password_hash: bytes) -> bytes:
    return password_hash.replace(b"$2y$", b"$2b$", 1)  # htpasswd writes 2y; bcrypt reads 2b


def stand_in_hash(users: dict[str, User]) -> bytes:
    """A hash of the cost most users have: checking a password against it for a name nobody has
    costs what a real check costs, so the time of an answer does not tell which names exist."""
    costs = Counter(user.cost for user in users.values())
    cost = max(costs, key=lambda c: (costs[c], c)) if costs else 12
    return bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(cost))
