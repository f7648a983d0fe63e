"""Orthanc unavailable, through every frontend: an error within a bound, never a hang (README,
"When Orthanc is down"); an upload then stays, with a reason that says what is known."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from ..fake_orthanc import FakeOrthanc
from .conftest import OpenFrontend
from .frontend import Error, fails, says
from .pacs import Pacs, by_uids, new_study

TIMEOUT = 0.3  # the client's --timeout
BOUND = 5.0  # seconds: the timeout, the check that settles an upload (as long again), and slack for a busy machine

pytestmark = pytest.mark.allow_warnings  # outages are logged, as they should be


@contextlib.contextmanager
def within(seconds: float) -> Iterator[None]:
    started = time.monotonic()
    yield
    assert time.monotonic() - started < seconds


def test_a_frozen_orthanc_is_unavailable_not_a_hang(open_frontend: OpenFrontend, fake: FakeOrthanc,
                                                     data: Pacs) -> None:
    frontend = open_frontend(timeout=TIMEOUT)
    fake.faults.freeze()
    for operation, path in [(frontend.listdir, "by-patients"), (frontend.stat, "by-studies/x"),
                            (frontend.read, by_uids(data.of_patient("P-LI")[0]))]:
        with within(BOUND), fails(frontend, Error.UNAVAILABLE):
            operation(path)
    assert frontend.listdir("uploads") == []  # a local folder: no need of Orthanc


def test_a_download_that_stops_is_an_error_not_a_hang(open_frontend: OpenFrontend, fake: FakeOrthanc,
                                                      data: Pacs) -> None:
    """The file is known (its folder listed before the outage); its content is not."""
    frontend = open_frontend(timeout=TIMEOUT)
    path = by_uids(data.big)
    assert frontend.stat(path) == (False, len(data.big.data))
    fake.faults.freeze()
    with within(BOUND), fails(frontend, Error.UNAVAILABLE):
        frontend.read(path, 4 << 20, 4096)


def test_an_upload_to_a_frozen_orthanc_stays_not_confirmed(open_frontend: OpenFrontend, fake: FakeOrthanc) -> None:
    """Sent, no answer: it may have arrived, and Orthanc cannot be asked either."""
    frontend = open_frontend(timeout=TIMEOUT)
    fake.faults.freeze()
    [new] = new_study("UP-FROZEN")
    with within(BOUND):
        assert says(frontend, frontend.write_file("uploads/new.dcm", new.data), Error.UNAVAILABLE)
    assert frontend.listdir("uploads") == ["ORTHANCFS-REPORT.txt", "new.dcm"]
    assert frontend.status("uploads/new.dcm").startswith("not confirmed")


def test_an_upload_to_a_stopped_orthanc_stays_not_sent(open_frontend: OpenFrontend, fake: FakeOrthanc) -> None:
    frontend = open_frontend(timeout=TIMEOUT)
    fake.stop()
    [new] = new_study("UP-STOPPED")
    with within(BOUND):
        assert says(frontend, frontend.write_file("uploads/new.dcm", new.data), Error.UNAVAILABLE)
    assert frontend.status("uploads/new.dcm").startswith("not sent")
    with within(BOUND), fails(frontend, Error.UNAVAILABLE):
        frontend.listdir("by-studies")


def test_a_kept_file_is_sent_again_once_orthanc_is_back(open_frontend: OpenFrontend, fake: FakeOrthanc) -> None:
    """touch retries (README, "Uploading"); a WebDAV client, which cannot touch, PUTs the file again."""
    frontend = open_frontend(timeout=TIMEOUT)
    fake.faults.fail(503)  # a proxy whose Orthanc is gone
    [new] = new_study("UP-AGAIN")
    assert says(frontend, frontend.write_file("uploads/new.dcm", new.data), Error.UNAVAILABLE)
    assert "touch the file to retry" in frontend.status("uploads/new.dcm")
    fake.faults.clear()
    time.sleep(TIMEOUT + 0.1)  # after an outage the client fails fast for a moment (at most --timeout)
    if frontend.touches:
        frontend.touch("uploads/new.dcm")
    else:
        assert frontend.write_file("uploads/new.dcm", new.data) is None
    assert frontend.listdir("uploads") == []
    assert fake.store.instance(new.id).data == new.data
