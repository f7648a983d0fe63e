"""Deleting through the mount, and the switches that allow or forbid changes."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from orthancfs.demo.samples import make_dicom, series
from orthancfs.demo.server import OrthancServer

from . import uploads_data as data
from .conftest import mounted
from .helpers import mount_options


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OrthancServer]:
    """Two patients, each with one study of two series of two instances."""
    with OrthancServer(tmp_path / "orthanc") as server, server.client() as client:
        for patient in ("DA", "DB"):
            tags = {"patient_id": patient, "patient_name": f"Delete^{patient}", "study_uid": generate_uid(),
                    "study_date": "20210304", "study_description": "Two series"}
            for description in ("First", "Second"):
                for spec in series(2, series_description=description, **tags):
                    client.upload(make_dicom(spec))
        yield server


def orthanc_ids(server: OrthancServer, level: str) -> set[str]:
    with server.client() as client:
        return set(client.get_json(f"/{level}"))


def errno_of(action) -> int:  # noqa: ANN001
    with pytest.raises(OSError) as caught:
        action()
    return caught.value.errno


def first(folder: Path) -> Path:
    return folder / sorted(os.listdir(folder))[0]


def test_deleting_is_off_by_default(server: OrthancServer, tmp_path: Path) -> None:
    before = orthanc_ids(server, "instances")
    with mounted(server.url, tmp_path) as mnt:
        patient = first(mnt / "by-patients")
        some_file = next(patient.rglob("*.dcm"))
        assert errno_of(some_file.unlink) == errno.EACCES
        assert errno_of(lambda: os.rmdir(first(patient))) == errno.EACCES
        assert subprocess.run(["rm", "-rf", patient], capture_output=True).returncode != 0
        assert stat.S_IMODE(os.stat(patient).st_mode) == 0o555
    assert orthanc_ids(server, "instances") == before


def test_rm_of_an_instance(server: OrthancServer, tmp_path: Path) -> None:
    with mounted(server.url, tmp_path, "--allow-delete") as mnt:
        patient = first(mnt / "by-patients")
        assert stat.S_IMODE(os.stat(patient).st_mode) == 0o755  # rm needs write permission on the folder
        victim = next(patient.rglob("*.dcm"))
        victim.unlink()
        assert victim.stem not in orthanc_ids(server, "instances")
        for view in ("by-patients", "by-studies", "by-dates"):  # (by-uids names files by SOP UID)
            assert victim.stem not in {p.stem for p in (mnt / view).rglob("*.dcm")}
        assert len(list((mnt / "by-uids").rglob("*.dcm"))) == len(orthanc_ids(server, "instances"))


def test_rmdir_of_a_non_empty_series_is_one_call(server: OrthancServer, tmp_path: Path) -> None:
    with mounted(server.url, tmp_path, "--allow-delete", "--debug") as mnt:
        study = first(mnt / "by-uids")
        series = next(p for p in sorted(study.iterdir()) if p.is_dir())
        os.rmdir(series)  # a folder full of instances: the whole series goes, as in Orthanc's WebDAV
        assert len(orthanc_ids(server, "series")) == 3
        assert not series.exists()
    log = (tmp_path / "mount-mnt.log").read_text()
    assert log.count("DELETE /series/") == 1 and "DELETE /instances/" not in log


@pytest.mark.parametrize("view", ["by-patients", "by-studies", "by-dates", "by-uids"])
def test_rm_rf_of_a_study_in_each_view(server: OrthancServer, tmp_path: Path, view: str) -> None:
    studies_before = orthanc_ids(server, "studies")
    with mounted(server.url, tmp_path, "--allow-delete") as mnt:
        study = {
            "by-patients": lambda: first(first(mnt / "by-patients")),
            "by-studies": lambda: first(mnt / "by-studies"),
            "by-dates": lambda: first(mnt / "by-dates/2021/2021-03"),
            "by-uids": lambda: first(mnt / "by-uids"),
        }[view]()
        result = subprocess.run(["rm", "-rf", study], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        gone = studies_before - orthanc_ids(server, "studies")
        assert len(gone) == 1
        for other in ("by-studies", "by-uids"):
            assert len(os.listdir(mnt / other)) == len(studies_before) - 1
        assert not study.exists()


def test_rmdir_of_a_patient(server: OrthancServer, tmp_path: Path) -> None:
    with mounted(server.url, tmp_path, "--allow-delete") as mnt:
        patient = first(mnt / "by-patients")
        os.rmdir(patient)
        assert len(orthanc_ids(server, "patients")) == 1
        assert os.listdir(mnt / "by-patients") == [patient.name.replace("DA", "DB")]


def test_what_is_not_a_resource_cannot_be_deleted(server: OrthancServer, tmp_path: Path) -> None:
    before = orthanc_ids(server, "instances")
    with mounted(server.url, tmp_path, "--allow-delete") as mnt:
        study = first(mnt / "by-uids")
        assert errno_of((study / "study.json").unlink) == errno.EPERM
        assert errno_of(lambda: os.rmdir(mnt / "by-dates" / "2021")) == errno.EPERM
        assert errno_of(lambda: os.rmdir(mnt / "by-dates" / "2021" / "2021-03")) == errno.EPERM
        assert errno_of(lambda: os.rmdir(mnt / "by-patients")) == errno.EPERM
        assert errno_of(lambda: os.unlink(first(mnt / "by-patients"))) == errno.EISDIR
    assert orthanc_ids(server, "instances") == before


def test_read_only_refuses_everything(server: OrthancServer, tmp_path: Path) -> None:
    source = tmp_path / "new.dcm"
    source.write_bytes(data.instances(1, "RO")[0])
    before = orthanc_ids(server, "instances")
    with mounted(server.url, tmp_path, "--read-only", "--allow-delete") as mnt:
        assert errno_of(lambda: shutil.copy(source, mnt / "uploads")) == errno.EROFS
        assert errno_of(lambda: (mnt / "uploads" / "d").mkdir()) == errno.EROFS
        assert errno_of(next((mnt / "by-patients").rglob("*.dcm")).unlink) == errno.EROFS
        assert stat.S_IMODE(os.stat(mnt / "uploads").st_mode) == 0o555
        assert " ro," in f" {mount_options(mnt)},"
    assert orthanc_ids(server, "instances") == before


def test_no_upload(server: OrthancServer, tmp_path: Path) -> None:
    source = tmp_path / "new.dcm"
    source.write_bytes(data.instances(1, "NU")[0])
    with mounted(server.url, tmp_path, "--no-upload") as mnt:
        assert errno_of(lambda: shutil.copy(source, mnt / "uploads")) == errno.EACCES
        assert stat.S_IMODE(os.stat(mnt / "uploads").st_mode) == 0o555
        assert os.statvfs(mnt).f_bavail == 0


def test_uploads_report_free_space(server: OrthancServer, tmp_path: Path) -> None:
    with mounted(server.url, tmp_path) as mnt:
        assert os.statvfs(mnt).f_bavail > 0  # file managers check before copying
