"""Files to drop into uploads/: DICOM (good and bad), CD layouts, ZIP archives."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

from pydicom import dcmread
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from orthancfs.demo.samples import Spec, make_dicom, series


def instances(count: int, patient_id: str = "UP1", **tags: object) -> list[bytes]:
    specs = series(count, patient_id=patient_id, patient_name=f"Upload^{patient_id}", study_uid=generate_uid(),
                   study_description="Uploaded", **tags)
    return [make_dicom(spec) for spec in specs]


def two_versions() -> tuple[bytes, bytes]:
    """One instance as first sent and as corrected: same UIDs (so the same Orthanc ID and by-uids
    path), same size, other bytes."""
    spec = Spec("FIX", "Fix^Me", generate_uid(), generate_uid(), series_description="AAAA")
    first, second = make_dicom(spec), make_dicom(dataclasses.replace(spec, series_description="BBBB"))
    assert len(first) == len(second) and first != second
    return first, second


def without_tag(data: bytes, keyword: str) -> bytes:
    dataset = dcmread(io.BytesIO(data))
    delattr(dataset, keyword)
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


def write_cd(folder: Path, count: int, patient_id: str = "CD1") -> None:
    """A DICOM CD as burnt by a PACS: DICOMDIR, IMxxxxxx files, a viewer and a README beside them."""
    fileset = FileSet()
    for data in instances(count, patient_id):
        fileset.add(dcmread(io.BytesIO(data)))
    fileset.write(folder)
    (folder / "README.TXT").write_text("Open VIEWER.EXE to see the images.\n")
    (folder / "VIEWER").mkdir()
    (folder / "VIEWER" / "VIEWER.EXE").write_bytes(b"MZ" + bytes(5000))


def zip_of(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()
