"""PROPFIND of the views, written straight from the tree: a wsgidav middleware, after authentication.

wsgidav builds an ElementTree of every member with each of its properties, then serializes it:
`by-patients/` of 100,000 patients took 4.7 s, and the server peaked at 516 MB (the listing itself
takes 200).  The views' properties are few and fixed (no locks, no dead properties: nothing there
can be written), so this writes the same answer as text, from our own resources' getters, with
wsgidav's formats: 1.2 s, a 234 MB peak.
Everything else (the root, uploads/, `If` headers) goes on to wsgidav.  `propname` is answered
here too: wsgidav looks for a `<name/>` element, so it answers `<propname/>` with no properties.
"""

from __future__ import annotations

import functools
import io
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple
from xml.sax.saxutils import escape

from wsgidav import util
from wsgidav.dav_error import DAVError
from wsgidav.mw.base_mw import BaseMiddleware

from ..tree import Node, Tree
from ..tree.views import ALL_VIEWS as VIEWS
from .bodies import parse_xml
from .views import TreeFile, TreeFolder, content_length, content_type, etag

DAV = "DAV:"
OURS = "http://orthancfs.invalid/ns"
OUR_NAMES = frozenset({"labels"})
ALL = None  # allprop (or an empty body): every live property
NAMES = "propname"  # the names of every live property, no values
OK, NOT_FOUND = "HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found"
CHUNK = 1 << 16  # bytes per write of an answer
FAST_PATH_FAILED = "orthancfs.fast_path.failed"  # environ: what fast_path.py met answering this request
MAX_BODY = 1 << 20  # a PROPFIND body names a few properties; anything bigger goes to wsgidav
Property = tuple[str, str]  # (namespace, local name)


class ViewsPropfind(BaseMiddleware):
    """Answers PROPFIND (Depth 0 or 1) below by-patients/, by-studies/, by-dates/ and by-uids/."""

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        failed = environ.pop(FAST_PATH_FAILED, None)
        if not for_views(environ):
            return self.next_app(environ, start_response)
        if failed is not None:
            raise failed  # the fast path tried already (Orthanc away...): asking again would double the wait
        answer = views_answer(self.wsgidav_app.provider_map["/"], environ)
        if answer is None:
            return self.next_app(environ, start_response)
        return send_multistatus(start_response, answer.chunks)


class Answer(NamedTuple):
    chunks: list[bytes]
    lasting: bool  # written from the views alone: the same while the tree's stamp stays


def views_answer(provider: Any, environ: dict) -> Answer | None:
    """The answer to a PROPFIND of the views provider's `PATH_INFO` (Depth 0 or 1, its body of
    known length); None where wsgidav says what it says (bad XML, not found)."""
    body = environ["wsgi.input"].read(body_length(environ))
    environ["wsgi.input"] = io.BytesIO(body)  # so wsgidav can read it, if it answers instead
    wanted = requested_properties(body)
    resource = provider.get_resource_inst(environ["PATH_INFO"], environ)
    if wanted is False or resource is None:
        return None
    if environ["HTTP_DEPTH"] == "1" and resource.is_collection:
        pieces = multistatus(resource, wanted, provider.tree)
    else:
        pieces = multistatus(resource, wanted)
    # A folder emptied by deletes here lasts a while of its own; labels are asked of Orthanc.
    labels = isinstance(wanted, list) and (OURS, "labels") in wanted
    lasting = isinstance(resource, TreeFolder | TreeFile) and not labels
    return Answer(list(_joined(pieces)), lasting)


def send_multistatus(start_response: Callable, chunks: list[bytes]) -> list[bytes]:
    start_response("207 Multi-Status", [("Content-Type", "application/xml; charset=utf-8"),
                                        ("Date", util.get_rfc1123_time()),
                                        ("Content-Length", str(sum(map(len, chunks))))])
    return chunks


def for_views(environ: dict) -> bool:
    """Whether this PROPFIND is one ours answers (anything else, `If` headers included, is wsgidav's)."""
    if environ.get("REQUEST_METHOD") != "PROPFIND" or environ.get("HTTP_DEPTH") not in ("0", "1"):
        return False  # no Depth means infinity: refused before us
    length = body_length(environ)
    if "HTTP_IF" in environ or length is None or length > MAX_BODY:
        return False  # wsgidav judges a bad length
    return environ.get("PATH_INFO", "").strip("/").split("/")[0] in VIEWS


def body_length(environ: dict) -> int | None:
    """The body's length (none given: empty, as wsgidav reads it), or None if it is not a number."""
    text = environ.get("CONTENT_LENGTH", "").strip() or "0"
    return int(text) if text.isdigit() else None


def requested_properties(body: bytes) -> list[Property] | str | None | bool:
    """ALL for allprop (or no body), NAMES for propname, the names asked for, or False: wsgidav answers."""
    if not body.strip():
        return ALL
    try:
        root = parse_xml(body)  # no entities, no DTD (bodies.py has checked it already; this stays safe alone)
    except DAVError:
        return False
    if root.tag != "{DAV:}propfind" or len(root) != 1:
        return False
    [mode] = root
    if mode.tag == "{DAV:}allprop":
        return ALL
    if mode.tag == "{DAV:}propname":
        return NAMES
    if mode.tag == "{DAV:}prop":
        return [_split(child.tag) for child in mode if isinstance(child.tag, str)]
    return False


def _split(tag: str) -> Property:
    namespace, _, local = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    return namespace, local


def multistatus(resource: Any, wanted: list[Property] | str | None, members_of: Tree | None = None) -> Iterator[bytes]:
    """The answer piece by piece: `resource`, then (from the tree `members_of`) each of its members."""
    yield b'<?xml version="1.0" encoding="utf-8" ?>\n<D:multistatus xmlns:D="DAV:">'
    yield response(resource, wanted).encode("utf-8")
    if members_of is not None and wanted is ALL and isinstance(resource, TreeFolder):
        for href, name, node in resource.listed():
            yield allprop_response(members_of, href, name, node).encode("utf-8")
    elif members_of is not None:
        for member in resource.iter_members():
            yield response(member, wanted).encode("utf-8")
    yield b"</D:multistatus>"


def _joined(pieces: Iterable[bytes], size: int = CHUNK) -> Iterator[bytes]:
    """Pieces joined into chunks of about `size`: few socket writes, and no second copy of the
    whole answer (its length must be known before it is sent: some clients want one)."""
    chunk: list[bytes] = []
    length = 0
    for piece in pieces:
        chunk.append(piece)
        length += len(piece)
        if length >= size:
            yield b"".join(chunk)
            chunk, length = [], 0
    if chunk:
        yield b"".join(chunk)


def response(resource: Any, wanted: list[Property] | str | None) -> str:
    """One <response>: the properties found with 200, the others (only when named) with 404."""
    values = live_properties(resource)
    if wanted is ALL:
        found, missing = list(values.items()), []
    elif wanted == NAMES:
        found, missing = [(local, "") for local in values], []
    else:
        values.update(ours(resource, wanted))
        found = [(local, values[local]) for namespace, local in wanted if namespace in (DAV, OURS) and local in values]
        missing = [(namespace, local) for namespace, local in wanted
                   if namespace not in (DAV, OURS) or local not in values]
    parts = [f"<D:response><D:href>{escape(resource.get_href())}</D:href>"]
    if found or not missing:
        props = "".join(_element(local, value) for local, value in found)
        parts.append(f"<D:propstat><D:prop>{props}</D:prop><D:status>{OK}</D:status></D:propstat>")
    if missing:
        props = "".join(_empty(namespace, local) for namespace, local in missing)
        parts.append(f"<D:propstat><D:prop>{props}</D:prop><D:status>{NOT_FOUND}</D:status></D:propstat>")
    parts.append("</D:response>")
    return "".join(parts)


def ours(resource: Any, wanted: list[Property]) -> dict[str, str]:
    """orthancfs's own live properties, only when named (a study's labels cost a request)."""
    if (OURS, "labels") not in wanted:
        return {}
    labels = resource.labels_property()
    return {} if labels is None else {"labels": escape(labels)}


def _element(local: str, value: str) -> str:
    if local in OUR_NAMES:
        return f'<O:{local} xmlns:O="{OURS}">{value}</O:{local}>'
    return f"<D:{local}>{value}</D:{local}>" if value else f"<D:{local}/>"


def live_properties(resource: Any) -> dict[str, str]:
    """Each live property of a views resource, as XML content, in wsgidav's allprop order and formats."""
    values = {"resourcetype": "<D:collection/>" if resource.is_collection else "",
              "creationdate": util.get_rfc3339_time(resource.get_creation_date())}
    if not resource.is_collection:
        values["getcontentlength"] = str(resource.get_content_length())
        values["getcontenttype"] = escape(resource.get_content_type())
    values["getlastmodified"] = http_date(resource.get_last_modified())
    values["displayname"] = escape(resource.get_display_name())
    etag = resource.get_etag()
    if etag is not None:
        values["getetag"] = escape(f"\"{etag}\"")  # an entity-tag, quotes included, as the ETag header (RFC 4918)
    return values


def allprop_response(tree: Tree, href: str, name: str, node: Node) -> str:
    """response(resource, ALL) of a views member, written from its node: the same text, without a
    wsgidav resource, a dictionary and a join per property (a third of the cost of a member)."""
    created, modified = _dates(node.mtime_ns // 1_000_000_000)
    shown = f"<D:displayname>{escape(name)}</D:displayname>" if name else "<D:displayname/>"
    if node.is_dir:
        return (f"<D:response><D:href>{escape(href)}</D:href><D:propstat><D:prop><D:resourcetype><D:collection/>"
                f"</D:resourcetype><D:creationdate>{created}</D:creationdate><D:getlastmodified>{modified}"
                f"</D:getlastmodified>{shown}</D:prop><D:status>{OK}</D:status></D:propstat></D:response>")
    tag = etag(node)
    tagged = "" if tag is None else f"<D:getetag>{escape(chr(34) + tag + chr(34))}</D:getetag>"
    return (f"<D:response><D:href>{escape(href)}</D:href><D:propstat><D:prop><D:resourcetype/><D:creationdate>"
            f"{created}</D:creationdate><D:getcontentlength>{content_length(tree, node)}</D:getcontentlength>"
            f"<D:getcontenttype>{escape(content_type(node))}</D:getcontenttype><D:getlastmodified>{modified}"
            f"</D:getlastmodified>{shown}{tagged}</D:prop><D:status>{OK}</D:status></D:propstat></D:response>")


@functools.lru_cache(maxsize=4096)
def _dates(seconds: int) -> tuple[str, str]:
    """creationdate and getlastmodified of a time (members of a folder mostly share a few)."""
    return util.get_rfc3339_time(seconds), http_date(seconds)


DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(seconds: float) -> str:
    """RFC 1123 date, as wsgidav writes it (email.utils.formatdate, GMT) at a fraction of the cost
    (a twentieth of a walk's CPU), and like it independent of the locale."""
    t = time.gmtime(seconds)
    return (f"{DAYS[t.tm_wday]}, {t.tm_mday:02d} {MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")


def _empty(namespace: str, local: str) -> str:
    if namespace == DAV:
        return f"<D:{local}/>"
    return f'<{local} xmlns="{escape(namespace, {chr(34): "&quot;"})}"/>'
