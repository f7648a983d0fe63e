"""Changes outside uploads/ through every frontend: deletes, and what the policy refuses (README, "Deleting")."""

from __future__ import annotations

import pytest

from orthancfs.tree import WritePolicy

from ..fake_orthanc import FakeOrthanc
from .conftest import OpenFrontend
from .frontend import Error, Frontend, fails, says
from .pacs import LI, LI_STUDY, MULLER, MULLER_STUDY, Pacs, by_uids, new_study, numbered


def studies(fake: FakeOrthanc) -> set[str]:
    return set(fake.store.listing("studies", expand=False))


def li_file(data: Pacs) -> str:
    return by_uids(data.of_patient("P-LI")[0])


def test_deletes_are_refused_without_allow_delete(frontend: Frontend, fake: FakeOrthanc, data: Pacs) -> None:
    before = studies(fake)
    with fails(frontend, Error.FORBIDDEN):
        frontend.rmdir(f"by-studies/{LI_STUDY}")
    with fails(frontend, Error.FORBIDDEN):
        frontend.remove(li_file(data))
    assert studies(fake) == before and len(frontend.listdir(f"by-studies/{LI_STUDY}/MR - T2")) == 2


def test_deleting_a_study_removes_it_from_every_view(open_frontend: OpenFrontend, fake: FakeOrthanc,
                                                     data: Pacs) -> None:
    frontend = open_frontend(WritePolicy(deletes=True))
    muller = data.of_patient("P-MULLER")
    kept, gone = sorted({i.study for i in muller})  # numbered in Orthanc ID order: `gone` is "... (1)"
    victim = next(i for i in muller if i.study == gone)
    frontend.rmdir(f"by-studies/{numbered(MULLER_STUDY, 1)}")
    assert gone not in studies(fake) and kept in studies(fake)
    assert MULLER_STUDY in frontend.listdir("by-studies")
    assert numbered(MULLER_STUDY, 1) not in frontend.listdir("by-studies")
    assert frontend.listdir(f"by-patients/{MULLER}") == ["20200115 - CT Head"]
    assert numbered(MULLER_STUDY, 1) not in frontend.listdir("by-dates/2020/2020-01")
    assert victim.spec.study_uid not in frontend.listdir("by-uids")
    with fails(frontend, Error.NOT_FOUND):
        frontend.stat(by_uids(victim))


def test_deleting_an_instance_and_what_cannot_be_deleted(open_frontend: OpenFrontend, fake: FakeOrthanc,
                                                         data: Pacs) -> None:
    frontend = open_frontend(WritePolicy(deletes=True))
    li = data.of_patient("P-LI")
    frontend.remove(li_file(data))
    assert set(fake.store.listing("instances", expand=False)) & {i.id for i in li} == {li[1].id}
    study = f"by-uids/{li[0].spec.study_uid}"
    frontend.remove(f"{study}/study.json")  # Orthanc's account of its folder: goes with it, deletes nothing
    assert li[0].study in studies(fake)
    for folder in ("by-dates/2020", "by-dates/unknown-date", "by-patients"):
        with fails(frontend, Error.NOT_PERMITTED):
            frontend.rmdir(folder)


def test_the_views_refuse_writes(frontend: Frontend, data: Pacs) -> None:
    assert says(frontend, frontend.write_file("by-patients/new.dcm", b"x"), Error.FORBIDDEN)
    assert says(frontend, frontend.write_file(li_file(data), b"x"), Error.FORBIDDEN)
    with fails(frontend, Error.FORBIDDEN):
        frontend.mkdir(f"by-patients/{LI}/new")
    with fails(frontend, Error.NOT_PERMITTED):
        frontend.rename(f"by-patients/{LI}", "by-patients/renamed")
    if frontend.touches:
        with fails(frontend, Error.NOT_PERMITTED):
            frontend.touch(li_file(data))
    assert frontend.write_file("uploads/note.txt", b"a note") is None
    with fails(frontend, Error.CROSS_DEVICE):
        frontend.rename("uploads/note.txt", f"by-patients/{LI}/note.txt")
    assert frontend.read(li_file(data)) == data.of_patient("P-LI")[0].data


def test_read_only_refuses_every_change_to_the_views(open_frontend: OpenFrontend, fake: FakeOrthanc,
                                                     data: Pacs) -> None:
    frontend = open_frontend(WritePolicy(deletes=True, read_only=True))
    before = studies(fake)
    with fails(frontend, Error.READ_ONLY):
        frontend.rmdir(f"by-studies/{LI_STUDY}")
    with fails(frontend, Error.READ_ONLY):
        frontend.remove(li_file(data))
    with fails(frontend, Error.READ_ONLY):
        frontend.rename(f"by-patients/{LI}", "by-patients/renamed")
    assert studies(fake) == before


@pytest.mark.parametrize(("policy", "uid", "error"), [
    (WritePolicy(read_only=True), "UP-RO", Error.READ_ONLY),  # read-only refuses uploads
    (WritePolicy(uploads=False), "UP-OFF", Error.FORBIDDEN),  # without uploads, uploads/ is refused
], ids=["read_only", "without_uploads"])
def test_uploads_are_refused_by_the_policy(open_frontend: OpenFrontend, policy: WritePolicy, uid: str,
                                           error: Error) -> None:
    frontend = open_frontend(policy)
    [new] = new_study(uid)
    assert says(frontend, frontend.write_file("uploads/new.dcm", new.data), error)
    with fails(frontend, error):
        frontend.mkdir("uploads/cd")
    assert frontend.listdir("uploads") == []
