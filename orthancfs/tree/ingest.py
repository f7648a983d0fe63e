"""Sending files to Orthanc: what a file is, and what became of it.

A file is DICOM (sent with POST /instances), a DICOMDIR (a CD's index, skipped),
a ZIP archive (opened here and sent entry by entry, so each entry's fate is
known), or anything else (never sent).  The outcome says whether the file may
leave uploads/ and, if not, why -- in words for people and as an error for the
writer's close().
"""

from __future__ import annotations

import enum
import logging
import os
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Any

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info

from ..errors import OrthancFSError, OrthancUnavailable, UploadRejected
from ..orthanc import DIRECT_BODY_LIMIT, OrthancClient
from ..orthanc_async import LoopUploader

log = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
HEAD_BYTES = 4096  # the preamble, DICM and, nearly always, the whole file meta group
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
COPY_CHUNK = 1 << 20


class FileType(enum.Enum):
    DICOM = "DICOM"
    DICOMDIR = "DICOMDIR"
    ZIP = "ZIP archive"
    EMPTY = "empty"
    OTHER = "not DICOM"


def classify(path: str, head: bytes | None = None) -> FileType:
    """What the file at `path` is, from its first bytes (`head`, if they are read already)."""
    if head is None:
        with open(path, "rb") as file:
            head = file.read(HEAD_BYTES)
    if not head:
        return FileType.EMPTY
    if head[128:132] == b"DICM":
        sop_class = media_storage_sop_class(head)
        if sop_class is None:  # a meta header longer than what we read (rare): let pydicom parse it
            return FileType.DICOMDIR if _is_dicomdir(path) else FileType.DICOM
        return FileType.DICOMDIR if sop_class == DICOMDIR_SOP_CLASS else FileType.DICOM
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06") and zipfile.is_zipfile(path):
        return FileType.ZIP
    return FileType.OTHER


def media_storage_sop_class(head: bytes) -> str | None:
    """(0002,0002) from the file meta group at the start of a Part-10 file, "" if absent, None if cut off.

    Parsed here rather than by pydicom, which took half a millisecond per file: a fifth of
    the time an upload spends in orthancfs besides the POST itself.
    The meta group is always explicit VR little endian (PS3.10 7.1).
    """
    position = 132
    while position + 8 <= len(head):
        group, element = struct.unpack_from("<HH", head, position)
        if group != 0x0002:
            return ""  # past the meta group
        vr = head[position + 4 : position + 6]
        if vr in LONG_VRS:
            if position + 12 > len(head):
                return None
            (length,), start = struct.unpack_from("<I", head, position + 8), position + 12
        else:
            (length,), start = struct.unpack_from("<H", head, position + 6), position + 8
        if element == 0x0002:
            if start + length > len(head):
                return None
            return head[start : start + length].rstrip(b"\0 ").decode("ascii", "replace")
        position = start + length
    return None


def _is_dicomdir(path: str) -> bool:
    try:
        return str(read_file_meta_info(path).get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return False


@dataclass(frozen=True)
class ZipLimits:
    """What an archive may claim before it is refused unopened (ZIP bombs, absurd archives)."""

    max_entries: int = 100_000
    max_total_bytes: int = 64 << 30
    max_ratio: float = 1000.0  # uncompressed / compressed; DICOM rarely exceeds 20

    def refusal(self, infos: list[zipfile.ZipInfo], archive_size: int) -> str | None:
        total = sum(info.file_size for info in infos)
        if len(infos) > self.max_entries:
            return f"{len(infos)} entries, more than the {self.max_entries} allowed"
        if total > self.max_total_bytes:
            return f"it would expand to {total} bytes, more than the {self.max_total_bytes} allowed"
        if total > 100 << 20 and total > self.max_ratio * max(archive_size, 1):
            return f"it would expand {total / max(archive_size, 1):.0f} times (a ZIP bomb?)"
        return None


@dataclass
class Outcome:
    """What became of one uploaded file."""

    consumed: bool  # True: it may leave uploads/
    reason: str  # one line, for the report, the xattr and the log
    error: OrthancFSError | None = None  # what the writer's close() reports
    entries: list[tuple[str, str]] = field(default_factory=list)  # a ZIP's per-entry account


def _stored(answer: Any) -> Outcome:
    found = answer if isinstance(answer, dict) else {}
    return Outcome(True, f"stored as instance {found.get('ID', '?')} ({found.get('Status', 'Success')})")


def _not_stored(exc: OrthancFSError) -> Outcome:
    if isinstance(exc, OrthancUnavailable):
        return Outcome(False, f"not sent, Orthanc is unavailable ({exc}); touch the file to retry", exc)
    return Outcome(False, f"refused by Orthanc: {exc}", exc)


class Ingester:
    """Sends uploaded files to Orthanc and says what happened."""

    def __init__(self, client: OrthancClient, spool_dir: str | None = None, limits: ZipLimits | None = None):
        self.client = client
        self.spool_dir = spool_dir
        self.limits = limits or ZipLimits()
        self._loop_uploader: LoopUploader | None = None

    async def ingest_from_loop(self, path: str) -> Outcome | None:
        """ingest() for a trio loop: a plain DICOM file (up to DIRECT_BODY_LIMIT) is sent from the
        loop itself; None for anything else (ZIP, DICOMDIR, not DICOM, big): ingest() it in a thread."""
        with open(path, "rb") as file:
            if os.fstat(file.fileno()).st_size > DIRECT_BODY_LIMIT:
                return None
            head = file.read(HEAD_BYTES)  # what it is, before reading (up to 8 MiB of) the rest
            if classify(path, head) is not FileType.DICOM:
                return None
            body = head + file.read()
        if self._loop_uploader is None:
            self._loop_uploader = LoopUploader(self.client)
        try:
            answer = await self._loop_uploader.upload(body)
        except OrthancFSError as exc:
            return _not_stored(exc)
        return _stored(answer)

    def close(self) -> None:
        if self._loop_uploader is not None:
            self._loop_uploader.close()

    def ingest(self, path: str) -> Outcome:
        kind = classify(path)
        if kind is FileType.DICOM:
            return self._dicom(path)
        if kind is FileType.ZIP:
            return self._zip(path)
        if kind is FileType.DICOMDIR:
            return Outcome(True, "DICOMDIR: the index of a DICOM medium, not sent (the files it lists are)")
        if kind is FileType.EMPTY:
            return Outcome(False, "empty file: nothing was sent to Orthanc")
        return Outcome(False, "not DICOM: nothing was sent to Orthanc")

    def _dicom(self, path: str) -> Outcome:
        try:
            answer = self.client.upload_file(path)
        except OrthancFSError as exc:
            return _not_stored(exc)
        return _stored(answer)

    def _zip(self, path: str) -> Outcome:
        try:
            with zipfile.ZipFile(path) as archive:
                infos = [info for info in archive.infolist() if not info.is_dir()]
                refusal = self.limits.refusal(infos, os.path.getsize(path))
                if refusal:
                    error = UploadRejected(f"archive refused: {refusal}")
                    return Outcome(False, str(error), error)
                entries = [(info.filename, self._entry(archive, info)) for info in infos]
        except (zipfile.BadZipFile, OSError) as exc:
            error = UploadRejected(f"unreadable ZIP archive: {exc}")
            return Outcome(False, str(error), error)
        return _summarize(entries)

    def _entry(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Outcome:
        with tempfile.NamedTemporaryFile(dir=self.spool_dir, prefix="orthancfs-entry-") as spool:
            try:
                _extract(archive, info, spool)
            except (zipfile.BadZipFile, RuntimeError, OSError, ValueError, EOFError) as exc:
                return Outcome(False, f"unreadable entry: {exc}", UploadRejected(f"{info.filename}: {exc}"))
            outcome = self.ingest(spool.name) if classify(spool.name) is not FileType.ZIP else \
                Outcome(False, "a ZIP inside the ZIP: not opened")
        return outcome


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target) -> None:  # noqa: ANN001
    """Copy one entry out, trusting no header: more bytes than declared means a forged archive."""
    written = 0
    with archive.open(info) as source:
        while chunk := source.read(COPY_CHUNK):
            written += len(chunk)
            if written > info.file_size:
                raise ValueError("entry is larger than its header says (a ZIP bomb?)")
            target.write(chunk)
    target.flush()


def _summarize(entries: list[tuple[str, Outcome]]) -> Outcome:
    account = [(name, outcome.reason) for name, outcome in entries]
    kept = [(name, o) for name, o in entries if not o.consumed]
    stored = len(entries) - len(kept)
    if not kept:
        return Outcome(True, f"ZIP archive: all {stored} entries stored or skipped as indexes", entries=account)
    errors = [o.error for _, o in kept if o.error is not None]
    reason = f"ZIP archive: {stored} of {len(entries)} entries stored; kept for the other {len(kept)} (see report)"
    error = next((e for e in errors if isinstance(e, OrthancUnavailable)), errors[0] if errors else None)
    return Outcome(False, reason, error, account)
