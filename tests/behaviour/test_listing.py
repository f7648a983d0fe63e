"""Listing and naming: the same folders and names through every frontend (README, "The tree")."""

from __future__ import annotations

from .. import dataset
from .frontend import Error, Frontend, fails
from .pacs import DUPLICATE, LI, LI_STUDY, MULLER, MULLER_STUDY, Instance, Pacs, by_uids, new_study, numbered


def instance_ids_below(frontend: Frontend, path: str) -> set[str]:
    """The Orthanc IDs of the instances below a folder of by-patients/ or by-studies/."""
    found = set()
    for name in frontend.listdir(path):
        if name.endswith(".dcm"):
            found.add(name.removesuffix(".dcm"))
        else:
            found |= instance_ids_below(frontend, f"{path}/{name}")
    return found


def ids_of(instances: list[Instance], patient: str) -> set[str]:
    return {instance.id for instance in instances if instance.patient == patient}


def test_the_root_lists_the_views_and_uploads(frontend: Frontend) -> None:
    assert sorted(frontend.listdir("")) == ["by-dates", "by-patients", "by-studies", "by-uids", "uploads"]


def test_patient_names_keep_unicode_and_replace_separators(frontend: Frontend, data: Pacs) -> None:
    names = frontend.listdir("by-patients")
    assert {frontend.shown(name) for name in dataset.EXPECTED_PATIENT_FOLDERS} <= set(names)
    assert len(names) == len({instance.patient for instance in data.instances})
    [long] = [name for name in names if name.startswith("P-LONG-")]
    assert len(long.encode()) <= 255


def test_duplicates_are_numbered_in_orthanc_id_order(frontend: Frontend, data: Pacs) -> None:
    patients = sorted({i.patient for i in data.instances if i.spec.patient_name == "Same^Name"})
    for number, patient in enumerate(patients):
        assert instance_ids_below(frontend, f"by-patients/{numbered(DUPLICATE, number)}") == \
            ids_of(data.instances, patient)


def test_a_newcomer_takes_the_next_number_and_the_others_keep_theirs(frontend: Frontend, data: Pacs) -> None:
    before = {numbered(DUPLICATE, n): instance_ids_below(frontend, f"by-patients/{numbered(DUPLICATE, n)}")
              for n in range(3)}
    [newcomer] = new_study("DUP\u200b1", patient_name="Same^Name")  # a zero-width space shows as "_" too
    assert frontend.write_file("uploads/newcomer.dcm", newcomer.data) is None
    assert instance_ids_below(frontend, f"by-patients/{numbered(DUPLICATE, 3)}") == {newcomer.id}
    assert {name: instance_ids_below(frontend, f"by-patients/{name}") for name in before} == before


def test_study_and_series_names(frontend: Frontend, data: Pacs) -> None:
    assert {MULLER_STUDY, numbered(MULLER_STUDY, 1), LI_STUDY, "P-MISSING", "P-BADDATE - Bad^Date - Year only",
            frontend.shown("ODD:ID* - Slash_Back_Star*Colon: - Lead and trail")} <= set(frontend.listdir("by-studies"))
    studies = sorted({i.study for i in data.of_patient("P-MULLER")})
    assert frontend.listdir(f"by-patients/{MULLER}") == [numbered("20200115 - CT Head", n) for n in range(2)]
    series_counts = [len(frontend.listdir(f"by-patients/{MULLER}/{numbered('20200115 - CT Head', n)}"))
                     for n in range(2)]
    two_series = [len({i.series for i in data.of_patient("P-MULLER") if i.study == s}) for s in studies]
    assert series_counts == two_series  # the study with the smaller Orthanc ID has the plain name
    assert frontend.listdir(f"by-studies/{LI_STUDY}") == ["MR - T2"]
    odd = frontend.shown("ODD:ID* - Slash_Back_Star*Colon: - Lead and trail")
    assert frontend.listdir(f"by-studies/{odd}") == ["CT - a_b"]


def test_missing_tags_fall_back_to_orthanc_ids(frontend: Frontend, data: Pacs) -> None:
    [missing] = data.of_patient("P-MISSING")
    assert frontend.listdir("by-patients/P-MISSING") == [missing.study]
    assert frontend.listdir(f"by-patients/P-MISSING/{missing.study}") == [missing.series]
    assert frontend.listdir(f"by-studies/P-MISSING/{missing.series}") == [f"{missing.id}.dcm"]


def test_studies_without_a_valid_date_are_under_unknown_date(frontend: Frontend) -> None:
    assert frontend.listdir("by-dates") == ["1999", "2020", "2023", "unknown-date"]
    assert frontend.listdir("by-dates/unknown-date") == \
        ["P-BADDATE - Bad^Date - Month 13", "P-BADDATE - Bad^Date - Year only", "P-MISSING"]
    assert frontend.listdir("by-dates/1999") == ["1999-12"]
    assert frontend.listdir("by-dates/1999/1999-12") == [LI_STUDY]
    assert {MULLER_STUDY, numbered(MULLER_STUDY, 1)} <= set(frontend.listdir("by-dates/2020/2020-01"))


def test_by_uids_names_by_uid_and_numbers_a_shared_study_uid(frontend: Frontend, data: Pacs) -> None:
    uids = frontend.listdir("by-uids")
    shared = dataset.SHARED_STUDY_UID
    assert {shared, f"{shared} (1)"} <= set(uids)
    assert len(uids) == len({instance.study for instance in data.instances})
    li = data.of_patient("P-LI")
    assert frontend.listdir(f"by-uids/{li[0].spec.study_uid}") == [li[0].spec.series_uid, "study.json"]
    assert frontend.listdir(f"by-uids/{li[0].spec.study_uid}/{li[0].spec.series_uid}") == \
        sorted([f"{i.spec.sop_uid}.dcm" for i in li]) + ["series.json"]


def missing_paths(data: Pacs) -> list[str]:
    [li, _] = data.of_patient("P-LI")
    series = f"by-patients/{LI}/19991231 - MR 脑/MR - T2"
    study = f"by-uids/{li.spec.study_uid}"
    return ["nope", "by-patients/nope", f"by-patients/{LI}/nope", f"by-patients/{LI}/19991231 - MR 脑/nope",
            f"{series}/nope.dcm", f"{series}/{li.id}.dcm/nope", "by-dates/1850", "by-dates/1999/1999-11",
            "by-dates/unknown-date/nope", "by-uids/1.2.3.4", f"{study}/1.2.3.4", f"{study}/nope.json",
            f"{study}/{li.spec.series_uid}/1.2.3.4.dcm", "uploads/nope", "uploads/nope/deeper"]


def test_a_missing_path_is_not_found_at_every_level(frontend: Frontend, data: Pacs) -> None:
    for path in missing_paths(data):
        if path.endswith(".dcm/nope"):
            continue  # below a file: see the next test
        for operation in (frontend.stat, frontend.listdir, frontend.read):
            with fails(frontend, Error.NOT_FOUND):
                operation(path)


def test_files_are_not_directories_and_directories_not_files(frontend: Frontend, data: Pacs) -> None:
    li = data.of_patient("P-LI")[0]
    study = f"by-uids/{li.spec.study_uid}"
    for path in (by_uids(li), f"{study}/study.json"):
        with fails(frontend, Error.NOT_A_DIRECTORY):
            frontend.listdir(path)
        with fails(frontend, Error.NOT_A_DIRECTORY):
            frontend.stat(f"{path}/x")
    for path in ("", "by-patients", study, "uploads"):
        with fails(frontend, Error.IS_A_DIRECTORY):
            frontend.read(path)
