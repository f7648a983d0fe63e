"""Orthanc dies or freezes under a live mount: EIO within the timeout, then recovery."""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from orthancfs.demo.samples import Spec, make_dicom, series
from orthancfs.demo.server import OrthancServer

from .conftest import mounted
from .helpers import wait_for
from .proxy import Proxy

TIMEOUT = 3.0  # the mount's --timeout for these tests
SLACK = 3.0  # process scheduling, retries' backoff, kernel round trips


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OrthancServer]:
    with OrthancServer(tmp_path / "orthanc") as server, server.client() as client:
        for spec in series(3, patient_id="F1", patient_name="Fault^Test", study_uid=generate_uid()):
            client.upload(make_dicom(spec))
        yield server


def eio_within(operation: Callable[[], object], bound: float) -> float:
    started = time.monotonic()
    with pytest.raises(OSError) as caught:
        operation()
    elapsed = time.monotonic() - started
    assert caught.value.errno == errno.EIO, caught.value
    assert elapsed < bound, f"took {elapsed:.1f}s"
    return elapsed


def uncached_operations(mnt: Path) -> list[Callable[[], object]]:
    """With --metadata-ttl 0 each of these must ask Orthanc."""
    return [lambda: os.listdir(mnt / "by-patients"), lambda: os.stat(mnt / "by-patients" / "F1 - Fault^Test"),
            lambda: os.statvfs(mnt)]


def working(mnt: Path) -> bool:
    try:
        return os.listdir(mnt / "by-patients") == ["F1 - Fault^Test"]
    except OSError:
        return False


def test_orthanc_stopped_then_restarted(server: OrthancServer, tmp_path: Path) -> None:
    args = ("--metadata-ttl", "0", "--timeout", str(TIMEOUT))
    context = mounted(server.url, tmp_path, *args, expect_warnings=True)
    with context as mnt:
        [instance] = [p for p in (mnt / "by-uids").rglob("*.dcm")][:1]
        assert working(mnt)
        server.stop()
        for operation in [*uncached_operations(mnt), lambda: instance.read_bytes()]:
            eio_within(operation, TIMEOUT + SLACK)
        server.start()  # same port, same storage
        wait_for(lambda: working(mnt), 30, "the mount to work again")
        assert instance.read_bytes()[128:132] == b"DICM"
    assert "answers again" in context.process.log()


def test_orthanc_frozen_then_resumed(server: OrthancServer, tmp_path: Path) -> None:
    """SIGSTOP: connections are accepted by the kernel but never answered."""
    with mounted(server.url, tmp_path, "--metadata-ttl", "0", "--timeout", str(TIMEOUT), expect_warnings=True) as mnt:
        assert working(mnt)
        server.process.send_signal(signal.SIGSTOP)
        try:
            for operation in uncached_operations(mnt):
                eio_within(operation, TIMEOUT + SLACK)
        finally:
            server.process.send_signal(signal.SIGCONT)
        wait_for(lambda: working(mnt), 30, "the mount to work again")


def test_warnings_are_rate_limited(server: OrthancServer, tmp_path: Path) -> None:
    context = mounted(server.url, tmp_path, "--metadata-ttl", "0", "--timeout", "1", expect_warnings=True)
    with context as mnt:
        server.stop()
        for _ in range(20):
            with pytest.raises(OSError):
                os.listdir(mnt / "by-patients")
    log = context.process.log()
    assert log.count("WARNING") == 1 and "is unavailable" in log, log


def test_a_download_cut_midway_is_eio_then_retried(server: OrthancServer, tmp_path: Path) -> None:
    """The connection drops in the middle of a file: readers waiting for its bytes get EIO, the next open retries."""
    big = make_dicom(Spec("F2", "Cut^Midway", generate_uid(), generate_uid(), frames=16, rows=256, columns=256))
    with server.client() as client:
        client.upload(big)
    proxy = Proxy(server.port)
    try:
        with mounted(f"http://127.0.0.1:{proxy.port}", tmp_path, "--timeout", str(TIMEOUT),
                     expect_warnings=True) as mnt:
            [path] = (mnt / "by-patients").glob("F2 - */*/*/*.dcm")
            proxy.cut_after = len(big) // 2  # from now on, connections drop after this many bytes
            started = time.monotonic()
            with open(path, "rb") as file:
                assert file.read(4096)[128:132] == b"DICM"  # what arrived is served
                with pytest.raises(OSError) as caught:
                    file.read()
            assert caught.value.errno == errno.EIO
            assert time.monotonic() - started < TIMEOUT + SLACK
            proxy.cut_after = None
            assert path.read_bytes() == big  # a failed download is not kept: this open fetched it again
    finally:
        proxy.close()
