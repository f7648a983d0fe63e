"""FakeOrthanc: a real HTTP server in the test process that answers the REST subset orthancfs uses.

Not a mock of our client: any HTTP client talks to it (requests, urllib3's pool, h11 on trio),
over keep-alive HTTP/1.1 with a Content-Length on every answer, and it answers what Orthanc
answers -- test_fake_orthanc.py compares it with real Orthanc 1.10 and 1.12 processes, endpoint
by endpoint.  What it stores lives in fake_store.py.

    with FakeOrthanc(version="1.12.7") as fake, fake.client() as client:
        client.upload(make_dicom(spec))
        fake.faults.freeze()  # Orthanc stops answering, until fake.faults.resume()

Endpoints: GET /system, /statistics, /changes (DELETE too); GET /{level} (expand, since, limit);
GET and DELETE /{level}/{id}; GET /{level}/{id}/{lower level} (child and grandchild routes,
expanded); GET /instances/{id}/file and /instances/{id}/attachments/dicom/{info,md5};
POST /instances (one DICOM file); POST /tools/lookup; POST /tools/find (tags and date ranges).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import re
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydicom.datadict import tag_for_keyword

from orthancfs.orthanc import ClientSettings, OrthancClient
from orthancfs.tree.index import orthanc_id

from .fake_store import (
    LEVELS,
    FakeStore,
    Missing,
    OrthancError,
    Version,
    bad_parameter,
    bad_request,
    unknown_resource,
)

log = logging.getLogger(__name__)

DEFAULT_VERSION = "1.10.1"  # Debian 12's, the floor orthancfs supports
REALM = 'Basic realm="Orthanc Secure Area"'
API_VERSIONS = {(1, 10, 1): 16, (1, 12, 7): 27}  # the releases the conformance test knows
DEFAULT_CHANGES_LIMIT = 100
SYSTEM_TAG_LEVELS = {"patients": "Patient", "studies": "Study", "series": "Series", "instances": "Instance"}


def parse_version(text: str) -> Version:
    numbers = [int(part) for part in re.findall(r"\d+", text)[:3]]
    return tuple(numbers + [0] * (3 - len(numbers)))  # type: ignore[return-value]


@dataclass
class Answer:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def json_answer(document: Any) -> Answer:
    text = json.dumps(document, indent=3, ensure_ascii=False) + "\n"
    return Answer(200, text.encode("utf-8"), "application/json; charset=utf-8")


def error_answer(error: OrthancError, method: str, uri: str) -> Answer:
    """The JSON body Orthanc sends with HttpDescribeErrors (its default)."""
    document: dict[str, Any] = {"HttpError": HTTPStatus(error.status).phrase, "HttpStatus": error.status,
                                "Message": error.message, "Method": method, "OrthancError": error.message,
                                "OrthancStatus": error.orthanc_status, "Uri": uri}
    if error.details:
        document["Details"] = error.details
    return Answer(error.status, json.dumps(document, indent=3).encode(), "text/plain")


class Faults:
    """Switches that make the fake misbehave as a real Orthanc, or the network to it, can.

    - freeze() / resume(): connections are accepted and requests read, but nothing is answered
      (or done) until resumed: a stopped process, a hung server;
    - fail(status, times): that many requests (all by default) get `status` (503: a proxy whose
      upstream is gone) without reaching Orthanc;
    - drop_answers(times): that many `POST /instances` are stored, but their answers are lost (the
      connection closes instead): the case orthancfs must settle by asking;
    - list_limit: level lists are cut to that many entries, silently: a proxy or plugin that caps
      answers (real 1.10.1 and 1.12.7 do not cut these lists, not even with LimitFindResults).
    """

    def __init__(self) -> None:
        self._running = threading.Event()
        self._running.set()
        self._lock = threading.Lock()
        self._left = {"fail": 0.0, "drop": 0.0}
        self.status = 503
        self.list_limit: int | None = None
        self.failed = 0
        self.dropped = 0

    def freeze(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def wait(self) -> None:
        self._running.wait()

    def fail(self, status: int = 503, times: float = math.inf) -> None:
        self.status = status
        self._left["fail"] = times

    def drop_answers(self, times: float = math.inf) -> None:
        self._left["drop"] = times

    def clear(self) -> None:
        self._left = {"fail": 0.0, "drop": 0.0}
        self.list_limit = None
        self.resume()

    def take(self, fault: str) -> bool:
        """Whether this request meets `fault` ("fail" or "drop"), counting it."""
        with self._lock:
            if self._left[fault] <= 0:
                return False
            self._left[fault] -= 1
            if fault == "fail":
                self.failed += 1
            else:
                self.dropped += 1
            return True


@dataclass
class Call:
    """One request as a route sees it: the groups its pattern matched, the query, the body."""

    groups: tuple[str, ...]
    query: dict[str, list[str]]
    body: bytes

    def integer(self, name: str) -> int | None:
        if name not in self.query:
            return None
        try:
            return int(self.query[name][0])
        except ValueError:
            raise bad_parameter() from None

    @property
    def expand(self) -> bool:
        return "expand" in self.query and self.query["expand"][0].lower() not in ("false", "0")


Route = Callable[[Call], "Answer | None"]


class RestApi:
    """Orthanc's URIs (the subset orthancfs uses) mapped to the store: routing, query parameters
    and answer shapes; `None` from answer() means: close the connection without answering."""

    def __init__(self, fake: FakeOrthanc):
        self.fake = fake
        self.store = fake.store
        level = "(patients|studies|series|instances)"
        self.routes: list[tuple[re.Pattern[str], dict[str, Route]]] = [
            (re.compile(path), methods) for path, methods in [
                (r"/system", {"GET": self.system}),
                (r"/statistics", {"GET": self.statistics}),
                (r"/changes", {"GET": self.changes, "DELETE": self.clear_changes}),
                (r"/tools/lookup", {"POST": self.lookup}),
                (r"/tools/find", {"POST": self.find}),
                (r"/tools/labels", {"GET": self.labels}),
                (r"/(instances)", {"GET": self.listing, "POST": self.upload}),
                (r"/(patients|studies|series)", {"GET": self.listing}),
                (rf"/{level}/([^/]+)", {"GET": self.document, "DELETE": self.delete}),
                (rf"/{level}/([^/]+)/{level}", {"GET": self.descendants}),
                (r"/instances/([^/]+)/file", {"GET": self.file}),
                (r"/instances/([^/]+)/attachments/dicom/(info|md5)", {"GET": self.attachment}),
            ]
        ]

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> Answer | None:
        path = path.rstrip("/") or "/"
        for pattern, methods in self.routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            route = methods.get(method)
            if route is None:
                return Answer(405, headers={"Allow": ",".join(methods)})
            try:
                return route(Call(match.groups(), query, body))
            except Missing:
                return Answer(404)  # an unknown ID on a resource route: Orthanc sends no body
            except OrthancError as error:
                return error_answer(error, method, path)
        return error_answer(unknown_resource(), method, path)

    def system(self, call: Call) -> Answer:
        return json_answer(system_document(self.fake))

    def statistics(self, call: Call) -> Answer:
        return json_answer(self.store.statistics())

    def listing(self, call: Call) -> Answer:
        level = call.groups[0]
        since, limit = call.integer("since"), call.integer("limit")
        if since is not None and limit is None:
            raise bad_request(f'Missing "limit" argument for GET request against: /{level}/')
        if limit is not None and since is None:
            raise bad_request(f'Missing "since" argument for GET request against: /{level}/')
        found = self.store.listing(level, call.expand, since, limit)
        cut = self.fake.faults.list_limit
        return json_answer(found if cut is None else found[:cut])

    def document(self, call: Call) -> Answer:
        return json_answer(self.store.document(*call.groups))

    def delete(self, call: Call) -> Answer:
        return json_answer(self.store.delete(*call.groups))

    def descendants(self, call: Call) -> Answer:
        level, ident, below = call.groups
        if LEVELS.index(below) <= LEVELS.index(level):
            raise unknown_resource()  # /series/{id}/studies and the like are no routes
        return json_answer(self.store.descendants(level, ident, below))

    def file(self, call: Call) -> Answer:
        instance = self.store.instance(call.groups[0])
        name = instance.uuid if self.store.version < (1, 12, 0) else instance.id
        return Answer(200, instance.data, "application/dicom", {"Content-Disposition": f'filename="{name}.dcm"'})

    def attachment(self, call: Call) -> Answer:
        ident, what = call.groups
        if what == "md5":
            return Answer(200, self.store.instance(ident).md5.encode(), "text/plain")
        return json_answer(self.store.attachment_info(ident))

    def upload(self, call: Call) -> Answer | None:
        stored = self.store.store(call.body)
        if self.fake.faults.take("drop"):
            return None
        return json_answer(stored)

    def lookup(self, call: Call) -> Answer:
        return json_answer(self.store.lookup(call.body.decode("utf-8", "replace")))

    def find(self, call: Call) -> Answer:
        return json_answer(self.store.find(json.loads(call.body)))

    def labels(self, call: Call) -> Answer:
        if self.store.version < (1, 12, 0):
            raise unknown_resource()
        return json_answer([])  # labels are not modelled: none in use

    def changes(self, call: Call) -> Answer:
        if "last" in call.query:  # the newest entry only
            return json_answer(self.store.last_change())
        try:
            since, limit = call.integer("since"), call.integer("limit")
        except OrthancError:  # Orthanc reads a bad number here as "from the start", not as an error
            since, limit = 0, None
        return json_answer(self.store.changes(since or 0, DEFAULT_CHANGES_LIMIT if limit is None else limit))

    def clear_changes(self, call: Call) -> Answer:
        self.store.clear_changes()
        return Answer(200, b"", "text/plain")


def system_document(fake: FakeOrthanc) -> dict[str, Any]:
    """`GET /system` as the configured version answers it (1.12 says much more than 1.10)."""
    version = fake.store.version
    document: dict[str, Any] = {
        "ApiVersion": API_VERSIONS.get(version, 16 if version < (1, 12, 0) else 27), "CheckRevisions": False,
        "DatabaseBackendPlugin": None, "DatabaseVersion": 6, "DicomAet": "ORTHANC", "DicomPort": 4242,
        "HttpPort": fake.port, "IsHttpServerSecure": True, "Name": fake.name, "PluginsEnabled": True,
        "StorageAreaPlugin": None, "Version": fake.version}
    if version >= (1, 12, 0):
        document.update(
            DatabaseServerIdentifier=fake.server_identifier, DefaultRetrieveMethod="C-MOVE", HasLabels=True,
            IngestTranscoding="", MainDicomTags=_system_main_tags(fake.store), MaximumPatientCount=0,
            MaximumStorageMode="Recycle", MaximumStorageSize=0, OverwriteInstances=False, ReadOnly=False,
            StorageCompression=False, UserMetadata={})
    if version >= (1, 12, 5):  # what orthancfs's DESIGN calls the capabilities of /system
        document["Capabilities"] = {"HasExtendedChanges": True, "HasExtendedFind": True}
    return document


def _system_main_tags(store: FakeStore) -> dict[str, str]:
    def listed(keywords: tuple[str, ...]) -> str:
        tags = sorted(tag_for_keyword(keyword) for keyword in keywords)
        return ";".join(f"{tag >> 16:04x},{tag & 0xFFFF:04x}" for tag in tags)

    return {SYSTEM_TAG_LEVELS[level]: listed(keywords) for level, keywords in store.tags.items()}


class FakeOrthanc:
    """An Orthanc REST server in a background thread on a free loopback port, with its data in
    memory (see the module docstring).  `users`: HTTP Basic credentials it demands, as Orthanc's
    RegisteredUsers (401 otherwise).  `requests` lists what it was asked, `connections` counts
    the TCP connections it accepted (keep-alive reuses them)."""

    def __init__(self, version: str = DEFAULT_VERSION, users: dict[str, str] | None = None, name: str = "MyOrthanc"):
        self.version = version
        self.name = name
        self.users = dict(users or {})
        self.store = FakeStore(parse_version(version))
        self.faults = Faults()
        self.api = RestApi(self)
        self.requests: list[str] = []
        self.connections = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._http = _HttpServer(self)
        self.port: int = self._http.server_address[1]
        self.server_identifier = orthanc_id("FakeOrthanc", self.url)  # 1.12's DatabaseServerIdentifier
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # stop() waits for the serving loop to look up: at most this long (the fast tests start and stop one a test).
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.005},
                                        name=f"fake-orthanc-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and cut every open connection (a keep-alive one must not outlive the server)."""
        self.faults.resume()
        self._http.shutdown()
        self._http.server_close()
        with self._lock:
            open_sockets, self._open = list(self._open), set()
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeOrthanc:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def add(self, *files: bytes) -> list[dict[str, Any]]:
        """Store files directly (no HTTP): test data at the speed of memory; Orthanc's answers."""
        return [self.store.store(data) for data in files]

    def client(self, timeout: float = 30.0, retries: int = 0) -> ClosingClient:
        """An orthancfs client of this server (with its first user's credentials), as OrthancServer.client()."""
        user, password = next(iter(self.users.items()), (None, None))
        return ClosingClient(ClientSettings(self.url, user, password, timeout=timeout, retries=retries))

    def authorized(self, header: str | None) -> bool:
        if not self.users:
            return True
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except ValueError:  # bad base64 or bad UTF-8
            return False
        return user in self.users and self.users[user] == password

    def serve(self, method: str, target: str, body: bytes, authorization: str | None) -> Answer | None:
        """One request, faults first (they stand for what lies between the client and Orthanc)."""
        self.requests.append(f"{method} {target}")
        self.faults.wait()
        if self.faults.take("fail"):
            return Answer(self.faults.status, b"", "text/plain")
        if not self.authorized(authorization):
            return Answer(401, headers={"WWW-Authenticate": REALM})
        parts = urlsplit(target)
        return self.api.answer(method, parts.path, parse_qs(parts.query, keep_blank_values=True), body)

    def opened(self, sock: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            self._open.add(sock)

    def closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)


class ClosingClient(OrthancClient):
    """An OrthancClient that is its own context manager."""

    def __enter__(self) -> OrthancClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # orthancfs opens many connections at once (pages, downloads, uploads)

    def __init__(self, fake: FakeOrthanc):
        self.fake = fake
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone before its answer (a timeout, a frozen fake resumed) is no news; the rest is
        socketserver's traceback on stderr."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Orthanc's civetweb
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.server.fake.opened(self.connection)

    def finish(self) -> None:
        self.server.fake.closed(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:  # noqa: N802 - the names http.server calls
        self._serve()

    do_POST = do_DELETE = do_PUT = do_GET  # noqa: N815

    def _serve(self) -> None:
        body = self._body()
        try:
            answer = self.server.fake.serve(self.command, self.path, body, self.headers.get("Authorization"))
        except Exception:  # a bug of the fake: say so, as Orthanc would, rather than drop the connection
            log.exception("FakeOrthanc failed on %s %s", self.command, self.path)
            answer = error_answer(OrthancError(500, "Internal error", -1), self.command, self.path)
        if answer is None:  # the answer is lost: close without a word
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(answer.status)
        if answer.content_type:
            self.send_header("Content-Type", answer.content_type)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._chunked()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _chunked(self) -> bytes:
        parts = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            parts.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(parts)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        log.debug("%s %s", self.address_string(), format % args)
