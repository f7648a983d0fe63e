"""Other clients change Orthanc while a mount and a WebDAV server show it (real processes).

A modality sends a study with DICOM C-STORE (dcmtk's storescu), a script POSTs one and DELETEs
one; a reader polls the mount with ls and open, a WebDAV client PROPFINDs.  Both servers trust
their caches for 300 s here: what shows within the deadline, the change log made show.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from orthancfs.demo.samples import make_dicom, series
from orthancfs.demo.server import OrthancServer, free_port

from .conftest import mounted
from .helpers import wait_for
from .test_webdav import WebDAV, hrefs, propfind

DEADLINE = 10.0
TRUSTED = ("--metadata-ttl", "300")


def study(patient_id: str, count: int = 2) -> list[bytes]:
    specs = series(count, patient_id=patient_id, patient_name=f"Live^{patient_id}", study_uid=generate_uid(),
                   study_date="20230405", study_description="Live")
    return [make_dicom(spec) for spec in specs]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OrthancServer]:
    """Orthanc with its DICOM port open (on a free port; it cannot be bound to loopback only)."""
    dicom = {"DicomServerEnabled": True, "DicomPort": free_port(), "DicomAet": "ORTHANC"}
    with OrthancServer(tmp_path / "orthanc", config=dicom) as server, server.client() as client:
        for data in study("LA"):
            client.upload(data)
        yield server


def entries(folder: Path, patient_id: str) -> list[str]:
    return [name for name in os.listdir(folder) if name.startswith(patient_id)]


def in_every_view(mnt: Path, patient_id: str) -> bool:
    return all(entries(mnt / view, patient_id) for view in ("by-patients", "by-studies", "by-dates/2023/2023-04"))


def webdav_lists(dav: WebDAV, patient_id: str) -> bool:
    return any(patient_id in href for href in hrefs(propfind(f"{dav.url}/by-studies/", timeout=30)))


def c_store(server: OrthancServer, files: list[Path]) -> None:
    port = server.config()["DicomPort"]
    subprocess.run(["storescu", "-aec", "ORTHANC", "127.0.0.1", str(port), *map(str, files)], check=True,
                   capture_output=True, timeout=60)


def test_arrivals_and_deletions_show_in_the_mount_and_over_webdav(server: OrthancServer, tmp_path: Path) -> None:
    (tmp_path / "dav").mkdir()
    dav = WebDAV(server.url, tmp_path / "dav", *TRUSTED)
    try:
        with mounted(server.url, tmp_path, *TRUSTED) as mnt:
            for view in ("by-patients", "by-studies", "by-uids", "by-dates/2023/2023-04"):
                assert os.listdir(mnt / view)  # cached from now on
            assert not webdav_lists(dav, "LSTORE")
            # A modality sends a study (C-STORE).
            files = []
            for number, data in enumerate(study("LSTORE")):
                files.append(tmp_path / f"store-{number}.dcm")
                files[-1].write_bytes(data)
            c_store(server, files)
            wait_for(lambda: in_every_view(mnt, "LSTORE"), DEADLINE, "the C-STOREd study in the mount")
            assert len(os.listdir(mnt / "by-uids")) == 2
            wait_for(lambda: webdav_lists(dav, "LSTORE"), DEADLINE, "the C-STOREd study over WebDAV")
            # A script POSTs one.
            with server.client() as script:
                for data in study("LPOST"):
                    script.upload(data)
                wait_for(lambda: in_every_view(mnt, "LPOST"), DEADLINE, "the POSTed study in the mount")
                # ... and deletes the first one: a file of it, looked at before, is not found from then on.
                [folder] = entries(mnt / "by-studies", "LA")
                some_file = next((mnt / "by-studies" / folder).rglob("*.dcm"))
                assert some_file.read_bytes()[128:132] == b"DICM"
                [study_id] = [s for s in script.get_json("/studies")
                              if script.get_json(f"/studies/{s}")["PatientMainDicomTags"]["PatientID"] == "LA"]
                script.delete(f"/studies/{study_id}")
            wait_for(lambda: not entries(mnt / "by-studies", "LA"), DEADLINE, "the deleted study gone from the mount")
            for view in ("by-patients", "by-dates/2023/2023-04"):
                assert not entries(mnt / view, "LA")
            for action in (some_file.stat, some_file.read_bytes):
                with pytest.raises(OSError) as caught:
                    action()
                assert caught.value.errno == errno.ENOENT
            wait_for(lambda: not webdav_lists(dav, "LA"), DEADLINE, "the deleted study gone over WebDAV")
    finally:
        assert dav.stop() == 0
    assert "Traceback" not in dav.log.read_text()
