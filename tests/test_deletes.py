"""Deleting through the mount, and the switches that allow or forbid changes."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pydicom.uid import generate_uid

from orthancfs.demo.samples import make_dicom, series
from orthancfs.demo.server import OrthancServer

from . import uploads_data as data
from .conftest import mounted
from .helpers import mount_options
from .test_webdav import WebDAV


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
        (study / "study.json").unlink()  # Orthanc's document of the study: goes with the study, not alone
        assert (study / "study.json").exists()
        assert errno_of(lambda: os.rmdir(mnt / "by-dates" / "2021")) == errno.EPERM
        assert errno_of(lambda: os.rmdir(mnt / "by-dates" / "2021" / "2021-03")) == errno.EPERM
        assert errno_of(lambda: os.rmdir(mnt / "by-patients")) == errno.EPERM
        assert errno_of(lambda: os.unlink(first(mnt / "by-patients"))) == errno.EISDIR
    assert orthanc_ids(server, "instances") == before


def test_a_file_manager_deletes_a_by_uids_study_file_by_file(server: OrthancServer, tmp_path: Path) -> None:
    """As Explorer does: count what is there, then delete each folder's files (study.json before the
    series), then the folders, deepest first.  Orthanc removes a series and its study with their
    last instance: what comes after is gone already, which is success."""
    with mounted(server.url, tmp_path, "--allow-delete") as mnt:
        study = first(mnt / "by-uids")
        found = list(os.walk(study))
        for folder, _, names in found:
            for name in names:
                os.unlink(os.path.join(folder, name))
        for folder, _, _ in reversed(found):
            os.rmdir(folder)
        assert len(orthanc_ids(server, "studies")) == 1 and not study.exists()


@pytest.fixture
def dav(server: OrthancServer, tmp_path: Path) -> Iterator[WebDAV]:
    webdav = WebDAV(server.url, tmp_path, "--allow-delete")
    yield webdav
    assert webdav.stop() == 0
    assert "Traceback" not in webdav.log.read_text()


def cadaver(url: str, commands: list[str]) -> list[str]:
    """cadaver's account of each command (it exits 0 whatever happened)."""
    done = subprocess.run(["cadaver", url], input="\n".join(commands) + "\n", capture_output=True, text=True,
                          timeout=120)
    return re.findall(r"(?:Deleting|Deleting collection) `[^']+': (.+?)\.?$", done.stdout, re.MULTILINE)


def study_uids(server: OrthancServer) -> tuple[str, dict[str, list[str]]]:
    """The first study's UID, and each of its series' UID with its instances' SOP UIDs."""
    with server.client() as client:
        study = client.get_json("/studies", {"expand": ""})[0]
        series = {}
        for item in client.get_json(f"/studies/{study['ID']}/series"):
            instances = client.get_json(f"/series/{item['ID']}/instances")
            series[item["MainDicomTags"]["SeriesInstanceUID"]] = [i["MainDicomTags"]["SOPInstanceUID"]
                                                                 for i in instances]
        return study["MainDicomTags"]["StudyInstanceUID"], series


def test_webdav_delete_of_a_study_file_by_file_then_its_folders(server: OrthancServer, dav: WebDAV) -> None:
    """As Explorer deletes a folder: each file (study.json first), then each emptied folder.  Orthanc
    removes a series and its study with their last instance; the client still finds them, empty."""
    study, series = study_uids(server)
    commands = ["rm study.json"]
    for uid, instances in series.items():
        commands += [f"cd {uid}", *(f"rm {sop}.dcm" for sop in instances), "rm series.json", "cd ..", f"rmcol {uid}"]
    commands += ["cd ..", f"rmcol {study}"]
    outcomes = cadaver(f"{dav.url}/by-uids/{study}/", commands)
    assert outcomes == ["succeeded"] * sum(c.startswith("rm") for c in commands), outcomes
    assert len(orthanc_ids(server, "studies")) == 1
    gone = f"{dav.url}/by-uids/{study}"
    assert requests.request("PROPFIND", gone, headers={"Depth": "0"}).status_code == 404  # deleted: gone for good
    [other] = [href.rstrip("/").rsplit("/", 1)[-1] for href in _hrefs(dav.url + "/by-uids/")]
    assert requests.delete(f"{dav.url}/by-uids/{other}/nonexistent.json").status_code == 404
    assert requests.delete(f"{dav.url}/by-uids/1.2.3/series.json").status_code == 404


def test_rclone_deletes_every_file_of_a_study(server: OrthancServer, dav: WebDAV) -> None:
    """rclone deletes the files of a tree in parallel: the json documents race their series' last instances."""
    study, _ = study_uids(server)
    done = subprocess.run(["rclone", "delete", f"--webdav-url={dav.url}", f":webdav:by-uids/{study}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(orthanc_ids(server, "studies")) == 1


def test_webdav_deletes_of_documents_are_refused_without_allow_delete(server: OrthancServer,
                                                                      tmp_path: Path) -> None:
    study, _ = study_uids(server)
    webdav = WebDAV(server.url, tmp_path)
    try:
        assert requests.delete(f"{webdav.url}/by-uids/{study}/study.json").status_code == 403
        assert cadaver(f"{webdav.url}/by-uids/{study}/", ["rm study.json"]) == ["failed:"]
    finally:
        assert webdav.stop() == 0
    assert len(orthanc_ids(server, "studies")) == 2


def _hrefs(url: str) -> list[str]:
    answer = requests.request("PROPFIND", url, headers={"Depth": "1"})
    return [h for h in re.findall(r"<(?:\w+:)?href>([^<]+)</", answer.text) if h.rstrip("/") != "/by-uids"]


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
