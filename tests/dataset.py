"""The test PACS: names chosen to exercise every naming rule, and what they should look like."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import generate_uid

from orthancfs.demo.samples import Spec, series

# Orthanc drops over-long names, so the length comes from two fields of 50+ CJK
# characters (3 UTF-8 bytes each): far more than the 255 bytes a file name may hold.
LONG_ID, LONG_NAME = "P-LONG-" + "語" * 50, "語" * 60
SHARED_STUDY_UID = generate_uid()


@dataclass(frozen=True)
class Dataset:
    specs: list[Spec]
    big_sop_uid: str  # the multi-frame file of tens of MB


def build() -> Dataset:
    muller = {"patient_id": "P-MULLER", "patient_name": "Müller^Jürgen", "study_date": "20200115",
              "study_description": "CT Head", "modality": "CT"}
    study_a, study_b = generate_uid(), generate_uid()
    big = series(1, patient_id="P-GR", patient_name="Παπαδόπουλος^Νίκος", study_uid=generate_uid(),
                 study_date="20230721", study_description="Cine", modality="OT", series_description="Multi-frame",
                 frames=60, rows=512, columns=512)
    specs = [
        *series(3, study_uid=study_a, series_description="Axial", **muller),
        *series(2, study_uid=study_a, series_description="Axial", **muller),  # same series name twice
        *series(1, study_uid=study_b, series_description="Scout", **muller),  # same study name twice
        *series(2, patient_id="P-LI", patient_name="李^小龍", study_uid=generate_uid(), study_date="19991231",
                study_description="MR 脑", modality="MR", series_description="T2"),
        *big,
        *series(1, patient_id="  ODD:ID*  ", patient_name="Slash/Back\\Star*Colon:", study_uid=generate_uid(),
                study_description="  Lead and trail  ", modality="CT", series_description="a/b"),
        *series(1, patient_id="P-MISSING", patient_name=None, study_uid=generate_uid(), study_date=None,
                study_description=None, modality=None, series_description=None),
        *series(1, patient_id="P-BADDATE", patient_name="Bad^Date", study_uid=generate_uid(), study_date="2020",
                study_description="Year only"),
        *series(1, patient_id="P-BADDATE", patient_name="Bad^Date", study_uid=generate_uid(),
                study_date="20201340", study_description="Month 13"),
        *[spec for pid in ("DUP/1", "DUP\\1", "DUP_1")
          for spec in series(1, patient_id=pid, patient_name="Same^Name", study_uid=generate_uid())],
        *series(1, patient_id="P-SHARE-A", patient_name="Share^A", study_uid=SHARED_STUDY_UID),
        *series(1, patient_id="P-SHARE-B", patient_name="Share^B", study_uid=SHARED_STUDY_UID),
        *series(1, patient_id=LONG_ID, patient_name=LONG_NAME, study_uid=generate_uid()),
        # A name that hides (leading dot) and lies (RIGHT-TO-LEFT OVERRIDE shows "Evilexe.dcm").
        *series(1, patient_id=".HIDDEN", patient_name="Evil\u202emcd.exe", study_uid=generate_uid(),
                study_description="\u200f"),
    ]
    return Dataset(specs, big[0].sop_uid)


# Folder names under by-patients/ that the data above must produce.
EXPECTED_PATIENT_FOLDERS = {
    "P-MULLER - Müller^Jürgen",
    "P-LI - 李^小龍",
    "P-GR - Παπαδόπουλος^Νίκος",
    "ODD:ID* - Slash_Back_Star*Colon:",
    "P-MISSING",
    "P-BADDATE - Bad^Date",
    "DUP_1 - Same^Name",
    "DUP_1 - Same^Name (1)",
    "DUP_1 - Same^Name (2)",
    "P-SHARE-A - Share^A",
    "P-SHARE-B - Share^B",
    "_HIDDEN - Evil_mcd.exe",
}


def root_views(client) -> list[str]:  # noqa: ANN001 - an OrthancClient
    """What the root lists, sorted: by-labels/ only where Orthanc has labels (1.12)."""
    views = ["by-dates", "by-patients", "by-studies", "by-uids", "uploads"]
    return sorted([*views, "by-labels"]) if client.capabilities.labels else views
