"""uploads/ through every frontend: what leaves, what stays and why (docs/uploads.md)."""

from __future__ import annotations

import pytest

from .. import uploads_data
from ..fake_orthanc import FakeOrthanc
from .frontend import Error, Frontend, fails, says
from .pacs import Instance, new_study

REPORT = "ORTHANCFS-REPORT.txt"


def paths_in_every_view(instance: Instance) -> list[str]:
    """Where an instance of new_study() shows (its names need no cleaning, its date is valid)."""
    spec = instance.spec
    patient = f"{spec.patient_id} - {spec.patient_name}"
    study, series = f"{patient} - {spec.study_description}", f"{spec.modality} - {spec.series_description}"
    year, month = spec.study_date[:4], f"{spec.study_date[:4]}-{spec.study_date[4:6]}"
    file = f"{instance.id}.dcm"
    return [f"by-patients/{patient}/{spec.study_date} - {spec.study_description}/{series}/{file}",
            f"by-studies/{study}/{series}/{file}", f"by-dates/{year}/{month}/{study}/{series}/{file}",
            f"by-uids/{spec.study_uid}/{spec.series_uid}/{spec.sop_uid}.dcm"]


def stored(fake: FakeOrthanc) -> set[str]:
    return set(fake.store.listing("instances", expand=False))


def assert_everywhere(frontend: Frontend, instance: Instance) -> None:
    for path in paths_in_every_view(instance):
        assert frontend.read(path) == instance.data, path


def test_a_dicom_file_leaves_uploads_and_shows_in_every_view(frontend: Frontend, fake: FakeOrthanc) -> None:
    [new] = new_study("UP-GOOD")
    assert frontend.write_file("uploads/new.dcm", new.data) is None
    assert frontend.listdir("uploads") == []
    assert fake.store.instance(new.id).data == new.data
    assert_everywhere(frontend, new)


def test_what_was_stored_is_readable_back_only_over_webdav(frontend: Frontend) -> None:
    """WebDAV keeps a receipt for a minute (clients read back what they PUT); nobody lists it."""
    [new] = new_study("UP-RECEIPT")
    assert frontend.write_file("uploads/new.dcm", new.data) is None
    if frontend.keeps_receipts:
        assert frontend.read("uploads/new.dcm") == new.data
    else:
        with fails(frontend, Error.NOT_FOUND):
            frontend.stat("uploads/new.dcm")


@pytest.mark.allow_warnings  # a refusal is logged
def test_a_refused_file_stays_with_orthancs_reason(frontend: Frontend, fake: FakeOrthanc) -> None:
    [new] = new_study("UP-CUT")
    cut = new.data[: len(new.data) // 2]
    assert says(frontend, frontend.write_file("uploads/cut.dcm", cut), Error.REFUSED)
    assert frontend.listdir("uploads") == [REPORT, "cut.dcm"]
    assert frontend.status("uploads/cut.dcm").startswith("refused by Orthanc")
    assert frontend.stat("uploads/cut.dcm") == (False, len(cut))
    assert frontend.read("uploads/cut.dcm") == cut
    assert b"cut.dcm" in frontend.read(f"uploads/{REPORT}")
    assert new.id not in stored(fake)
    frontend.remove("uploads/cut.dcm")  # rm clears it, and its line
    assert frontend.listdir("uploads") == []


def test_a_file_that_is_not_dicom_stays(frontend: Frontend, fake: FakeOrthanc) -> None:
    before = stored(fake)
    assert frontend.write_file("uploads/README.TXT", b"Open VIEWER.EXE to see the images.\n") is None
    assert frontend.listdir("uploads") == [REPORT, "README.TXT"]
    assert frontend.status("uploads/README.TXT").startswith("not DICOM")
    assert stored(fake) == before


def test_a_temporary_name_is_held_then_sent_when_renamed(frontend: Frontend, fake: FakeOrthanc) -> None:
    [new] = new_study("UP-PART")
    assert frontend.write_file("uploads/new.dcm.part", new.data) is None
    assert frontend.listdir("uploads") == ["new.dcm.part"]
    assert frontend.status("uploads/new.dcm.part").startswith("temporary name")
    assert new.id not in stored(fake)
    frontend.rename("uploads/new.dcm.part", "uploads/new.dcm")
    assert frontend.listdir("uploads") == []
    assert_everywhere(frontend, new)


def test_a_zip_of_dicom_files_leaves_and_each_entry_is_stored(frontend: Frontend) -> None:
    two = new_study("UP-ZIP", count=2)
    archive = uploads_data.zip_of({"DICOM/IM1": two[0].data, "DICOM/IM2": two[1].data, "README.TXT": b"Hello\n"})
    assert frontend.write_file("uploads/cd.zip", archive) is None
    assert frontend.listdir("uploads") == [REPORT]  # which names the entry that was not sent
    assert b"README.TXT" in frontend.read(f"uploads/{REPORT}")
    for instance in two:
        assert_everywhere(frontend, instance)


def test_folders_in_uploads(frontend: Frontend) -> None:
    frontend.mkdir("uploads/cd")
    with fails(frontend, Error.EXISTS):
        frontend.mkdir("uploads/cd")
    assert frontend.stat("uploads/cd")[0]
    [new] = new_study("UP-FOLDER")
    assert frontend.write_file("uploads/cd/IM1", new.data) is None
    assert frontend.listdir("uploads/cd") == []
    frontend.rmdir("uploads/cd")
    assert frontend.listdir("uploads") == []
    assert_everywhere(frontend, new)


@pytest.mark.allow_warnings  # the conflict is logged
def test_another_file_under_the_same_uids_is_refused_and_kept(frontend: Frontend, fake: FakeOrthanc) -> None:
    first, second = uploads_data.two_versions()
    [answer] = fake.add(first)
    assert says(frontend, frontend.write_file("uploads/fix.dcm", second), Error.EXISTS)
    assert frontend.listdir("uploads") == [REPORT, "fix.dcm"]
    assert frontend.status("uploads/fix.dcm")
    assert fake.store.instance(answer["ID"]).data == first  # Orthanc keeps the one it has


def test_names_in_uploads(frontend: Frontend) -> None:
    """The last close wins a name; a missing name is not found; the report stays while it has
    something to say."""
    assert frontend.write_file("uploads/IM1", b"not DICOM yet") is None
    [new] = new_study("UP-NAMES")
    assert frontend.write_file("uploads/IM1", new.data) is None
    assert frontend.listdir("uploads") == []
    with fails(frontend, Error.NOT_FOUND):
        frontend.remove("uploads/IM1")
    assert frontend.write_file("uploads/README.TXT", b"Hello\n") is None
    with fails(frontend, Error.INVALID):
        frontend.remove(f"uploads/{REPORT}")
    assert frontend.listdir("uploads") == [REPORT, "README.TXT"]


@pytest.mark.allow_warnings  # WebDAV logs its 500s
def test_names_over_255_bytes_are_refused(frontend: Frontend) -> None:
    long = "uploads/" + "é" * 128  # 256 bytes
    assert says(frontend, frontend.write_file(long, b"data"), Error.INVALID)
    with fails(frontend, Error.INVALID):
        frontend.mkdir(long)
    assert frontend.write_file("uploads/short.txt", b"data") is None
    with fails(frontend, Error.INVALID):
        frontend.rename("uploads/short.txt", long)
    assert frontend.listdir("uploads") == [REPORT, "short.txt"]
