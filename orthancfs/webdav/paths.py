"""Request paths that name nothing are answered 400 before WebDAV sees them.

A NUL (`/uploads/a%00b`) reached the file system and came back as a 500; a path that
is not UTF-8 made wsgidav's re-encoding raise before any error handling.  Control
characters name no file a client could show, so they are refused too, in the path
and in the Destination of COPY and MOVE.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from urllib.parse import unquote

CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def path_problem(path: str) -> str | None:
    """Why a WSGI PATH_INFO (bytes as latin-1) names nothing, or None."""
    try:
        text = path.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return "the path is not UTF-8"
    return "the path holds a control character" if CONTROL.search(text) else None


def destination_problem(destination: str | None) -> str | None:
    if destination is None:
        return None
    try:
        text = unquote(destination.encode("latin-1").decode("utf-8"), errors="strict")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return "the Destination is not UTF-8"
    return "the Destination holds a control character" if CONTROL.search(text) else None


def checked_paths(app: Callable) -> Callable:
    """WSGI middleware: 400 for a path or Destination that names nothing."""
    def middleware(environ: dict, start_response: Callable) -> Iterable[bytes]:
        problem = path_problem(environ.get("PATH_INFO", "")) or destination_problem(environ.get("HTTP_DESTINATION"))
        if problem is None:
            return app(environ, start_response)
        body = f"400 Bad Request: {problem}\n".encode()
        start_response("400 Bad Request", [("Content-Type", "text/plain; charset=utf-8"),
                                           ("Content-Length", str(len(body)))])
        return [body]
    return middleware
