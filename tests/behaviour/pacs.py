"""The data set every frontend is tested on, and what Orthanc says about it.

tests/dataset.py's test PACS (every naming rule: Unicode, separators, duplicates, missing tags,
invalid and missing dates, two patients sharing a StudyInstanceUID, over-long and hidden names),
with its 30 MB multi-frame file swapped for one of 6 MiB: read in many requests, yet quick.
"""

from __future__ import annotations

import json
import urllib.request
import warnings
from dataclasses import dataclass
from typing import Any

from pydicom.uid import generate_uid

from orthancfs.demo.samples import Spec, make_dicom, series

from .. import dataset
from ..fake_orthanc import FakeOrthanc
from ..fake_store import FakeStore

# Names the data set must produce (more in tests/dataset.py's EXPECTED_PATIENT_FOLDERS).
MULLER, MULLER_STUDY = "P-MULLER - Müller^Jürgen", "P-MULLER - Müller^Jürgen - CT Head"
LI, LI_STUDY = "P-LI - 李^小龍", "P-LI - 李^小龍 - MR 脑"
DUPLICATE = "DUP_1 - Same^Name"
BIG = {"patient_id": "P-GR", "patient_name": "Παπαδόπουλος^Νίκος", "study_date": "20230721",
       "study_description": "Cine", "modality": "OT", "series_description": "Multi-frame",
       "frames": 12, "rows": 512, "columns": 512}


@dataclass(frozen=True)
class Instance:
    spec: Spec
    data: bytes
    id: str
    series: str
    study: str
    patient: str


@dataclass(frozen=True)
class Pacs:
    instances: list[Instance]
    big: Instance

    @property
    def files(self) -> list[bytes]:
        return [instance.data for instance in self.instances]

    def by_sop(self) -> dict[str, Instance]:
        return {instance.spec.sop_uid: instance for instance in self.instances}

    def of_patient(self, patient_id: str) -> list[Instance]:
        return [instance for instance in self.instances if instance.spec.patient_id == patient_id]


def numbered(name: str, number: int) -> str:
    """The name of the `number`th resource (from 0, in Orthanc ID order) that wants `name`."""
    return f"{name} ({number})" if number else name


def by_uids(instance: Instance) -> str:
    """Its path in by-uids/ (for a StudyInstanceUID no other patient shares)."""
    return f"by-uids/{instance.spec.study_uid}/{instance.spec.series_uid}/{instance.spec.sop_uid}.dcm"


def instances(specs: list[Spec]) -> list[Instance]:
    """The files of `specs`, with the IDs Orthanc gives them (computed by a scratch store)."""
    with warnings.catch_warnings():  # the invalid dates and long names are on purpose
        warnings.simplefilter("ignore", UserWarning)
        files = [make_dicom(spec) for spec in specs]
    store = FakeStore((1, 10, 1))
    answers = [store.store(data) for data in files]
    return [Instance(spec, data, a["ID"], a["ParentSeries"], a["ParentStudy"], a["ParentPatient"])
            for spec, data, a in zip(specs, files, answers, strict=True)]


def build() -> Pacs:
    specs = [spec for spec in dataset.build().specs if spec.frames == 1]
    found = instances([*specs, *series(1, study_uid=generate_uid(), **BIG)])
    return Pacs(found, found[-1])


def new_study(patient_id: str, count: int = 1, **tags: Any) -> list[Instance]:
    """Instances of a study Orthanc does not hold yet, to upload."""
    tags = {"patient_name": "Upload^Neu", "study_date": "20210305", "study_description": "Uploaded",
            "series_description": "Sent", **tags}
    return instances(series(count, patient_id=patient_id, study_uid=generate_uid(), **tags))


def orthanc_json(fake: FakeOrthanc, path: str) -> Any:
    """What Orthanc answers to GET `path` (over HTTP, as any client sees it)."""
    with urllib.request.urlopen(fake.url + path, timeout=10) as answer:
        return json.load(answer)
