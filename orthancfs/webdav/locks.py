"""Locks: wsgidav's lock manager with locks that end within the hour and can be broken by `delete`.

wsgidav grants a week when no Timeout is asked for and forever for `Infinite`, and only
the lock's owner may UNLOCK: one forgotten (or hostile) depth-infinity lock on a folder
of uploads/ answered every write there with 423 for days, and nobody could remove it.
Which roles may LOCK at all is policy.py's decision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsgidav.lock_man.lock_manager import LockManager
from wsgidav.lock_man.lock_storage import LockStorageDict

MAX_LOCK_SECONDS = 3600


def capped(timeout: float | None) -> float:
    """A lock's lifetime: what was asked, but at most an hour (no Timeout, or Infinite: an hour)."""
    if timeout is None or timeout < 0 or timeout > MAX_LOCK_SECONDS:
        return MAX_LOCK_SECONDS
    return timeout


class BoundedLockManager(LockManager):
    """In-memory locks; `may_break(user name)` says who may remove locks of others."""

    LOCK_TIME_OUT_DEFAULT = MAX_LOCK_SECONDS

    def __init__(self, may_break: Callable[[str], bool]):
        super().__init__(LockStorageDict())
        self._may_break = may_break

    def acquire(self, *, timeout: float | None, **lock: Any) -> dict:
        return super().acquire(timeout=capped(timeout), **lock)

    def refresh(self, token: str, *, timeout: float | None = None) -> dict:
        return super().refresh(token, timeout=capped(timeout))

    def is_token_locked_by_user(self, token: str, principal: str) -> bool:
        """Asked by UNLOCK only: the owner, or someone who may break locks (if the lock exists)."""
        if super().is_token_locked_by_user(token, principal):
            return True
        return self.get_lock(token) is not None and self._may_break(principal)


def install(app: Any, manager: LockManager) -> None:
    """Give a built WsgiDAVApp (and its providers) this lock manager instead of its own."""
    app.lock_manager = manager
    for provider in app.provider_map.values():
        provider.set_lock_manager(manager)
