"""Errors as HTTP answers, in place of wsgidav's ErrorPrinter.

ErrorPrinter put the exception (`Source exception: ValueError(...)`) into every error
page, 500s included, and logged to wsgidav's logger, which is silent.  Here a page says
its status and the reason it was given on purpose (Orthanc's, for a refused upload);
a 500 says nothing more; every 5xx is logged with its traceback, as is anything that breaks an answer
already under way (the server then drops the connection).  A body that stops coming
(or a client that goes away while sending it) is the client's doing: 408, and the
connection is closed.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterator
from html import escape
from http import HTTPStatus

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_FORBIDDEN,
    HTTP_INTERNAL_ERROR,
    HTTP_NO_CONTENT,
    HTTP_NOT_MODIFIED,
    HTTP_REQUEST_TIMEOUT,
    DAVError,
    get_http_status_string,
)
from wsgidav.mw.base_mw import BaseMiddleware

from ..errors import OrthancFSError
from .errors import dav_error

log = logging.getLogger(__name__)

CLOSE = ("Connection", "close")  # the connection cannot be read any further


class ErrorPages(BaseMiddleware):
    """Turns DAVErrors and crashes below it into answers; nothing escapes before the answer starts."""

    def __call__(self, environ: dict, start_response: Callable) -> Iterator[bytes]:
        captured = util.SubAppStartResponse()
        started = False
        try:
            answer = self.next_app(environ, captured)
            try:
                for chunk in answer:
                    if not started:
                        start_response(captured.status, captured.response_headers, captured.exc_info)
                        started = True
                    yield chunk
            finally:
                if hasattr(answer, "close"):
                    answer.close()
            if not started:
                start_response(captured.status, captured.response_headers, captured.exc_info)
        except Exception as exc:
            if started:
                log.error("%s %r failed after its answer began", environ.get("REQUEST_METHOD"), _path(environ),
                          exc_info=True)
                raise
            yield from error_page(environ, start_response, as_dav_error(exc))


def as_dav_error(exc: Exception) -> DAVError:
    cause = exc.src_exception if isinstance(exc, DAVError) else exc  # wsgidav wraps what a PUT's read raised
    if isinstance(cause, (TimeoutError, ConnectionError)):  # the client stopped sending its body
        return DAVError(HTTP_REQUEST_TIMEOUT, "the request body stopped coming", add_headers=[CLOSE])
    if isinstance(exc, DAVError):
        return exc
    if isinstance(exc, OrthancFSError):  # raised while the answer was read (a download that failed)
        return dav_error(exc)
    if isinstance(exc, OSError) and exc.errno == errno.EACCES:
        return DAVError(HTTP_FORBIDDEN, src_exception=exc)
    return DAVError(HTTP_INTERNAL_ERROR, src_exception=exc)


def log_failure(environ: dict, status: str, error: DAVError) -> None:
    """A crash with its traceback; a failure the model explained (Orthanc unavailable) in one line."""
    where = (environ.get("REQUEST_METHOD"), _path(environ), status)
    cause = error.src_exception
    if isinstance(cause, BaseException):
        log.error("%s %r: %s", *where, exc_info=(type(cause), cause, cause.__traceback__))
    elif error.value == HTTP_INTERNAL_ERROR:
        log.error("%s %r: %s", *where, exc_info=(type(error), error, error.__traceback__))
    else:
        log.error("%s %r: %s: %s", *where, error.context_info)


def status_line(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return get_http_status_string(code)


def error_page(environ: dict, start_response: Callable, error: DAVError) -> Iterator[bytes]:
    status = status_line(error.value)
    if error.value >= 500:
        log_failure(environ, status, error)
    headers = [("Date", util.get_rfc1123_time()), *(error.add_headers or [])]
    if error.value in (HTTP_NOT_MODIFIED, HTTP_NO_CONTENT):
        start_response(status, [("Content-Length", "0"), *headers])
        return
    content_type, body = page(error, status)
    if environ.get("REQUEST_METHOD") == "HEAD" or not error.add_body:
        body = b""
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers])
    yield body


def page(error: DAVError, status: str) -> tuple[str, bytes]:
    """What the client reads: a DAV precondition as XML, else the status and the reason we gave."""
    if error.err_condition:
        return error.get_response_page()
    said = error.context_info if error.value != HTTP_INTERNAL_ERROR else None
    reason = f"<p>{escape(str(said))}</p>" if said else ""
    html = f"<!DOCTYPE html>\n<html><head><title>{status}</title></head><body><h1>{status}</h1>{reason}</body></html>\n"
    return "text/html; charset=utf-8", html.encode("utf-8")


def _path(environ: dict) -> str:
    return environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
