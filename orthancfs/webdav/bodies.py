"""Request bodies other than PUT's: bounded, and XML parsed safely before anyone else reads it.

wsgidav reads a body whole into memory, however long it says it is, and the views'
PROPFIND parsed with plain xml.etree: an 855-byte body of nested entities cost 72 MB.
Here a body longer than its method's limit is refused with 413 unread (the connection
is then closed, see connections.py), and an XML body must parse without a DTD,
entities or external references, nested no deeper than real clients nest: what
follows (wsgidav, propfind.py) reads the same bytes from memory.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from wsgidav.dav_error import HTTP_BAD_REQUEST, HTTP_REQUEST_ENTITY_TOO_LARGE, DAVError
from wsgidav.mw.base_mw import BaseMiddleware

KIB = 1024
XML_METHODS = frozenset({"PROPFIND", "PROPPATCH", "LOCK"})
LIMITS = {"PROPPATCH": 1024 * KIB}  # dead properties may hold some text
DEFAULT_LIMIT = 64 * KIB  # a PROPFIND names properties, a LOCK its owner; others have no body at all
MAX_DEPTH = 32  # propertyupdate/set/prop/value: real clients stay under 10


def parse_xml(body: bytes) -> Element:
    """The root element; DAVError 400 for anything that is not plain, shallow XML."""
    try:
        root = fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException) as exc:
        raise DAVError(HTTP_BAD_REQUEST, f"the XML body is refused: {type(exc).__name__}") from None
    level = [root]
    for _ in range(MAX_DEPTH):
        level = [child for element in level for child in element]
        if not level:
            return root
    raise DAVError(HTTP_BAD_REQUEST, f"the XML body is nested deeper than {MAX_DEPTH} levels")


class BoundedBodies(BaseMiddleware):
    """Reads (within its limit) and checks the body of every method but PUT, once."""

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method != "PUT":
            body = read_body(environ, LIMITS.get(method, DEFAULT_LIMIT))
            if method in XML_METHODS and body.strip():
                parse_xml(body)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.next_app(environ, start_response)


def read_body(environ: dict, limit: int) -> bytes:
    """The whole body, or DAVError 413 if it is (or says it is) longer than `limit`."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        body = environ["wsgi.input"].read(limit + 1)
    else:
        text = environ.get("CONTENT_LENGTH", "").strip() or "0"
        if not text.isdigit():
            raise DAVError(HTTP_BAD_REQUEST, "Content-Length is not a number")
        if int(text) > limit:
            raise DAVError(HTTP_REQUEST_ENTITY_TOO_LARGE, f"a {environ['REQUEST_METHOD']} body may have "
                                                          f"{limit} bytes at most")
        body = environ["wsgi.input"].read(int(text)) if int(text) else b""
    if len(body) > limit:
        raise DAVError(HTTP_REQUEST_ENTITY_TOO_LARGE, f"a {environ['REQUEST_METHOD']} body may have "
                                                      f"{limit} bytes at most")
    environ["wsgidav.all_input_read"] = 1
    return body
