"""What Orthanc answered, whichever way it was asked, and what an answer means.

Every way of sending (blocking, from an event loop) reads an answer into an `Answer`
and hands it to `meaning()`, the one place that turns statuses into the model's errors.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import AccessDenied, NotFound, OrthancFailed, OrthancUnavailable, StorageFull, UploadRejected

RETRYABLE_STATUS = frozenset({502, 503})


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, read whole."""

    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    def json(self, what: str) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            raise OrthancFailed(f"{what}: Orthanc answered with something that is not JSON") from None


def meaning(method: str, path: str, answer: Answer) -> Answer:
    """The answer itself if it is a success, else the model error it means (with Orthanc's words)."""
    status = answer.status
    if status < 400:
        return answer
    what = f"{method} {path}: HTTP {status}{orthanc_detail(answer.body)}"
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


def orthanc_detail(body: bytes) -> str:
    """Orthanc explains errors in a JSON body (with HttpDescribeErrors): keep its words."""
    try:
        document = json.loads(body)
    except ValueError:
        return ""
    if isinstance(document, dict):
        message = document.get("Details") or document.get("Message")
        if message:
            return f" ({message})"
    return ""
