"""Roles: what the authenticated WebDAV user may do (read < upload < delete)."""

from __future__ import annotations

from .users import ROLES, User


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


