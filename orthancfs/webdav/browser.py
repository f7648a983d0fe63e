"""wsgidav's directory browser (HTML listings for web browsers), redirecting to the full path.

A GET of a folder without its trailing slash is answered 301 to the same path with one, so that a
browser resolves the listing's relative links.  wsgidav builds that Location from PATH_INFO alone,
which by then has lost what SCRIPT_NAME holds: `--prefix` and the share (`/uploads`).  So
`/webdav/by-patients` went to `/by-patients/` (404 under the prefix) and `/uploads` to `/`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from wsgidav.dir_browser import WsgiDavDirBrowser


class DirBrowser(WsgiDavDirBrowser):
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        mounted_at = quote(environ.get("SCRIPT_NAME", "").rstrip("/"))

        def start_with_full_location(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if status.startswith("301") and mounted_at:
                headers = [(name, mounted_at + value if name.lower() == "location" and value.startswith("/")
                            else value) for name, value in headers]
            return start_response(status, headers, exc_info)

        return super().__call__(environ, start_with_full_location)
