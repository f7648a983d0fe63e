"""Logins over HTTP: wsgidav's authenticator and domain controller, on top of Logins.

wsgidav's own Basic handling answered a header without a colon with a 500 (and the
exception in the body), checked bcrypt on every request and logged nothing; Digest
failures were not counted.  Here both go through Logins (throttled, logged, cached),
and a client that must wait is told so at once with 429, never held in a thread.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from wsgidav import util
from wsgidav.dc.base_dc import BaseDomainController
from wsgidav.http_authenticator import HTTPAuthenticator

from .logins import Logins, Throttled
from .users import REALM

TRIED = "orthancfs.auth.tried"  # environ: the user name a Digest login gave
DIGEST_USER = re.compile(r'username="([^"]*)"')
TOO_MANY = b"Too many failed logins: try again later.\n"


class UsersDomainController(BaseDomainController):
    """The users file, through Logins; no users file means anonymous access."""

    def __init__(self, wsgidav_app: Any, config: dict):
        super().__init__(wsgidav_app, config)
        self.logins: Logins = config["orthancfs"]["logins"]

    def get_domain_realm(self, path_info: str, environ: dict) -> str:
        return REALM

    def require_authentication(self, realm: str, environ: dict) -> bool:
        return bool(self.logins.users)

    def basic_auth_user(self, realm: str, user_name: str, password: str, environ: dict) -> bool:
        return self.logins.check_basic(user_name, password.encode("utf-8"), environ.get("REMOTE_ADDR", ""))

    def supports_http_digest_auth(self) -> bool:
        return any(user.digest_ha1 for user in self.logins.users.values())

    def digest_auth_user(self, realm: str, user_name: str, environ: dict) -> str | bool:
        """The stored HA1 (wsgidav computes the response from it); users without one: Basic only."""
        environ[TRIED] = user_name
        return self.logins.digest_ha1(user_name, environ.get("REMOTE_ADDR", "")) or False


class GuardedAuthenticator(HTTPAuthenticator):
    """wsgidav's HTTP authenticator with every login checked by Logins."""

    def __init__(self, wsgidav_app: Any, next_app: Callable, config: dict):
        super().__init__(wsgidav_app, next_app, config)
        self.logins: Logins = config["orthancfs"]["logins"]

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        try:
            return super().__call__(environ, start_response)
        except Throttled as exc:
            start_response("429 Too Many Requests", [
                ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(TOO_MANY))),
                ("Retry-After", str(math.ceil(exc.seconds))), ("Date", util.get_rfc1123_time())])
            return [TOO_MANY]

    def handle_basic_auth_request(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        address = environ.get("REMOTE_ADDR", "")
        credentials = basic_credentials(environ["HTTP_AUTHORIZATION"])
        if credentials is None:
            self.logins.failed(None, address, "malformed Basic credentials")
        elif self.logins.check_basic(*credentials, address):
            environ["wsgidav.auth.realm"] = REALM
            environ["wsgidav.auth.user_name"] = credentials[0]
            return self.next_app(environ, start_response)
        return self.send_basic_auth_response(environ, start_response)

    def handle_digest_auth_request(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        named = DIGEST_USER.search(environ["HTTP_AUTHORIZATION"])  # throttled before wsgidav parses anything
        self.logins.refuse_if_throttled(named[1] if named else None, environ.get("REMOTE_ADDR", ""))
        answer = super().handle_digest_auth_request(environ, start_response)
        if not environ["wsgidav.auth.user_name"]:
            self.logins.failed(environ.get(TRIED), environ.get("REMOTE_ADDR", ""), "Digest response refused")
        return answer


def known_user(logins: Logins, authorization: str) -> str | None:
    """Who sends this Authorization header ("" for anonymous access, where there is no users file)
    if their Basic credentials passed a moment ago; None: the whole stack must judge them."""
    if not logins.users:
        return ""
    credentials = basic_credentials(authorization)
    if credentials is None or not logins.verified(*credentials):
        return None
    return credentials[0]


def basic_credentials(header: str) -> tuple[str, bytes] | None:
    """(name, password) from `Basic base64(name:password)`, or None if it is not that."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
        name, colon, password = decoded.partition(b":")
        return (name.decode("utf-8"), password) if colon and name else None
    except (binascii.Error, UnicodeDecodeError):
        return None
