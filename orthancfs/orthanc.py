"""OrthancClient: the only code in orthancfs that speaks HTTP.

Every request has a bound: connecting may take `connect_timeout` seconds and the
server may stay silent for at most `timeout` seconds, so a dead or frozen Orthanc
turns into `OrthancUnavailable` instead of a hang.  Only failures that cannot
have had an effect on the server (refused or reset connections, 502/503) are
retried, with exponential backoff, and never past the `timeout` budget.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from .errors import (
    AccessDenied,
    NotFound,
    OrthancFailed,
    OrthancUnavailable,
    StorageFull,
    UploadRejected,
    UsageError,
)
from .settings import is_loopback
from .splice import FileWriteError, splice_into, takes_splice, write_at

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({502, 503})
FIRST_CHUNK_SIZE = 64 * 1024
CHUNK_SIZE = 1024 * 1024
# After Orthanc was found unreachable, calls fail at once for this long instead
# of each waiting out the timeout (the kernel resends a failed lookup, and a
# `find` would otherwise wait timeout x entries).
FAIL_FAST_SECONDS = 5.0
SPLICE_FROM = 1 << 20  # smaller files copy faster than a pipe is set up (measured on a study of small files)
DIRECT_BODY_LIMIT = 8 << 20  # uploads up to this size are read whole, larger ones streamed from disk
CONFIRM_TIMEOUT = 5.0  # seconds to wait for the answer to "did you store it?", at most


@dataclass(frozen=True)
class ClientSettings:
    """How to reach one Orthanc server."""

    url: str
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    token: str | None = None  # bearer token, for Orthanc behind an authenticating proxy
    client_cert: str | None = None
    client_key: str | None = None
    timeout: float = 30.0
    connect_timeout: float = 5.0
    pool_size: int = 16
    retries: int = 3

    def __repr__(self) -> str:  # never show the password, not even in a traceback
        return f"ClientSettings(url={self.url!r}, username={self.username!r})"


def validate_url(url: str) -> str:
    """Return the URL without a trailing slash, or raise UsageError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"not an http(s) URL: {url!r}")
    if parts.username or parts.password:
        raise UsageError("credentials in the URL would be visible to every user; use --user and --password-file")
    if parts.query or parts.fragment:
        raise UsageError(f"the Orthanc URL must not have a query or fragment: {url!r}")
    try:
        _ = parts.port  # raises for a port that is not a number in range
    except ValueError:
        raise UsageError(f"bad port in URL: {url!r}") from None
    return url.rstrip("/")


@dataclass(frozen=True)
class Capabilities:
    """What the connected Orthanc can do, derived from its version."""

    version: tuple[int, int, int]
    version_text: str

    @classmethod
    def from_system(cls, system: dict[str, Any]) -> Capabilities:
        text = str(system.get("Version", "0"))
        if text == "mainline":  # development builds are newer than any release
            return cls((999, 0, 0), text)
        numbers = [int(n) for n in re.findall(r"\d+", text)[:3]]
        numbers += [0] * (3 - len(numbers))
        return cls((numbers[0], numbers[1], numbers[2]), text)

    @property
    def attachment_range(self) -> bool:
        return self.version >= (1, 12, 5)

    @property
    def requested_tags(self) -> bool:
        return self.version >= (1, 11, 0)


class OrthancClient:
    """A thread-safe client for Orthanc's REST API (one pooled requests.Session)."""

    def __init__(self, settings: ClientSettings):
        self.settings = settings
        self.base_url = validate_url(settings.url)
        self.session = self._make_session(settings)
        self.health = Health(self.base_url, min(FAIL_FAST_SECONDS, settings.timeout))

    @staticmethod
    def _make_session(settings: ClientSettings) -> requests.Session:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=settings.pool_size, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.trust_env = False  # a stray $http_proxy or ~/.netrc must not redirect medical data
        if settings.username is not None:
            session.auth = (settings.username, settings.password or "")
        if settings.token:
            session.headers["Authorization"] = f"Bearer {settings.token}"
        if settings.client_cert:
            session.cert = (settings.client_cert, settings.client_key) if settings.client_key else settings.client_cert
        session.verify = False if settings.insecure else (settings.ca_file or True)
        if settings.insecure:
            # Said once here, instead of urllib3's warning on every single request.
            log.warning("TLS certificate verification is off (--insecure): anyone on the path can read and alter data")
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        session.headers["User-Agent"] = "orthancfs"
        if is_loopback(urlsplit(settings.url).hostname or ""):
            # Compressing costs Orthanc more time than it saves on a loopback link
            # (measured: 10-30% slower listings); across a network gzip pays.
            session.headers["Accept-Encoding"] = "identity"
        return session

    def close(self) -> None:
        self.session.close()

    @cached_property
    def system(self) -> dict[str, Any]:
        """`/system`, read once: name, version, API version."""
        return self.get_json("/system")

    @cached_property
    def capabilities(self) -> Capabilities:
        return Capabilities.from_system(self.system)

    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return json_of(self._request("GET", path, params=params), f"GET {path}")

    def lookup(self, identifier: str) -> list[dict[str, Any]]:
        """`POST /tools/lookup`: the resources whose patient ID or study, series or SOP instance
        UID is `identifier`, each as {ID, Path, Type}.  Changes nothing, despite the POST."""
        return json_of(self._request("POST", "/tools/lookup", data=identifier.encode()), "POST /tools/lookup")

    def get_bytes(self, path: str) -> bytes:
        return self._request("GET", path).content

    def upload(self, data: bytes) -> Any:
        """`POST /instances`: store one DICOM file (or, from Orthanc 1.8.2, a ZIP of them)."""
        return self._request("POST", "/instances", data=data, send=self._post_direct).json()

    def upload_fd(self, fd: int, body: bytes | None = None) -> Any:
        """`POST /instances` of the file open as `fd` (or of `body`, its bytes read already), read
        anew for each try (a half-sent file cannot be sent again); files above DIRECT_BODY_LIMIT
        are streamed, never read into RAM."""
        data = body if body is not None else lambda: _body_of(fd)
        return self._request("POST", "/instances", data=data, send=self._post_direct).json()

    def attachment_info(self, instance_id: str) -> dict[str, Any]:
        """Size and MD5 of the DICOM file Orthanc holds as `instance_id`.

        Asked to settle an upload whose answer never came: so it is tried even while the
        client fails fast after an outage (the outage is often that very upload's timeout),
        with a short timeout of its own."""
        path = f"/instances/{instance_id}/attachments/dicom/info"
        response = self._retrying("GET", path, timeout=min(self.settings.timeout, CONFIRM_TIMEOUT))
        self.health.succeeded()  # Orthanc answers: no need to fail fast any more
        return json_of(response, f"GET {path}")

    def delete(self, path: str) -> None:
        self._request("DELETE", path).close()

    def download(self, path: str, fd: int, arrived: Callable[[int], None]) -> int:
        """Write the body of GET `path` into the file `fd` from offset 0, calling `arrived(total)`
        as bytes land; return the total.

        Asks for no compression: Orthanc would gzip the whole file before sending
        the first byte (20x slower for a 64 MiB instance, measured), and pixel
        data hardly compresses anyway.  A plain-HTTP body of known length moves from
        the socket to the file inside the kernel (splice.py); others are copied in chunks.
        """
        response = self._request("GET", path, stream=True, headers={"Accept-Encoding": "identity"})
        with response:
            try:
                if (body := _spliceable_body(response, fd)) is not None:
                    total = self._spliced(body, fd, arrived)
                else:
                    total = self._copied(response, fd, arrived)
            except FileWriteError:
                raise  # the local disk's error (ENOSPC...), as it is
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    urllib3.exceptions.HTTPError, OSError) as exc:  # raw reads raise urllib3's own errors
                raise OrthancUnavailable(f"GET {path}: download interrupted: {reason(exc)}") from None
        log.debug("downloaded %s: %d bytes, %s", path, total, "spliced" if body is not None else "copied")
        return total

    @staticmethod
    def _spliced(body: _SpliceableBody, fd: int, arrived: Callable[[int], None]) -> int:
        write_at(fd, body.head, 0)
        arrived(len(body.head))
        splice_into(body.sock, fd, len(body.head), body.length, FIRST_CHUNK_SIZE, arrived)
        return body.length

    @staticmethod
    def _copied(response: requests.Response, fd: int, arrived: Callable[[int], None]) -> int:
        """Small chunks first (the first bytes of a file are there at once), then larger ones:
        each chunk wakes the readers waiting for it, and fewer wake-ups stream faster."""
        size, total = FIRST_CHUNK_SIZE, 0
        # Undecoded reads skip urllib3's decoding buffer (a copy of every byte): a fifth less
        # CPU per byte; only a server or proxy that compresses anyway needs decoding.
        decode = response.headers.get("Content-Encoding", "identity").lower() != "identity"
        while chunk := response.raw.read(size, decode_content=decode):
            write_at(fd, chunk, total)
            total += len(chunk)
            arrived(total)
            size = min(size * 2, CHUNK_SIZE)
        return total

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        with self.health.watching(method, path):
            return self._retrying(method, path, **kwargs)

    def _retrying(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        for attempt in attempts(self.settings):
            response = self._attempt(method, path, attempt, **kwargs)
            if response is not None:
                return response
            log.debug("%s %s failed transiently, retrying in %.1fs", method, path, attempt.delay)
            time.sleep(attempt.delay)
        raise AssertionError("unreachable: the last attempt always returns or raises")

    def _attempt(self, method: str, path: str, attempt: Attempt, send: Sender | None = None, **kwargs: Any):
        """One try: a response, None to ask for a retry, or a raised model error."""
        timeouts = (attempt.connect_timeout, kwargs.pop("timeout", self.settings.timeout))
        log.debug("%s %s", method, path)
        body = kwargs.pop("data", None)
        if callable(body):  # a fresh body for each try: a half-sent file cannot be sent again
            body = body()
        try:
            with body if hasattr(body, "close") else contextlib.nullcontext():
                response = (send or self._send)(method, path, body, timeouts, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise OrthancUnavailable(f"TLS failure talking to {self.base_url}: {reason(exc)}", False) from None
        except requests.Timeout as exc:
            arrived = not isinstance(exc, requests.ConnectTimeout)
            raise OrthancUnavailable(f"{method} {path}: no answer within the timeout ({reason(exc)})",
                                     arrived) from None
        except requests.ConnectionError as exc:
            if attempt.last:
                raise OrthancUnavailable(f"cannot reach Orthanc at {self.base_url}: {reason(exc)}",
                                         not _never_connected(exc)) from None
            return None
        return judged(method, path, response, attempt.last)

    def _send(self, method: str, path: str, body: Any, timeouts: tuple[float, float], **kwargs: Any):
        return self.session.request(method, self.base_url + path, data=body, timeout=timeouts, **kwargs)

    def _post_direct(self, method: str, path: str, body: bytes | BinaryIO, timeouts: tuple[float, float]):
        """POST through the session's own connection pool (same TLS, auth and headers), without
        requests' per-call work: that cost 0.25 ms of CPU per call, as much as the rest of an
        upload's handling, and uploads come by the thousand.  urllib3's errors are raised as
        requests' own, so that _attempt stays the one place that judges failures."""
        headers = dict(self.direct_headers)
        if not isinstance(body, bytes):
            headers["Content-Length"] = str(os.fstat(body.fileno()).st_size)
        try:
            pool = self._direct_pool()
            answer = pool.urlopen(method, path, body=body, headers=headers, retries=False, redirect=False,
                                  timeout=urllib3.Timeout(connect=timeouts[0], read=timeouts[1]))
        except urllib3.exceptions.HTTPError as exc:
            raise _as_requests_error(exc) from exc
        return read_response(answer.status, answer.headers, answer.data, self.base_url + path)

    def _direct_pool(self) -> urllib3.HTTPConnectionPool:
        """The pool requests itself uses for base_url (looked up each time: the pool manager may
        have replaced it), with the same TLS settings."""
        host, pool_kwargs = self._pool_key
        return self.session.get_adapter(self.base_url).poolmanager.connection_from_host(**host, pool_kwargs=pool_kwargs)

    @cached_property
    def _pool_key(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Host and TLS settings of base_url's pool, as requests' adapter derives them (once: the
        session's verification and certificates never change)."""
        return self.session.get_adapter(self.base_url).build_connection_pool_key_attributes(
            requests.Request("GET", self.base_url).prepare(), self.session.verify, self.session.cert)

    @cached_property
    def direct_headers(self) -> dict[str, str]:
        """What requests would send: the session's headers and credentials."""
        prepared = self.session.prepare_request(requests.Request("POST", self.base_url + "/instances",
                                                                 headers={"Content-Type": "application/dicom"}))
        return {name: value for name, value in prepared.headers.items() if name.lower() != "content-length"}


Sender = Callable[..., requests.Response]


@dataclass(frozen=True)
class Attempt:
    """One try of a request: whether it is the last, the pause before the next, its connect timeout."""

    last: bool
    delay: float
    connect_timeout: float


def attempts(settings: ClientSettings) -> Iterator[Attempt]:
    """The tries of one request: up to `retries` more, with backoff, while `timeout` lasts (each
    computed when it starts, so a slow try leaves less for the others)."""
    deadline = time.monotonic() + settings.timeout
    for number in range(settings.retries + 1):
        delay = 0.1 * 2**number
        now = time.monotonic()
        yield Attempt(number == settings.retries or now + delay >= deadline, delay,
                      max(0.1, min(settings.connect_timeout, deadline - now)))


def judged(method: str, path: str, response: requests.Response, last_try: bool) -> requests.Response | None:
    """An answer as every request judges it: None to try again (502/503 before the last try), the
    model error it means, or the response."""
    if response.status_code in RETRYABLE_STATUS and not last_try:
        response.close()
        return None
    _raise_for_status(method, path, response)
    return response


def read_response(status: int, headers: Any, content: bytes, url: str) -> requests.Response:
    """A requests.Response of an answer read another way (urllib3 or h11), for the same judging."""
    response = requests.Response()
    response.status_code, response._content = status, content  # noqa: SLF001 - a read body
    response._content_consumed = True  # noqa: SLF001 - so that close() has no raw stream to close
    response.headers = requests.structures.CaseInsensitiveDict(headers)
    response.url = url
    return response


def json_of(response: requests.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise OrthancFailed(f"{what}: Orthanc answered with something that is not JSON") from None


def _body_of(fd: int) -> bytes | BinaryIO:
    """A file's content to POST: its bytes if small, else a file object of its own (streamed)."""
    size = os.fstat(fd).st_size
    if size <= DIRECT_BODY_LIMIT:
        return os.pread(fd, size, 0)
    file = os.fdopen(os.dup(fd), "rb")  # closed by the request's try (_attempt)
    file.seek(0)
    return file


def _never_connected(exc: requests.ConnectionError) -> bool:
    """Whether a connection error happened before any byte of the request could be sent."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
            return True
        wrapped = getattr(cause, "reason", None)  # urllib3's MaxRetryError holds the real error there
        if not isinstance(wrapped, BaseException):
            wrapped = next((arg for arg in cause.args if isinstance(arg, BaseException)), None)
        cause = wrapped or cause.__cause__ or cause.__context__
    return False


def _as_requests_error(exc: urllib3.exceptions.HTTPError) -> requests.RequestException:
    """The exception requests would have raised for this urllib3 error (see HTTPAdapter.send)."""
    if isinstance(exc, urllib3.exceptions.SSLError):
        return requests.exceptions.SSLError(exc)
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError) and \
            not isinstance(exc, urllib3.exceptions.NewConnectionError):
        return requests.exceptions.ConnectTimeout(exc)
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return requests.exceptions.ReadTimeout(exc)
    return requests.exceptions.ConnectionError(exc)


class Health:
    """Whether Orthanc answered lately; logs each change once, not each failure."""

    def __init__(self, url: str, fail_fast_seconds: float):
        self.url = url
        self.fail_fast_seconds = fail_fast_seconds
        self._failure: OrthancUnavailable | None = None
        self._answered = False  # before Orthanc ever answered, the caller reports failures itself
        self._retry_at = 0.0
        self._lock = threading.Lock()

    def check(self, method: str, path: str) -> None:
        with self._lock:
            failure, waiting = self._failure, self._retry_at - time.monotonic()
        if failure is not None and waiting > 0:
            raise OrthancUnavailable(f"{method} {path}: not tried, Orthanc failed {self.fail_fast_seconds:.0f}s ago "
                                     f"({failure})", may_have_arrived=False)

    def failed(self, exc: OrthancUnavailable) -> None:
        with self._lock:
            news = self._failure is None and self._answered
            self._failure, self._retry_at = exc, time.monotonic() + self.fail_fast_seconds
        if news:
            log.warning("Orthanc at %s is unavailable: %s", self.url, exc)

    @contextmanager
    def watching(self, method: str, path: str) -> Iterator[None]:
        """Around one request: refused at once during an outage; a failure or a recovery noted."""
        self.check(method, path)
        try:
            yield
        except OrthancUnavailable as exc:
            self.failed(exc)
            raise
        self.succeeded()

    def succeeded(self) -> None:
        with self._lock:
            recovered, self._failure, self._answered = self._failure is not None, None, True
        if recovered:
            log.info("Orthanc at %s answers again", self.url)


def _raise_for_status(method: str, path: str, response: requests.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    detail = _orthanc_detail(response)
    response.close()
    what = f"{method} {path}: HTTP {status}{detail}"
    if status in (502, 503, 504):
        raise OrthancUnavailable(what)
    if status in (401, 403):
        raise AccessDenied(what)
    if status == 507:
        raise StorageFull(what)
    if method == "POST" and path == "/instances":
        # Orthanc says 400 for unparsable files and 404 ("Inexistent tag") for
        # files missing a required tag: both mean the file was refused.
        raise UploadRejected(what)
    if status == 404:
        raise NotFound(what)
    raise OrthancFailed(what)


def _orthanc_detail(response: requests.Response) -> str:
    """Orthanc explains errors in a JSON body (with HttpDescribeErrors): keep its words."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        message = body.get("Details") or body.get("Message")
        if message:
            return f" ({message})"
    return ""


@dataclass(frozen=True)
class _SpliceableBody:
    head: bytes  # what http.client had read past the headers already
    sock: socket.socket  # whose next bytes are the rest of the body
    length: int  # of the whole body


def _spliceable_body(response: requests.Response, fd: int) -> _SpliceableBody | None:
    """The body of `response` as a socket to splice from, if it can be: plain TCP (TLS bytes
    must be decrypted here), a Content-Length of at least SPLICE_FROM, no content or transfer
    coding, a file that takes spliced bytes.  Reaches into urllib3 for its http.client response
    and connection; if they are not what we expect (another urllib3), the body is copied."""
    headers = response.headers
    if headers.get("Content-Encoding", "identity").lower() != "identity" or "Transfer-Encoding" in headers:
        return None
    http_response = getattr(response.raw, "_fp", None)
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    length = headers.get("Content-Length", "")
    if not (isinstance(http_response, http.client.HTTPResponse) and type(sock) is socket.socket
            and length.isdigit() and int(length) >= SPLICE_FROM and takes_splice(fd)):
        return None
    # http.client reads the socket through a buffer, which may hold the first bytes of the body:
    # peek() fills it if it is empty, read1() then takes exactly what it holds, and the socket's
    # next byte is the body's next byte.
    http_response.fp.peek(1)
    head = http_response.read1(int(length))
    return _SpliceableBody(head, sock, int(length))


def reason(exc: BaseException) -> str:
    """The innermost, most specific cause of an error (requests, urllib3, trio), in one line."""
    cause: BaseException = exc
    while True:
        if isinstance(cause, BaseExceptionGroup) and cause.exceptions:  # trio's connection attempts
            cause = cause.exceptions[0]
        elif cause.__cause__ is not None or cause.__context__ is not None:
            cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
        else:
            break
    text = str(cause) or type(cause).__name__
    return text.splitlines()[0] if text else type(cause).__name__
