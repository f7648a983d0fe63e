"""The WebDAV frontend in process: the WSGI application of `webdav_app()`, called with environ dicts
as cheroot would build them (no server, no socket), the way a WebDAV client uses it.

WebDAV has no "not a directory" or "is a directory": a client knows what a path is from PROPFIND
(GET of a folder answers the directory browser's page, DELETE removes files and folders alike), so
this adapter asks first, as davfs2 or rclone know from their listings, and says so itself.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit
from wsgiref.util import setup_testing_defaults
from xml.etree import ElementTree

from orthancfs.tree import Tree
from orthancfs.webdav.names import windows_safe
from orthancfs.webdav.server import webdav_app
from orthancfs.webdav.uploads import STATUS_PROPERTY

from .frontend import Error, Failed

HOST = "127.0.0.1"
DAV = "{DAV:}"
ENTRY_PROPERTIES = (b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
                    b"<D:resourcetype/><D:getcontentlength/></D:prop></D:propfind>")
STATUS_PROPERTIES = (b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:" '
                     b'xmlns:O="http://orthancfs.invalid/ns"><D:prop><O:status/></D:prop></D:propfind>')
STATUSES = {400: Error.INVALID, 403: Error.FORBIDDEN, 404: Error.NOT_FOUND, 405: Error.NOT_PERMITTED,
            409: Error.CONFLICT, 412: Error.EXISTS, 415: Error.REFUSED, 503: Error.UNAVAILABLE, 507: Error.FULL}
EXISTING = {"MKCOL": 405}  # RFC 4918: MKCOL of something that exists is 405


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def environ_for(method: str, path: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """What a WSGI server hands the application: PATH_INFO unquoted, its UTF-8 bytes as latin-1 (PEP 3333)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": ("/" + path.strip("/")).encode("utf-8").decode("latin-1"),
        "REMOTE_ADDR": HOST, "REMOTE_PORT": "40000", "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
    }
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        environ[key if key == "CONTENT_TYPE" else f"HTTP_{key}"] = value
    setup_testing_defaults(environ)
    return environ


def entries(body: bytes) -> dict[str, dict[str, ElementTree.Element]]:
    """A 207 answer: path (unquoted, no slashes around it) -> the properties found (200) for it."""
    found = {}
    for response in ElementTree.fromstring(body).iter(f"{DAV}response"):
        href = unquote(urlsplit(response.findtext(f"{DAV}href") or "").path).strip("/")
        properties: dict[str, ElementTree.Element] = {}
        for propstat in response.iter(f"{DAV}propstat"):
            listed = propstat.find(f"{DAV}prop")
            if " 200 " in (propstat.findtext(f"{DAV}status") or "") and listed is not None:
                properties.update((prop.tag, prop) for prop in listed)
        found[href] = properties
    return found


def is_collection(properties: dict[str, ElementTree.Element]) -> bool:
    kind = properties.get(f"{DAV}resourcetype")
    return kind is not None and kind.find(f"{DAV}collection") is not None


class WebDAVFrontend:
    """webdav_app(tree, users={}, ...): anonymous, so every role; the tree's WritePolicy decides."""

    name = "webdav"
    # 403 says forbidden, read-only and "not permitted" alike; 409 every kind of conflict.
    coarser = {Error.READ_ONLY: Error.FORBIDDEN, Error.NOT_PERMITTED: Error.FORBIDDEN,
               Error.CROSS_DEVICE: Error.FORBIDDEN, Error.INVALID: Error.FORBIDDEN,
               Error.NOT_A_DIRECTORY: Error.CONFLICT, Error.IS_A_DIRECTORY: Error.CONFLICT,
               Error.EXISTS: Error.CONFLICT, Error.NOT_EMPTY: Error.CONFLICT, Error.CANCELLED: Error.CONFLICT}
    keeps_receipts = True
    touches = False

    def __init__(self, tree: Tree, windows_names: bool = True):
        self.windows_names = windows_names  # `orthancfs webdav`'s default
        self.app = webdav_app(tree, users={}, windows_names=windows_names, debug=False)

    def shown(self, name: str) -> str:
        return windows_safe(name) if self.windows_names else name

    def request(self, method: str, path: str, body: bytes = b"", **headers: str) -> Response:
        started: dict[str, Any] = {}
        written: list[bytes] = []

        def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started.update(status=int(status.split()[0]), headers=dict(response_headers))
            return written.append

        result = self.app(environ_for(method, path, body, headers), start_response)
        try:
            chunks = list(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        return Response(started["status"], started["headers"], b"".join([*written, *chunks]))

    def checked(self, method: str, path: str, body: bytes = b"", **headers: str) -> Response:
        """The response, or Failed with what its status means."""
        response = self.request(method, path, body, **headers)
        if response.status >= 400:
            kind = Error.EXISTS if EXISTING.get(method) == response.status else STATUSES.get(response.status)
            raise Failed(kind or Error.FAILED, f"{method} /{path}: {response.status} {response.body[:200]!r}")
        return response

    def _propfind(self, path: str, depth: str, body: bytes = ENTRY_PROPERTIES) -> dict[str, dict]:
        response = self.checked("PROPFIND", path, body, Depth=depth, Content_Type="application/xml")
        return entries(response.body)

    def listdir(self, path: str) -> list[str]:
        found = self._propfind(path, "1")
        itself = found.pop(path.strip("/"))
        if not is_collection(itself):
            raise Failed(Error.NOT_A_DIRECTORY, f"{path} is a file (as its PROPFIND says)")
        return [href.rsplit("/", 1)[-1] for href in found]

    def stat(self, path: str) -> tuple[bool, int]:
        properties = self._propfind(path, "0")[path.strip("/")]
        length = properties.get(f"{DAV}getcontentlength")
        return is_collection(properties), int(length.text or 0) if length is not None else 0

    def read(self, path: str, offset: int = 0, size: int | None = None) -> bytes:
        is_dir, length = self.stat(path)
        if is_dir:
            raise Failed(Error.IS_A_DIRECTORY, f"{path} is a folder (as its PROPFIND says)")
        if offset == 0 and size is None:
            return self.checked("GET", path).body
        if offset >= length or size == 0:
            return b""  # no range to ask for (wsgidav would answer 416), as clients know from the length
        last = "" if size is None else str(offset + size - 1)
        response = self.checked("GET", path, Range=f"bytes={offset}-{last}")
        assert response.status == 206, f"GET /{path} with a Range: {response.status}"
        return response.body

    def write_file(self, path: str, data: bytes) -> Error | None:
        try:
            self.checked("PUT", path, data, Content_Type="application/octet-stream")
        except Failed as failure:
            return failure.kind
        return None

    def remove(self, path: str) -> None:
        if self.stat(path)[0]:
            raise Failed(Error.IS_A_DIRECTORY, f"{path} is a folder (as its PROPFIND says)")
        self.checked("DELETE", path)

    def rmdir(self, path: str) -> None:
        if not self.stat(path)[0]:
            raise Failed(Error.NOT_A_DIRECTORY, f"{path} is a file (as its PROPFIND says)")
        self.checked("DELETE", path)

    def rename(self, old: str, new: str) -> None:
        self.checked("MOVE", old, Destination=f"http://{HOST}{quote('/' + new.strip('/'))}", Overwrite="T")

    def mkdir(self, path: str) -> None:
        self.checked("MKCOL", path)

    def touch(self, path: str) -> None:
        raise NotImplementedError("WebDAV has no touch: getlastmodified is a protected property")

    def status(self, path: str) -> str | None:
        properties = self._propfind(path, "0", STATUS_PROPERTIES)[path.strip("/")]
        found = properties.get(STATUS_PROPERTY)
        return None if found is None else found.text or ""

    def close(self) -> None:
        pass  # nothing of its own: the tree is closed by whoever built it
