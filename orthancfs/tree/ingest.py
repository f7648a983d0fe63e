"""Sending files to Orthanc: what a file is, and what became of it.

A file is DICOM (sent with POST /instances), a DICOMDIR (a CD's index, skipped),
a ZIP archive (opened here and sent entry by entry, so each entry's fate is
known), or anything else (never sent).  The outcome says whether the file may
leave uploads/ and, if not, why -- in words for people and as an error for the
writer's close().

Files are read through a descriptor, never by path: the name of a file in uploads/
can be taken by another writer while this one is sent, and what is sent must be the
bytes this writer wrote.

An answer is trusted only when it says what happened.  "AlreadyStored" means Orthanc
has *a* file with these UIDs, not necessarily this one; a request whose answer never
came may have been stored.  Both are settled by asking Orthanc for the instance the
file's UIDs name, and comparing its size and MD5 with ours (`confirm`).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.multival import MultiValue

from ..errors import NotFound, OrthancFSError, OrthancUnavailable, UploadConflict, UploadRejected
from ..orthanc import DIRECT_BODY_LIMIT, OrthancClient
from .index import orthanc_id

log = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
HEAD_BYTES = 4096  # the preamble, DICM and, nearly always, the whole file meta group
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
COPY_CHUNK = 1 << 20
ID_TAGS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")  # what an instance ID hashes


class FileType(enum.Enum):
    DICOM = "DICOM"
    DICOMDIR = "DICOMDIR"
    ZIP = "ZIP archive"
    EMPTY = "empty"
    OTHER = "not DICOM"


NOT_SENT = (FileType.EMPTY, FileType.OTHER)  # what a ZIP may hold beside its images without staying


def classify(head: bytes, fd: int | None = None) -> FileType:
    """What a file is, from its first bytes (and, for the rare cases they do not tell, the file)."""
    if not head:
        return FileType.EMPTY
    if head[128:132] == b"DICM":
        sop_class = media_storage_sop_class(head)
        if sop_class is None:  # a meta header longer than what we read (rare): let pydicom parse it
            return FileType.DICOMDIR if fd is not None and _is_dicomdir(fd) else FileType.DICOM
        return FileType.DICOMDIR if sop_class == DICOMDIR_SOP_CLASS else FileType.DICOM
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06") and fd is not None:
        with reader(fd) as file:
            if zipfile.is_zipfile(file):
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


def reader(fd: int):  # noqa: ANN201 - a binary file object
    """A file object over its own duplicate of `fd`, at offset 0 (closing it leaves `fd` open)."""
    file = os.fdopen(os.dup(fd), "rb")
    file.seek(0)
    return file


def _is_dicomdir(fd: int) -> bool:
    try:
        with reader(fd) as file:
            return str(read_file_meta_info(file).get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS
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


@dataclass(frozen=True)
class Dispatch:
    """What a closed file is, and what sending it takes."""

    kind: FileType
    size: int
    body: bytes | None = None  # a plain DICOM file of up to DIRECT_BODY_LIMIT bytes, read already


@dataclass
class Outcome:
    """What became of one uploaded file."""

    consumed: bool  # True: it may leave uploads/
    reason: str  # for the report, the xattr and the log (shown through escape.one_line)
    error: OrthancFSError | None = None  # what the writer's close() reports
    entries: list[tuple[str, str]] = field(default_factory=list)  # a ZIP's per-entry account
    kind: FileType | None = None
    not_sent: list[tuple[str, str]] = field(default_factory=list)  # a consumed ZIP's entries that were not DICOM


def _stored(answer: Any, how: str = "") -> Outcome:
    found = answer if isinstance(answer, dict) else {}
    status = how or found.get("Status", "Success")
    return Outcome(True, f"stored as instance {found.get('ID', '?')} ({status})", kind=FileType.DICOM)


def _not_stored(exc: OrthancFSError) -> Outcome:
    if isinstance(exc, OrthancUnavailable):
        return Outcome(False, f"not sent, Orthanc is unavailable ({exc}); touch the file to retry", exc,
                       kind=FileType.DICOM)
    return Outcome(False, f"refused by Orthanc: {exc}", exc, kind=FileType.DICOM)


FIXED = {
    FileType.DICOMDIR: Outcome(True, "DICOMDIR: the index of a DICOM medium, not sent (the files it lists are)",
                               kind=FileType.DICOMDIR),
    FileType.EMPTY: Outcome(False, "empty file: nothing was sent to Orthanc", kind=FileType.EMPTY),
    FileType.OTHER: Outcome(False, "not DICOM: nothing was sent to Orthanc", kind=FileType.OTHER),
}


class Ingester:
    """Sends uploaded files to Orthanc and says what happened."""

    def __init__(self, client: OrthancClient, spool_dir: str | None = None, limits: ZipLimits | None = None):
        self.client = client
        self.spool_dir = spool_dir
        self.limits = limits or ZipLimits()

    def examine(self, fd: int) -> Dispatch:
        """What the file is (local reads only: cheap enough for an event loop)."""
        size = os.fstat(fd).st_size
        head = os.pread(fd, HEAD_BYTES, 0)
        kind = classify(head, fd)
        body = None
        if kind is FileType.DICOM and size <= DIRECT_BODY_LIMIT:
            body = head if size <= len(head) else head + os.pread(fd, size - len(head), len(head))
        return Dispatch(kind, size, body)

    def send(self, fd: int, dispatch: Dispatch) -> Outcome:
        """Send the file (entry by entry, for a ZIP) and say what became of it.  Blocking."""
        if dispatch.kind is FileType.ZIP:
            return self._zip(fd)
        if dispatch.kind is not FileType.DICOM:
            return FIXED[dispatch.kind]
        answer, error = None, None
        try:
            answer = self.client.upload_fd(fd, dispatch.body)
        except OrthancFSError as exc:
            error = exc
        return self.judge(answer, error) or self.confirm(fd, dispatch, answer, error)

    @staticmethod
    def judge(answer: Any = None, error: OrthancFSError | None = None) -> Outcome | None:
        """The outcome of a POST of a DICOM file, if the answer tells it; None: confirm() must ask
        Orthanc (an answer that says AlreadyStored, or one that never came after the file may
        have reached Orthanc).  Quick: no request."""
        if error is None:
            return None if isinstance(answer, dict) and answer.get("Status") == "AlreadyStored" else _stored(answer)
        if isinstance(error, OrthancUnavailable) and error.may_have_arrived:
            return None
        return _not_stored(error)

    def confirm(self, fd: int, dispatch: Dispatch, answer: Any = None, error: OrthancFSError | None = None) -> Outcome:
        """Settle what judge() could not, by asking Orthanc whether it holds exactly this file."""
        if error is None:  # AlreadyStored
            instance = str(answer.get("ID", ""))
            held = self._holds(instance, fd, dispatch.size)
            if held:
                return _stored(answer, "AlreadyStored, the same file")
            if held is False:
                conflict = UploadConflict(f"Orthanc already holds another file with these UIDs (instance {instance}) "
                                          "and keeps it; this one was not stored")
                return Outcome(False, str(conflict), conflict, kind=FileType.DICOM)
            return self._unconfirmed(OrthancUnavailable("Orthanc said AlreadyStored but could not be asked what"))
        instance = _instance_id(fd)
        if instance and self._holds(instance, fd, dispatch.size):
            return Outcome(True, f"stored as instance {instance} (confirmed after: {error})", kind=FileType.DICOM)
        return self._unconfirmed(error)

    @staticmethod
    def _unconfirmed(error: OrthancFSError) -> Outcome:
        return Outcome(False, f"not confirmed: Orthanc is unavailable ({error}) and could not say whether it stored "
                              "the file; touch the file to retry", error, kind=FileType.DICOM)

    def _holds(self, instance: str, fd: int, size: int) -> bool | None:
        """Whether Orthanc's `instance` is exactly this file (size and MD5); None if it cannot tell."""
        try:
            info = self.client.attachment_info(instance)
        except NotFound:
            return False
        except OrthancFSError as exc:
            log.debug("cannot check instance %s: %s", instance, exc)
            return None
        if int(info.get("UncompressedSize", -1)) != size:
            return False
        stored_md5 = info.get("UncompressedMD5")
        return None if not stored_md5 else stored_md5 == _md5(fd)

    def _zip(self, fd: int) -> Outcome:
        try:
            with reader(fd) as file, zipfile.ZipFile(file) as archive:
                infos = [info for info in archive.infolist() if not info.is_dir()]
                refusal = self.limits.refusal(infos, os.fstat(fd).st_size)
                if refusal:
                    error = UploadRejected(f"archive refused: {refusal}")
                    return Outcome(False, str(error), error)
                entries = [(info.filename, self._entry(archive, info)) for info in infos]
        except (zipfile.BadZipFile, OSError) as exc:
            error = UploadRejected(f"unreadable ZIP archive: {exc}")
            return Outcome(False, str(error), error)
        return summarize(entries)

    def _entry(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Outcome:
        with tempfile.TemporaryFile(dir=self.spool_dir, prefix="orthancfs-entry-") as spool:
            try:
                _extract(archive, info, spool)
            except (zipfile.BadZipFile, RuntimeError, OSError, ValueError, EOFError) as exc:
                return Outcome(False, f"unreadable entry: {exc}", UploadRejected(f"{info.filename}: {exc}"))
            dispatch = self.examine(spool.fileno())
            if dispatch.kind is FileType.ZIP:
                return Outcome(False, "a ZIP inside the ZIP: not opened", kind=FileType.ZIP)
            return self.send(spool.fileno(), dispatch)


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


def summarize(entries: list[tuple[str, Outcome]]) -> Outcome:
    """A ZIP behaves like the folder it holds: it leaves uploads/ once every DICOM entry was
    stored.  Entries that are not DICOM (a CD's README, viewer, autorun.inf) do not hold it; they
    are named instead.  An entry that was refused, could not be sent or read, or a ZIP inside it
    (which may hold images), keeps it."""
    account = [(name, outcome.reason) for name, outcome in entries]
    not_sent = [(name, o.reason) for name, o in entries if not o.consumed and o.kind in NOT_SENT]
    holding = [o for _, o in entries if not o.consumed and o.kind not in NOT_SENT]
    sent = sum(1 for _, o in entries if o.consumed and o.kind is FileType.DICOM)
    if not holding:
        reason = f"ZIP archive: all {sent} DICOM entries stored"
        if not_sent:
            reason += f"; {len(not_sent)} entries not DICOM, not sent (see report)"
        return Outcome(True, reason, entries=account, kind=FileType.ZIP, not_sent=not_sent)
    errors = [o.error for o in holding if o.error is not None]
    reason = f"ZIP archive: {sent} of {len(entries)} entries stored; kept for the other {len(holding)} (see report)"
    error = next((e for e in errors if isinstance(e, OrthancUnavailable)), errors[0] if errors else None)
    return Outcome(False, reason, error, account, kind=FileType.ZIP)


def _instance_id(fd: int) -> str | None:
    """The Orthanc ID the file's UIDs make, or None if they cannot be read."""
    try:
        with reader(fd) as file:  # (pydicom reads the character set too, to decode the PatientID)
            dataset = dcmread(file, stop_before_pixels=True, specific_tags=list(ID_TAGS))
        return orthanc_id(*(_as_orthanc_reads(dataset.get(tag)) for tag in ID_TAGS))
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, TypeError, KeyError):
        return None


def _as_orthanc_reads(value: object) -> str:
    """A tag's value as Orthanc hashes it: the string in the file (several values joined by a
    backslash again: a PatientID `DUP\\1` is one string to Orthanc), trailing spaces stripped, not
    leading ones."""
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(item) for item in value).rstrip(" ")
    return str(value).rstrip(" ")


def _md5(fd: int) -> str:
    digest, offset = hashlib.md5(usedforsecurity=False), 0
    while chunk := os.pread(fd, COPY_CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()
