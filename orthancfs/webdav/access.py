"""Roles: what the authenticated WebDAV user may do (read < upload < delete)."""

from __future__ import annotations

from typing import Any

from wsgidav.dav_error import HTTP_FORBIDDEN, DAVError
from wsgidav.dc.base_dc import BaseDomainController

from .users import REALM, ROLES, User, check_password


def users_of(environ: dict) -> dict[str, User]:
    return environ["wsgidav.config"]["orthancfs"]["users"]


def role_of_user(users: dict[str, User], name: str) -> str:
    """The role of `name`; without a users file everyone is anonymous and the server's switches decide
    (anonymous access is loopback-only unless the operator asks for it, and then never with deletes)."""
    if not users:
        return ROLES[-1]
    user = users.get(name)
    return user.role if user else ROLES[0]


def role_of(environ: dict) -> str:
    return role_of_user(users_of(environ), environ.get("wsgidav.auth.user_name") or "")


def require(environ: dict, role: str) -> None:
    """Kept for providers that still check for themselves; policy.RoleGate checks every request first."""
    have = role_of(environ)
    if ROLES.index(have) < ROLES.index(role):
        raise DAVError(HTTP_FORBIDDEN, f"this needs the {role!r} role; {environ.get('wsgidav.auth.user_name')!r} "
                                       f"has {have!r}")


class UsersDomainController(BaseDomainController):
    """HTTP Basic against the users file; no users file means anonymous access."""

    def __init__(self, wsgidav_app: Any, config: dict):
        super().__init__(wsgidav_app, config)
        self.users: dict[str, User] = config["orthancfs"]["users"]

    def get_domain_realm(self, path_info: str, environ: dict) -> str:
        return REALM

    def require_authentication(self, realm: str, environ: dict) -> bool:
        return bool(self.users)

    def basic_auth_user(self, realm: str, user_name: str, password: str, environ: dict) -> bool:
        user = self.users.get(user_name)
        return user is not None and check_password(user, password)

    def supports_http_digest_auth(self) -> bool:
        return any(user.digest_ha1 for user in self.users.values())

    def digest_auth_user(self, realm: str, user_name: str, environ: dict) -> str | bool:
        """The stored HA1 (wsgidav computes the response from it); users without one: Basic only."""
        user = self.users.get(user_name)
        return user.digest_ha1 if user and user.digest_ha1 else False
