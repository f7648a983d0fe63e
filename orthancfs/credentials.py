"""Where secrets come from: never the command line.

In order: a private file named by password_file/token_file, systemd's
LoadCredential= ($CREDENTIALS_DIRECTORY/password, .../token), the environment
(ORTHANCFS_PASSWORD, ORTHANCFS_TOKEN), then ~/.netrc for the server's host.
"""

from __future__ import annotations

import netrc
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import UsageError


@dataclass(frozen=True)
class Credentials:
    user: str | None = None
    password: str | None = None
    token: str | None = None

    def __repr__(self) -> str:  # never print a secret, not even in a traceback
        return f"Credentials(user={self.user!r}, password={'***' if self.password else None}, " \
               f"token={'***' if self.token else None})"


def read_private_file(path: str, what: str) -> str:
    """The first line of a file only its owner can read, or UsageError saying why not."""
    try:
        info = os.stat(path)
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise UsageError(f"{what} file {path} is accessible by group or others; run: chmod 600 {path}")
        with open(path, encoding="utf-8") as file:
            return file.readline().rstrip("\r\n")
    except OSError as exc:
        raise UsageError(f"cannot read {what} file {path}: {exc.strerror}") from None


def find_credentials(*, url: str, user: str | None, password_file: str | None, token_file: str | None,
                     environ: Mapping[str, str]) -> Credentials:
    token = _secret("token", token_file, environ)
    password = _secret("password", password_file, environ)
    if password is None and token is None:
        user, password = _from_netrc(url, user, environ)
    if password is not None and not user:
        # -o user= is mount(8)'s own option, which it keeps from us: say which spelling works.
        raise UsageError("a password was given but no user (set --user, -o username= in fstab, "
                         "user = in the config file, or ORTHANCFS_USER)")
    return Credentials(user, password, token)


def _secret(kind: str, named_file: str | None, environ: Mapping[str, str]) -> str | None:
    if named_file:
        return read_private_file(named_file, kind)
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if directory and (Path(directory) / kind).is_file():
        return read_private_file(str(Path(directory) / kind), kind)
    return environ.get(f"ORTHANCFS_{kind.upper()}")


def _from_netrc(url: str, user: str | None, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    path = Path(environ.get("NETRC") or Path(environ.get("HOME") or os.path.expanduser("~")) / ".netrc")
    if not path.is_file():
        return user, None
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise UsageError(f"{path} is accessible by group or others; run: chmod 600 {path}")
    try:
        found = netrc.netrc(str(path)).authenticators(urlsplit(url).hostname or "")
    except (netrc.NetrcParseError, OSError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    if found is None or (user and found[0] and found[0] != user):
        return user, None
    return user or found[0], found[2]
