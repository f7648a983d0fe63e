"""DICOM files generated with pydicom: the demo's sample studies and the tests' data."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
MULTIFRAME_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
SOP_CLASSES = {"CT": CT_IMAGE, "MR": MR_IMAGE}


@dataclass
class Spec:
    """One instance to generate; None leaves a tag out of the file."""

    patient_id: str | None
    patient_name: str | None
    study_uid: str
    series_uid: str
    study_date: str | None = "20200101"
    study_description: str | None = None
    modality: str | None = "CT"
    series_description: str | None = None
    sop_uid: str = field(default_factory=generate_uid)
    frames: int = 1
    rows: int = 32
    columns: int = 32
    instance_number: int = 1


def make_dicom(spec: Spec) -> bytes:
    """A valid Part-10 file for `spec`, pixel data included (deterministic per SOP UID)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8, so every name survives
    sop_class = MULTIFRAME_WORD_SC if spec.frames > 1 else SOP_CLASSES.get(spec.modality or "", CT_IMAGE)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, spec.sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = spec.study_uid, spec.series_uid
    optional = {"PatientID": spec.patient_id, "PatientName": spec.patient_name, "StudyDate": spec.study_date,
                "StudyDescription": spec.study_description, "Modality": spec.modality,
                "SeriesDescription": spec.series_description}
    for keyword, value in optional.items():
        if value is not None:
            setattr(ds, keyword, value)
    ds.InstanceNumber = spec.instance_number
    # What a DICOMDIR needs to index the file (as on a real CD).
    ds.StudyTime, ds.StudyID, ds.SeriesNumber = "120000", "1", 1
    _add_pixels(ds, spec)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, spec.sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _add_pixels(ds: Dataset, spec: Spec) -> None:
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = spec.rows, spec.columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if spec.frames > 1:
        ds.NumberOfFrames = spec.frames
    size = spec.rows * spec.columns * 2 * spec.frames
    ds.PixelData = random.Random(spec.sop_uid).randbytes(size)


def series(count: int, **common: object) -> list[Spec]:
    """`count` instances of one new series (pass study_uid etc. in `common`)."""
    series_uid = common.pop("series_uid", None) or generate_uid()
    return [Spec(series_uid=series_uid, instance_number=n + 1, **common) for n in range(count)]  # type: ignore[arg-type]


def demo_specs() -> list[Spec]:
    """A small, friendly PACS: several patients, non-ASCII names, a multi-frame file."""
    specs: list[Spec] = []
    muller = {"patient_id": "DEMO001", "patient_name": "Müller^Jürgen", "study_uid": generate_uid(),
              "study_date": "20210314", "study_description": "CT Thorax"}
    specs += series(5, modality="CT", series_description="Lung 1mm", **muller)
    specs += series(3, modality="CT", series_description="Mediastinum", **muller)
    specs += series(4, patient_id="DEMO002", patient_name="李^小龍", study_uid=generate_uid(),
                    study_date="20191102", study_description="MR Brain", modality="MR", series_description="T1")
    specs += series(1, patient_id="DEMO003", patient_name="Παπαδόπουλος^Νίκος", study_uid=generate_uid(),
                    study_date="20230721", study_description="Cine", modality="OT",
                    series_description="Multi-frame", frames=64, rows=256, columns=256)
    specs += series(2, patient_id="DEMO004", patient_name="Doe^Jane", study_uid=generate_uid(), study_date=None,
                    study_description="Undated scan", modality="CT", series_description="Scout")
    return specs
