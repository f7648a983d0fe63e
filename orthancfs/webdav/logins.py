"""Checking a login: throttled, logged, the same work for every name, bcrypt once per credential.

bcrypt is slow on purpose (0.25-0.36 s at cost 12): paid on every request, as WebDAV
clients send Basic credentials with each one, it made every request that slow and let
a few clients with wrong passwords hold up everyone.  A credential that passed is
remembered for a few minutes under a keyed hash (HMAC with a key made at start and
never stored), so neither the password nor anything that can be checked against it
offline is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from collections.abc import Callable

import bcrypt
from cachetools import TTLCache

from .throttle import LOCKOUT_SECONDS, Throttle
from .users import User, check_password, stand_in_hash

log = logging.getLogger(__name__)

VERIFIED_SECONDS = 300.0
VERIFIED_KEPT = 1024
BCRYPT_MAX = 72  # bytes bcrypt reads of a password (htpasswd hashes no more of it)


class Throttled(Exception):
    """Too many failures from this address or for this name: try again in `seconds`."""

    def __init__(self, seconds: float):
        super().__init__(f"retry in {seconds:.0f} s")
        self.seconds = seconds


class Logins:
    """The users file's credentials, checked for Basic and Digest logins."""

    def __init__(self, users: dict[str, User], clock: Callable[[], float] = time.monotonic):
        self.users = users
        self.throttle = Throttle(clock)
        self._key = secrets.token_bytes(32)
        self._verified: TTLCache = TTLCache(VERIFIED_KEPT, VERIFIED_SECONDS, timer=clock)
        self._lock = threading.Lock()
        self._stand_in = stand_in_hash(users) if users else b""

    def check_basic(self, name: str, password: bytes, address: str) -> bool:
        """Whether `name` has this password; raises Throttled (before any check) while it must wait.

        A credential verified a moment ago passes even then: it was right before the
        failures began, and the user it belongs to should not be locked out by them."""
        if self.verified(name, password):
            return True
        self.refuse_if_throttled(name, address)
        user = self.users.get(name)
        if _matches(user, password[:BCRYPT_MAX], self._stand_in):
            with self._lock:
                self._verified[self._token(name, password)] = True
            self.throttle.succeeded(_address_key(address))
            return True
        self.failed(name, address, "wrong password" if user else "unknown user")
        return False

    def verified(self, name: str, password: bytes) -> bool:
        """Whether this credential passed a moment ago (nothing counted, nothing checked anew)."""
        token = self._token(name, password)
        with self._lock:
            return bool(self._verified.get(token))

    def _token(self, name: str, password: bytes) -> bytes:
        return hmac.digest(self._key, name.encode("utf-8", "surrogateescape") + b"\0" + password, hashlib.sha256)

    def digest_ha1(self, name: str, address: str) -> str | None:
        """The Digest hash of `name` (None: no Digest for that name); raises Throttled."""
        self.refuse_if_throttled(name, address)
        user = self.users.get(name)
        return user.digest_ha1 if user else None

    def refuse_if_throttled(self, name: str | None, address: str) -> None:
        wait = self.throttle.wait(_keys(name, address))
        if wait > 0:
            raise Throttled(wait)

    def failed(self, name: str | None, address: str, why: str) -> None:
        """Count and log a failed login (never its password); `name` None: none could be read."""
        wait = self.throttle.failed(_keys(name, address))
        who = "no user name" if name is None else f"user {name!r}"  # repr: a name cannot forge log lines
        log.warning("login failed: %s from %s (%s)", who, address, why)
        if wait >= LOCKOUT_SECONDS:
            log.warning("too many failed logins (%s, or from %s): refused for %.0f s", who, address, wait)


def _matches(user: User | None, password: bytes, stand_in: bytes) -> bool:
    if user is None:
        bcrypt.checkpw(password, stand_in)  # the same work as for a real name, result ignored
        return False
    return check_password(user, password)


def _keys(name: str | None, address: str) -> tuple[str, ...]:
    return (_address_key(address),) if name is None else (_address_key(address), f"user {name}")


def _address_key(address: str) -> str:
    """An IPv4 address, or the /64 of an IPv6 one (one host can have all of its addresses)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"address {address}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return f"address {ip.ipv4_mapped}"
        return f"address {ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"address {ip}"
