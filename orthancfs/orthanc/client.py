"""OrthancClient: Orthanc's REST API as typed calls, the only code in orthancfs that builds a URL.

Each call goes through the one pipeline (pipeline.py): tries with a bound, failures judged
once, outages noted.  How the bytes travel is a transport's business: from threads through
urllib3 (blocking.py), from the FUSE loop with h11 on trio (loop.py), downloads spliced
into their spool (downloads.py).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, BinaryIO

import urllib3

from ..errors import OrthancFailed, OrthancUnavailable
from .answers import Answer
from .blocking import BlockingTransport
from .connection import ClientSettings, validate_url
from .downloads import FileWriteError, fill
from .levels import Level
from .pipeline import FAIL_FAST_SECONDS, Attempt, Health, Retrying, TransportFailure, attempts, reason

log = logging.getLogger("orthancfs.orthanc")

DIRECT_BODY_LIMIT = 8 << 20  # uploads up to this size are read whole, larger ones streamed from disk
CONFIRM_TIMEOUT = 5.0  # seconds to wait for the answer to "did you store it?", at most


@dataclass(frozen=True)
class Capabilities:
    """What the connected Orthanc can do, from its /system."""

    version: tuple[int, int, int]
    version_text: str
    # /tools/find pages through every match (1.12.5, with a database that has it).  Before, with
    # LimitFindResults set, no paging ever reaches past the limit (1.10 answers the first limit + 1
    # matches, whatever Since says): a listing made from it could be cut, so none is.
    extended_find: bool = False

    @property
    def attachment_range(self) -> bool:
        """Range requests on /instances/{id}/attachments/dicom/data (1.12.5)."""
        return self.version >= (1, 12, 5)

    @property
    def labels(self) -> bool:
        """Labels on resources, /tools/labels, and in /tools/find (1.12.0)."""
        return self.version >= (1, 12, 0)

    @classmethod
    def from_system(cls, system: dict[str, Any]) -> Capabilities:
        text = str(system.get("Version", "0"))
        if text == "mainline":  # development builds are newer than any release
            return cls((999, 0, 0), text, bool(system.get("Capabilities", {}).get("HasExtendedFind", False)))
        extended = bool(system.get("Capabilities", {}).get("HasExtendedFind", False))
        numbers = [int(n) for n in re.findall(r"\d+", text)[:3]]
        numbers += [0] * (3 - len(numbers))
        return cls((numbers[0], numbers[1], numbers[2]), text, extended)


PAST_EVERY_CHANGE = 1 << 53  # a /changes cursor beyond any entry


class OrthancClient:
    """A thread-safe client for one Orthanc server."""

    def __init__(self, settings: ClientSettings):
        self.settings = settings
        self.base_url = validate_url(settings.url)
        self.transport = BlockingTransport(settings)
        self.health = Health(self.base_url, min(FAIL_FAST_SECONDS, settings.timeout))

    def close(self) -> None:
        self.health.close()
        self.transport.close()

    def attempts(self) -> Iterator[Attempt]:
        settings = self.settings
        return attempts(settings.timeout, settings.connect_timeout, settings.retries)

    # --- the server --------------------------------------------------------------------

    @cached_property
    def system(self) -> dict[str, Any]:
        """`/system`, read once: name, version, API version."""
        return self.get_json("/system")

    @cached_property
    def capabilities(self) -> Capabilities:
        return Capabilities.from_system(self.system)

    def statistics(self) -> dict[str, Any]:
        return self.get_json("/statistics")

    def changes(self, since: int, limit: int) -> dict[str, Any]:
        """`/changes` after `since`: {Changes: [{ChangeType, ID, ResourceType, Seq, ...}], Done, Last}.
        (Orthanc logs additions and updates, never deletions.)"""
        return self.get_json("/changes", {"since": since, "limit": limit})

    def last_change(self) -> int:
        """The number the newest entry of /changes got: where following them starts.  Not
        `?last`, which names the newest entry still there (deleting a resource removes its
        entries, so that number goes back); an empty page's Last is the sequence's own end."""
        return int(self.get_json("/changes", {"since": PAST_EVERY_CHANGE, "limit": 0}).get("Last", 0))

    # --- resources ------------------------------------------------------------------------

    def page(self, level: Level, since: int, limit: int) -> list[dict[str, Any]]:
        """`limit` expanded resources of `level` from position `since` (Orthanc's own order)."""
        return self.get_json(f"/{level.route}", {"expand": "", "since": since, "limit": limit})

    def item(self, level: Level, orthanc_id: str) -> dict[str, Any]:
        """`GET /{level}/{id}`: one resource, expanded."""
        return self.get_json(f"/{level.route}/{orthanc_id}")

    def children(self, level: Level, orthanc_id: str) -> list[dict[str, Any]]:
        """The expanded children of a patient, study or series."""
        assert level.child is not None
        return self.get_json(f"/{level.route}/{orthanc_id}/{level.child.route}")

    def grandchildren(self, level: Level, orthanc_id: str) -> list[dict[str, Any]]:
        """The expanded grandchildren of a patient (its series) or a study (its instances), each
        naming its parent: one request for the listings of every child."""
        assert level.grandchild is not None
        return self.get_json(f"/{level.route}/{orthanc_id}/{level.grandchild.route}")

    def lookup(self, identifier: str) -> list[dict[str, Any]]:
        """`POST /tools/lookup`: the resources whose patient ID or study, series or SOP instance
        UID is `identifier`, each as {ID, Path, Type}.  Changes nothing, despite the POST."""
        return self.request("POST", "/tools/lookup", identifier.encode()).json("POST /tools/lookup")

    def delete_resource(self, level: Level, orthanc_id: str) -> None:
        self.delete(f"/{level.route}/{orthanc_id}")

    def find(self, level: Level, page_size: int, labels: list[str] | None = None,
             query: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """`POST /tools/find`, expanded, every match: page after page until one comes back empty.

        A short page is not the end: with LimitFindResults or LimitFindInstances set (Orthanc's
        scalability FAQ recommends them), Orthanc cuts each answer to its limit silently, whatever
        Limit asks.  Complete only where Capabilities.extended_find: before that, paging never gets
        past the server's limit.
        """
        asked: dict[str, Any] = {"Level": level.resource_type, "Query": query or {}, "Expand": True}
        if labels:
            asked |= {"Labels": labels, "LabelsConstraint": "All"}
        found: list[dict[str, Any]] = []
        while page := self.request("POST", "/tools/find", json.dumps({**asked, "Since": len(found),
                                                                      "Limit": page_size}).encode()).json(
                "POST /tools/find"):
            found.extend(page)
        return found

    def listed_page(self, level: Level, since: int, limit: int) -> list[dict[str, Any]]:
        """A page of `level` with only what a listing shows (extended find's ResponseContent: main
        tags, the parent and LastUpdate, not the lists of children), each shaped as page() gives it.
        May be cut short by the server's LimitFindResults (callers check)."""
        asked = {"Level": level.resource_type, "Query": {}, "ResponseContent": ["MainDicomTags", "Metadata", "Parent"],
                 "Since": since, "Limit": limit}
        found = self.request("POST", "/tools/find", json.dumps(asked).encode()).json("POST /tools/find")
        for item in found:
            item["LastUpdate"] = item.pop("Metadata", {}).get("LastUpdate", "")
        return found

    def all_labels(self) -> list[str]:
        """Every label in use (`/tools/labels`, 1.12.0)."""
        return self.get_json("/tools/labels")

    def add_label(self, level: Level, orthanc_id: str, label: str) -> None:
        self.request("PUT", f"/{level.route}/{orthanc_id}/labels/{label}", b"")

    def remove_label(self, level: Level, orthanc_id: str, label: str) -> None:
        self.request("DELETE", f"/{level.route}/{orthanc_id}/labels/{label}")

    # --- instances' files -------------------------------------------------------------------

    def download_instance(self, orthanc_id: str, fd: int, arrived: Callable[[int], None]) -> int:
        """Write the DICOM file of instance `orthanc_id` into `fd` from offset 0, calling
        `arrived(total)` as bytes land; return the total."""
        return self.download(f"/instances/{orthanc_id}/file", fd, arrived)

    def download(self, path: str, fd: int, arrived: Callable[[int], None]) -> int:
        """The body of GET `path` into `fd`, as download_instance.

        Asks for no compression: Orthanc would gzip the whole file before sending the first
        byte (20x slower for a 64 MiB instance, measured), and pixel data hardly compresses.
        """
        response = self._streamed("GET", path, {"Accept-Encoding": "identity"})
        try:
            total, spliced = fill(response, fd, arrived)
        except FileWriteError:
            raise  # the local disk's error (ENOSPC...), as it is
        except (OSError, urllib3.exceptions.HTTPError, http.client.HTTPException) as exc:  # the network's
            raise OrthancUnavailable(f"GET {path}: download interrupted: {reason(exc)}") from None
        finally:
            response.close()
        log.debug("downloaded %s: %d bytes, %s", path, total, "spliced" if spliced else "copied")
        return total

    def instance_range(self, orthanc_id: str, first: int, last: int) -> bytes:
        """Bytes `first` to `last` (included) of an instance's DICOM file: one Range request (Orthanc
        1.12.5; never a suffix range, `bytes=-N`, which Orthanc reads otherwise than RFC 7233)."""
        path = f"/instances/{orthanc_id}/attachments/dicom/data"
        answer = self.request("GET", path, headers={"Range": f"bytes={first}-{last}", "Accept-Encoding": "identity"})
        if answer.status != 206 or len(answer.body) != last - first + 1:
            raise OrthancFailed(f"GET {path} bytes {first}-{last}: HTTP {answer.status}, {len(answer.body)} bytes")
        return answer.body

    def attachment_info(self, instance_id: str) -> dict[str, Any]:
        """Size and MD5 of the DICOM file Orthanc holds as `instance_id`.

        Asked to settle an upload whose answer never came: so it is tried even while the
        client fails fast after an outage (the outage is often that very upload's timeout),
        with a short timeout of its own."""
        path = f"/instances/{instance_id}/attachments/dicom/info"
        answer = self._tried("GET", path, timeout=min(self.settings.timeout, CONFIRM_TIMEOUT))
        self.health.succeeded()  # Orthanc answers: no need to fail fast any more
        return answer.json(f"GET {path}")

    def upload(self, data: bytes) -> Any:
        """`POST /instances`: store one DICOM file (or, from Orthanc 1.8.2, a ZIP of them)."""
        return self.request("POST", "/instances", data, {"Content-Type": "application/dicom"}).json(
            "POST /instances")

    def upload_fd(self, fd: int, body: bytes | None = None) -> Any:
        """`POST /instances` of the file open as `fd` (or of `body`, its bytes read already), read
        anew for each try (a half-sent file cannot be sent again); files above DIRECT_BODY_LIMIT
        are streamed, never read into RAM."""
        data = body if body is not None else (lambda: _body_of(fd))
        return self.request("POST", "/instances", data, {"Content-Type": "application/dicom"}).json(
            "POST /instances")

    # --- any path (tests and tools; orthancfs itself uses the calls above) --------------------

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params).json(f"GET {path}")

    def get_bytes(self, path: str) -> bytes:
        return self.request("GET", path).body

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    # --- the pipeline ---------------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | Callable[[], bytes | BinaryIO] | None = None,
                headers: Mapping[str, str] | None = None, params: Mapping[str, Any] | None = None) -> Answer:
        """One request through the pipeline, refused at once during an outage."""
        with self.health.watching(method, path):
            return self._tried(method, path, body, headers, params)

    def _tried(self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None,
               params: Mapping[str, Any] | None = None, timeout: float | None = None) -> Answer:
        retrying = Retrying(method, path, self.base_url)
        for attempt in self.attempts():
            log.debug("%s %s", method, path)
            fresh = body() if callable(body) else body  # a half-sent file cannot be sent again
            try:
                outcome: Answer | TransportFailure = self.transport.send(
                    method, path, attempt, timeout or self.settings.timeout, fresh, params, headers)
            except TransportFailure as failure:
                outcome = failure
            finally:
                if hasattr(fresh, "close"):
                    fresh.close()
            answer = retrying.judge(attempt, outcome)
            if answer is not None:
                return answer
            time.sleep(attempt.delay)
        raise AssertionError("unreachable: the last attempt always returns or raises")

    def _streamed(self, method: str, path: str, headers: Mapping[str, str]) -> Any:
        """A request whose body is left to read (a download), through the same judging."""
        retrying = Retrying(method, path, self.base_url)
        with self.health.watching(method, path):
            for attempt in self.attempts():
                log.debug("%s %s", method, path)
                try:
                    response = self.transport.stream(method, path, attempt, self.settings.timeout, headers)
                except TransportFailure as failure:
                    retrying.judge(attempt, failure)  # raises, or says: again
                    time.sleep(attempt.delay)
                    continue
                if response.status < 400:
                    return response
                with contextlib.closing(response):
                    answer = Answer(response.status, {k.lower(): v for k, v in response.headers.items()},
                                    response.data)
                if retrying.judge(attempt, answer) is not None:
                    raise AssertionError("an error status is never a success")
                time.sleep(attempt.delay)
        raise AssertionError("unreachable: the last attempt always returns or raises")


def _body_of(fd: int) -> bytes | BinaryIO:
    """A file's content to POST: its bytes if small, else a file object of its own (streamed)."""
    size = os.fstat(fd).st_size
    if size <= DIRECT_BODY_LIMIT:
        return os.pread(fd, size, 0)
    file = os.fdopen(os.dup(fd), "rb")  # closed after the try (_tried)
    file.seek(0)
    return file
