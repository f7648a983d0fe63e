"""Fixtures: a real Orthanc loaded with generated DICOM data, and real mounts of it."""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orthancfs.demo.samples import make_dicom
from orthancfs.demo.server import ORTHANC_BINARY, OrthancServer
from orthancfs.orthanc import OrthancClient

from . import dataset
from .helpers import MountProcess


@dataclass
class LoadedOrthanc:
    server: OrthancServer
    client: OrthancClient
    data: dataset.Dataset
    big_instance_id: str

    @property
    def url(self) -> str:
        return self.server.url


def pytest_report_header() -> str:
    root = os.environ.get("ORTHANC_ROOT")
    command = ["chroot", root, "/usr/sbin/Orthanc", "--version"] if root else [ORTHANC_BINARY, "--version"]
    try:
        version = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.split("\n")[0]
    except OSError as exc:
        version = f"cannot run it: {exc}"
    return f"Orthanc under test: {version}{f' (in {root}, with chroot)' if root else ''}"


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadedOrthanc]:
    """One Orthanc for the whole session, loaded once; tests must not change it."""
    data = dataset.build()
    with warnings.catch_warnings():  # the invalid dates and long names are on purpose
        warnings.simplefilter("ignore", UserWarning)
        files = {spec.sop_uid: make_dicom(spec) for spec in data.specs}
    with OrthancServer(tmp_path_factory.mktemp("orthanc")) as server, server.client() as client:
        answers = {sop_uid: client.upload(content) for sop_uid, content in files.items()}
        yield LoadedOrthanc(server, client, data, answers[data.big_sop_uid]["ID"])


@pytest.fixture
def mount(orthanc: LoadedOrthanc, tmp_path: Path) -> Iterator[Path]:
    """The session Orthanc, mounted by the real command for one test."""
    with mounted(orthanc.url, tmp_path) as mountpoint:
        yield mountpoint


class mounted:  # noqa: N801 - used like a function: `with mounted(url, tmp) as path`
    """Mount `url` under `tmp/mnt` with extra CLI arguments; unmount and check the log on exit."""

    def __init__(self, url: str, tmp: Path, *args: str, expect_warnings: bool = False):
        self.mountpoint = tmp / "mnt"
        self.mountpoint.mkdir(exist_ok=True)
        self.cache = tmp / "cache"
        if "--cache-dir" not in args:
            args = ("--cache-dir", str(self.cache), *args)
        self.process = MountProcess(url, self.mountpoint, *args, log_dir=tmp)
        self.expect_warnings = expect_warnings

    def __enter__(self) -> Path:
        self.process.wait_mounted()
        return self.mountpoint

    def __exit__(self, exc_type: object, *rest: object) -> None:
        code = self.process.stop()
        log = self.process.log()
        if exc_type is None:
            assert code == 0, f"orthancfs exited with {code}: {log}"
            assert "Traceback" not in log, log
            if not self.expect_warnings:
                assert " WARNING " not in log and " ERROR " not in log, log


@pytest.fixture(autouse=True)
def no_unexpected_warnings(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """In-process tests fail on any warning they did not ask for (as S3QL's suite does).

    A test that provokes warnings on purpose says so with @pytest.mark.allow_warnings.
    """
    yield
    if request.node.get_closest_marker("allow_warnings"):
        return
    records = caplog.get_records("call")
    bad = [r for r in records if r.levelno >= logging.WARNING and r.name.startswith("orthancfs")]
    assert not bad, f"unexpected log messages: {[r.getMessage() for r in bad]}"
