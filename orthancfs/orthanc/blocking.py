"""Sending from threads: one urllib3 connection pool to Orthanc, with TLS set up once.

urllib3 directly, not requests: requests' per-call work cost 0.25 ms of CPU, as much as
the rest of an upload's handling, and uploads come by the thousand.  Its errors are
reported as TransportFailure (what kind, whether the request may have arrived); the
pipeline judges them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, BinaryIO
from urllib.parse import urlencode

import urllib3
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)

from .answers import Answer
from .connection import ClientSettings, request_headers
from .pipeline import Attempt, TransportFailure, reason

log = logging.getLogger("orthancfs.orthanc")

Body = bytes | BinaryIO | None


class BlockingTransport:
    """Requests to one Orthanc from any thread, on keep-alive connections."""

    def __init__(self, settings: ClientSettings):
        self.settings = settings
        self.headers = request_headers(settings)
        self.prefix = settings.prefix
        self.pool = _pool(settings)

    def close(self) -> None:
        self.pool.close()

    def send(self, method: str, path: str, attempt: Attempt, timeout: float, body: Body = None,
             params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> Answer:
        """One try, the answer read whole."""
        response = self._open(method, path, attempt, timeout, body, params, headers, preload=True)
        return Answer(response.status, _lowered(response.headers), response.data)

    def stream(self, method: str, path: str, attempt: Attempt, timeout: float,
               headers: Mapping[str, str] | None = None) -> urllib3.BaseHTTPResponse:
        """One try whose body is left to read (downloads); close() the response when done."""
        return self._open(method, path, attempt, timeout, None, None, headers, preload=False)

    def _open(self, method: str, path: str, attempt: Attempt, timeout: float, body: Body,
              params: Mapping[str, Any] | None, headers: Mapping[str, str] | None,
              preload: bool) -> urllib3.BaseHTTPResponse:
        target = self.prefix + path + (f"?{urlencode(params)}" if params else "")
        sent = {**self.headers, **(headers or {})}
        if body is not None and not isinstance(body, bytes):
            sent["Content-Length"] = str(os.fstat(body.fileno()).st_size)
        try:
            return self.pool.urlopen(method, target, body=body, headers=sent, retries=False, redirect=False,
                                     preload_content=preload,
                                     timeout=urllib3.Timeout(connect=attempt.connect_timeout, read=timeout))
        except HTTPError as exc:
            raise failure_of(exc) from exc


def failure_of(exc: HTTPError) -> TransportFailure:
    """What kind of failure urllib3's error is, and whether the request may have reached Orthanc."""
    if isinstance(exc, ClosedPoolError):  # the client was closed while a request waited for a connection
        return TransportFailure("closed", reason(exc), sent=False)
    if isinstance(exc, NewConnectionError):  # (a ConnectTimeoutError too, in urllib3 2)
        return TransportFailure("refused", reason(exc), sent=False)
    if isinstance(exc, ConnectTimeoutError):
        return TransportFailure("timeout", reason(exc), sent=False)
    if isinstance(exc, ReadTimeoutError):
        return TransportFailure("timeout", reason(exc), sent=True)
    if isinstance(exc, SSLError):
        return TransportFailure("tls", reason(exc), sent=False)
    return TransportFailure("lost", reason(exc), sent=True)  # reset, closed unanswered (ProtocolError): perhaps
    #                                                          after the request arrived


def _pool(settings: ClientSettings) -> urllib3.HTTPConnectionPool:
    """The pool for Orthanc's host, with its TLS settings: verified against the system's CAs (or
    --ca-file) unless --insecure, with a client certificate if one is given."""
    common = {"maxsize": settings.pool_size, "block": False, "retries": False}
    if not settings.tls:
        return urllib3.HTTPConnectionPool(settings.host, settings.port, **common)
    if settings.insecure:
        # Said once here, instead of urllib3's warning on every single request.
        log.warning("TLS certificate verification is off (--insecure): anyone on the path can read and alter data")
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return urllib3.HTTPSConnectionPool(settings.host, settings.port, cert_reqs="CERT_NONE" if settings.insecure
                                       else "CERT_REQUIRED", ca_certs=settings.ca_file, cert_file=settings.client_cert,
                                       key_file=settings.client_key, **common)


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}
