"""Who may do what, decided once per request from method, path and role (after authentication).

One place for every method, so that no provider has to remember a check and a new
provider cannot forget one:

- `read`: GET, HEAD, OPTIONS, PROPFIND, anywhere (PROPFIND with Depth 0 or 1);
- `upload`: also PUT, MKCOL, COPY, MOVE, DELETE, LOCK, UNLOCK and PROPPATCH inside
  uploads/ (COPY and MOVE only to somewhere inside it);
- `delete`: also DELETE in the views (when the server allows deletes at all).

PROPPATCH in the views needs the upload role too: it sets a study's labels there (Orthanc 1.12,
--allow-labels), and the views provider refuses any other property.

uploads/ itself can be given properties and unlocked, but not deleted, moved,
overwritten or locked: a lock on the whole drop folder would hold every other
uploader out.  Anything else is refused with 403 (405 for methods nobody has).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import unquote, urlparse

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_FORBIDDEN,
    HTTP_METHOD_NOT_ALLOWED,
    DAVError,
    PRECONDITION_CODE_PropfindFiniteDepth,
)
from wsgidav.mw.base_mw import BaseMiddleware

from .access import role_of
from .users import ROLES

READING = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND"})
WRITING = frozenset({"PUT", "MKCOL", "COPY", "MOVE", "DELETE", "LOCK", "UNLOCK", "PROPPATCH"})
ON_UPLOADS_ITSELF = frozenset({"PROPPATCH", "UNLOCK"})
UPLOADS = "uploads"
ROOT, VIEWS, UPLOADS_FOLDER, IN_UPLOADS = "root", "views", "uploads folder", "in uploads"


def place(path: str) -> str:
    """Which part of the tree a normalized path is in (uploads/ routes case-blind, as in wsgidav)."""
    parts = [part for part in path.split("/") if part]
    if not parts:
        return ROOT
    if parts[0].lower() != UPLOADS:
        return VIEWS
    return UPLOADS_FOLDER if len(parts) == 1 else IN_UPLOADS


def needed_role(method: str, path: str, destination: str | None, prefix: str = "") -> str:
    """The least role that may do `method` on `path`; raises DAVError if no role may."""
    if method in READING:
        return ROLES[0]
    if method not in WRITING:
        raise DAVError(HTTP_METHOD_NOT_ALLOWED, f"{method} is not served here")
    where = place(path)
    if where == IN_UPLOADS or (where == UPLOADS_FOLDER and method in ON_UPLOADS_ITSELF):
        if method in ("COPY", "MOVE") and place(destination_path(destination, prefix)) != IN_UPLOADS:
            raise DAVError(HTTP_FORBIDDEN, f"{method} goes only to somewhere inside uploads/")
        return "upload"
    if where == UPLOADS_FOLDER:
        raise DAVError(HTTP_FORBIDDEN, f"uploads/ itself cannot take {method}; its contents can")
    if method == "DELETE":
        return "delete"
    if method == "PROPPATCH" and where == VIEWS:  # a study's labels, and nothing else (views.py)
        return "upload"
    raise DAVError(HTTP_FORBIDDEN, "the views are read-only; only uploads/ accepts changes")


def destination_path(destination: str | None, prefix: str = "") -> str:
    """The path a Destination header names in the tree, as wsgidav reads it (unquoted, then parsed,
    the server's URL prefix taken off)."""
    if not destination:
        return "/"
    try:
        path = urlparse(unquote(destination), allow_fragments=False).path
    except ValueError:  # e.g. "http://[::1": no URL at all
        raise DAVError(HTTP_BAD_REQUEST, "the Destination is not a URL") from None
    return in_tree(util.normalize_path(path or "/"), prefix)


def in_tree(path: str, prefix: str) -> str:
    """A request path without the server's URL prefix (a path outside it names nothing here)."""
    if not prefix:
        return path
    if path == prefix or path.startswith(prefix + "/"):
        return path[len(prefix):] or "/"
    return "/\0outside"  # nothing in the tree: refused as a view would be


class RoleGate(BaseMiddleware):
    """Refuses (403/405) what the user's role does not allow, before any provider sees it."""

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        prefix = environ["wsgidav.config"].get("mount_path") or ""
        path = in_tree(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), prefix)
        needed = needed_role(method, path, environ.get("HTTP_DESTINATION"), prefix)
        have = role_of(environ)
        if ROLES.index(have) < ROLES.index(needed):
            user = environ.get("wsgidav.auth.user_name") or "anonymous"
            raise DAVError(HTTP_FORBIDDEN, f"{method} here needs the {needed!r} role; {user!r} has {have!r}")
        if method == "PROPFIND" and environ.get("HTTP_DEPTH", "infinity").strip().lower() == "infinity":
            # No Depth means infinity, which would walk the whole PACS: refused, as RFC 4918 allows.
            raise DAVError(HTTP_FORBIDDEN, err_condition=PRECONDITION_CODE_PropfindFiniteDepth)
        return self.next_app(environ, start_response)
