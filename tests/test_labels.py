"""Labels (Orthanc 1.12): by-labels/, the user.orthanc.labels xattr of study folders, setfattr behind
--allow-labels, and the same over WebDAV (a labels property, PROPPATCH).  Version-dependent: on an
Orthanc without labels (1.10) the view and the attribute are absent, not empty."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
import requests

from orthancfs.demo.server import OrthancServer

from . import uploads_data as data
from .conftest import mounted
from .test_webdav import WebDAV, propfind

LABELS = "user.orthanc.labels"
PROPERTY = "{http://orthancfs.invalid/ns}labels"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OrthancServer]:
    with OrthancServer(tmp_path / "orthanc") as server, server.client() as client:
        for payload in data.instances(2, "LAB1") + data.instances(1, "LAB2"):
            client.upload(payload)
        yield server


def has_labels(server: OrthancServer) -> bool:
    with server.client() as client:
        return client.capabilities.labels


def study_folder(mnt: Path, patient: str) -> Path:
    [folder] = [p for p in (mnt / "by-studies").iterdir() if p.name.startswith(patient)]
    return folder


def test_without_labels_there_is_no_view_and_no_attribute(server: OrthancServer, tmp_path: Path) -> None:
    if has_labels(server):
        pytest.skip("this Orthanc has labels (1.12): see the other tests")
    with mounted(server.url, tmp_path, "--allow-labels") as mnt:
        assert "by-labels" not in os.listdir(mnt)
        with pytest.raises(OSError) as caught:
            os.getxattr(study_folder(mnt, "LAB1"), LABELS)
        assert caught.value.errno == errno.ENODATA
        assert LABELS not in os.listxattr(study_folder(mnt, "LAB1"))


def test_labels_through_the_mount(server: OrthancServer, tmp_path: Path) -> None:
    if not has_labels(server):
        pytest.skip("labels need Orthanc 1.12 (this one has none: see the test above)")
    with mounted(server.url, tmp_path, expect_warnings=True) as mnt:  # labels may not be changed
        folder = study_folder(mnt, "LAB1")
        assert os.getxattr(folder, LABELS) == b"" and os.listdir(mnt / "by-labels") == []
        with pytest.raises(OSError) as caught:
            os.setxattr(folder, LABELS, b"cohortA")
        assert caught.value.errno == errno.EACCES
    with mounted(server.url, tmp_path, "--allow-labels") as mnt:
        folder = study_folder(mnt, "LAB1")
        os.setxattr(folder, LABELS, b"cohortA,qc-done")
        assert sorted(os.listdir(mnt / "by-labels")) == ["cohortA", "qc-done"]
        assert os.listdir(mnt / "by-labels" / "cohortA") == [folder.name]  # the same name as in by-studies
        assert sorted(os.listdir(mnt / "by-labels" / "cohortA" / folder.name)) == sorted(os.listdir(folder))
        [patient_study] = (next((mnt / "by-patients").glob("LAB1*"))).iterdir()
        assert os.getxattr(patient_study, LABELS) == b"cohortA,qc-done"  # in every view
        with pytest.raises(OSError) as caught:
            os.setxattr(folder, LABELS, b"not a label")
        assert caught.value.errno == errno.EINVAL
        with pytest.raises(OSError) as caught:
            os.setxattr(next(folder.iterdir()), LABELS, b"cohortA")  # a series: only studies carry labels
        assert caught.value.errno == errno.EPERM
        os.setxattr(folder, LABELS, b"qc-done")
        assert os.listdir(mnt / "by-labels") == ["qc-done"]
        os.removexattr(folder, LABELS)
        assert os.listdir(mnt / "by-labels") == [] and os.getxattr(folder, LABELS) == b""


def labels_of(url: str) -> tuple[str, str]:
    """(status, value) of the labels property, as a PROPFIND that names it answers."""
    body = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:O="http://orthancfs.invalid/ns"><D:prop>'
            '<O:labels/></D:prop></D:propfind>')
    tree = ElementTree.fromstring(requests.request("PROPFIND", url, headers={"Depth": "0"}, data=body).content)
    [propstat] = tree.findall(".//{DAV:}propstat")
    return propstat.findtext("{DAV:}status"), propstat.findtext(f"{{DAV:}}prop/{PROPERTY}") or ""


def proppatch(url: str, labels: str) -> requests.Response:
    body = ('<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:O="http://orthancfs.invalid/ns">'
            f'<D:set><D:prop><O:labels>{labels}</O:labels></D:prop></D:set></D:propertyupdate>')
    return requests.request("PROPPATCH", url, data=body)


def test_labels_over_webdav(server: OrthancServer, tmp_path: Path) -> None:
    if not has_labels(server):
        pytest.skip("labels need Orthanc 1.12")
    dav = WebDAV(server.url, tmp_path, "--allow-labels")
    try:
        studies = [h for h in _hrefs(propfind(dav.url + "/by-studies/")) if "LAB1" in h]
        [study] = studies
        assert labels_of(dav.url + study) == ("HTTP/1.1 200 OK", "")
        answer = proppatch(dav.url + study, "cohortA,qc-done")
        assert answer.status_code == 207 and "200 OK" in answer.text, answer.text
        assert labels_of(dav.url + study)[1] == "cohortA,qc-done"
        assert {"/by-labels/cohortA/", "/by-labels/qc-done/"} <= set(_hrefs(propfind(dav.url + "/by-labels/")))
        invalid = proppatch(dav.url + study, "not a label!")
        assert invalid.status_code == 207 and "403 Forbidden" in invalid.text, invalid.text
        series = _hrefs(propfind(dav.url + study))[1]
        assert proppatch(dav.url + series, "cohortA").status_code == 403  # only studies carry labels
    finally:
        assert dav.stop() == 0
    (tmp_path / "ro").mkdir()
    readonly = WebDAV(server.url, tmp_path / "ro")
    try:
        [study] = [h for h in _hrefs(propfind(readonly.url + "/by-studies/")) if "LAB1" in h]
        refused = proppatch(readonly.url + study, "cohortB")
        assert refused.status_code == 207 and "403 Forbidden" in refused.text  # not without --allow-labels
        assert labels_of(readonly.url + study)[1] == "cohortA,qc-done"
    finally:
        assert readonly.stop() == 0


def _hrefs(answer: requests.Response) -> list[str]:
    return [requests.utils.unquote(h.text) for h in ElementTree.fromstring(answer.content).iter("{DAV:}href")]
