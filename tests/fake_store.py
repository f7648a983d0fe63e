"""The database of FakeOrthanc: what Orthanc keeps of each DICOM file, answered in Orthanc's shapes.

Everything here was checked against Debian 12's Orthanc 1.10.1 and Debian 13's 1.12.7 by
test_fake_orthanc.py; where the two differ, the store follows the version it is given (the
releases in between were not run: the thresholds are those of the features' release notes):

- from 1.11 (configurable main tags) studies and series have a few more main DICOM tags;
- from 1.12.0 every resource carries `Labels` (always empty here);
- from 1.12.5 (the "extended find" rewrite) lists, child ID lists and child routes are sorted by
  Orthanc ID, where 1.10 answers in creation order (Orthanc's internal IDs); `limit=0` means no
  limit, where 1.10 answers nothing; /changes says which Seq its page starts at (`First`).

Not modelled: stability (`IsStable` stays false, no Stable* changes: the conformance test sets
Orthanc's StableAge far away), ZIP uploads, overwriting, labels, metadata, compression.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import itertools
import math
import threading
import time
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from orthancfs.tree.index import orthanc_id

Version = tuple[int, int, int]

LEVELS = ("patients", "studies", "series", "instances")
TYPES = {"patients": "Patient", "studies": "Study", "series": "Series", "instances": "Instance"}
CHILD_IDS = {"patients": "Studies", "studies": "Series", "series": "Instances"}
PARENT_ID = {"studies": "ParentPatient", "series": "ParentStudy", "instances": "ParentSeries"}
ID_TAGS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")  # what each level's ID hashes
COUNT_KEYS = {"patients": "CountPatients", "studies": "CountStudies", "series": "CountSeries",
              "instances": "CountInstances"}
NEW = {"patients": "NewPatient", "studies": "NewStudy", "series": "NewSeries", "instances": "NewInstance"}
UNDEFINED_LENGTH = 0xFFFFFFFF
MAX_TAG_BYTES = 256  # Orthanc keeps no main tag value longer than this (ORTHANC_MAXIMUM_TAG_LENGTH)
LABELS_FROM = (1, 12, 0)
EXTENDED_FROM = (1, 12, 5)  # extended find and changes: a rewrite of the lookups
_PARSING = threading.Lock()  # see parse()

MAIN_TAGS_1_10 = {
    "patients": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "OtherPatientIDs"),
    "studies": ("StudyDate", "StudyTime", "StudyID", "StudyDescription", "AccessionNumber", "StudyInstanceUID",
                "RequestedProcedureDescription", "InstitutionName", "RequestingPhysician", "ReferringPhysicianName"),
    "series": ("SeriesDate", "SeriesTime", "Modality", "Manufacturer", "StationName", "SeriesDescription",
               "BodyPartExamined", "SequenceName", "ProtocolName", "SeriesNumber", "CardiacNumberOfImages",
               "ImagesInAcquisition", "NumberOfTemporalPositions", "NumberOfSlices", "NumberOfTimeSlices",
               "SeriesInstanceUID", "ImageOrientationPatient", "SeriesType", "OperatorsName",
               "PerformedProcedureStepDescription", "AcquisitionDeviceProcessingDescription", "ContrastBolusAgent"),
    "instances": ("InstanceCreationDate", "InstanceCreationTime", "AcquisitionNumber", "ImageIndex", "InstanceNumber",
                  "NumberOfFrames", "TemporalPositionIdentifier", "SOPInstanceUID", "ImagePositionPatient",
                  "ImageComments", "ImageOrientationPatient"),
}
# 1.11 added these (1.12.7's /system lists them); RequestAttributesSequence, a sequence, is not kept here.
ADDED_1_11 = {"studies": ("TimezoneOffsetFromUTC",),
              "series": ("TimezoneOffsetFromUTC", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
                         "RequestAttributesSequence")}


def main_tags(version: Version) -> dict[str, tuple[str, ...]]:
    """The main DICOM tags of each level, as the given version indexes them."""
    if version < (1, 11, 0):
        return MAIN_TAGS_1_10
    return {level: tags + ADDED_1_11.get(level, ()) for level, tags in MAIN_TAGS_1_10.items()}


class OrthancError(Exception):
    """An error as Orthanc answers it: an HTTP status and, with HttpDescribeErrors, a JSON body."""

    def __init__(self, status: int, message: str, orthanc_status: int, details: str | None = None):
        super().__init__(details or message)
        self.status, self.message, self.orthanc_status, self.details = status, message, orthanc_status, details


class Missing(Exception):  # noqa: N818 - named as Orthanc answers it
    """A resource route with an unknown ID: Orthanc answers 404 with an empty body, not an OrthancError."""


def unknown_resource() -> OrthancError:
    return OrthancError(404, "Unknown resource", 17)


def bad_request(details: str) -> OrthancError:
    return OrthancError(400, "Bad request", 8, details)


def bad_parameter() -> OrthancError:
    return OrthancError(400, "Bad type for a parameter", 5, "Syntax error in some user-supplied data")


@dataclass(eq=False)
class Resource:
    """A patient, study, series or instance; `serial` is Orthanc's internal ID (creation order)."""

    level: str
    id: str
    serial: int
    tags: dict[str, str]
    parent: Resource | None = None
    children: dict[str, Resource] = field(default_factory=dict)
    last_update: str = ""
    patient_tags: dict[str, str] = field(default_factory=dict)  # studies: the patient's, as they came
    expected: int | None = None  # series: how many instances its first file announced
    data: bytes = b""  # instances: the file
    uuid: str = ""  # instances: its attachment's
    md5: str = ""

    @property
    def path(self) -> str:
        return f"/{self.level}/{self.id}"

    def reference(self) -> dict[str, str]:
        return {"ID": self.id, "Path": self.path, "Type": TYPES[self.level]}


@dataclass(frozen=True)
class Change:
    seq: int
    kind: str
    resource: Resource
    date: str

    def document(self) -> dict[str, Any]:
        res = self.resource
        return {"ChangeType": self.kind, "Date": self.date, "ID": res.id, "Path": res.path,
                "ResourceType": TYPES[res.level], "Seq": self.seq}


class FakeStore:
    """Orthanc's index and storage in memory, thread-safe (one lock: it is a test double)."""

    def __init__(self, version: Version):
        self.version = version
        self.tags = main_tags(version)
        self._lock = threading.RLock()
        self._levels: dict[str, dict[str, Resource]] = {level: {} for level in LEVELS}  # in creation order
        self._serials = itertools.count(1)
        self._changes: list[Change] = []
        self._last_seq = 0  # like SQLite's AUTOINCREMENT: never goes back, not even when changes are deleted

    # --- writes ------------------------------------------------------------------------

    def store(self, body: bytes) -> dict[str, Any]:
        """`POST /instances` of one DICOM file: Orthanc's answer (Success or AlreadyStored)."""
        dataset = parse(body)
        identifiers = instance_identifiers(dataset)
        with self._lock:
            existing = self._levels["instances"].get(orthanc_id(*identifiers))
            if existing is not None:  # Orthanc keeps the first file (OverwriteInstances: false)
                return self._stored_answer(existing, "AlreadyStored")
            chain, created = self._chain(dataset, identifiers)
            instance = chain[-1]
            instance.data, instance.uuid = bytes(body), str(uuid.uuid4())
            instance.md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
            now = timestamp()
            for resource in chain:
                resource.last_update = now
            for resource in reversed(created):  # NewInstance first, then NewSeries... as Orthanc logs them
                self._log(NEW[resource.level], resource, now)
            return self._stored_answer(instance, "Success")

    def _chain(self, dataset: Dataset, identifiers: tuple[str, ...]) -> tuple[list[Resource], list[Resource]]:
        """The patient, study, series and instance of a file, made where missing; and those made."""
        chain: list[Resource] = []
        created: list[Resource] = []
        parent = None
        for depth, level in enumerate(LEVELS):
            ident = orthanc_id(*identifiers[: depth + 1])
            resource = self._levels[level].get(ident)
            if resource is None:
                resource = Resource(level, ident, next(self._serials), self._main_tags(dataset, level), parent)
                if level == "studies":
                    resource.patient_tags = self._main_tags(dataset, "patients")
                elif level == "series":
                    resource.expected = expected_instances(dataset)
                self._levels[level][ident] = resource
                if parent is not None:
                    parent.children[ident] = resource
                created.append(resource)
            chain.append(resource)
            parent = resource
        return chain, created

    def _main_tags(self, dataset: Dataset, level: str) -> dict[str, str]:
        found = {}
        for keyword in self.tags[level]:
            value = tag_text(element(dataset, keyword))
            if value is not None:
                found[keyword] = value
        return found

    @staticmethod
    def _stored_answer(instance: Resource, status: str) -> dict[str, Any]:
        series = instance.parent
        study = series.parent
        return {"ID": instance.id, "ParentPatient": study.parent.id, "ParentSeries": series.id,
                "ParentStudy": study.id, "Path": instance.path, "Status": status}

    def delete(self, level: str, ident: str) -> dict[str, Any]:
        """`DELETE /{level}/{id}`: the resource, its descendants, and the ancestors it leaves empty."""
        with self._lock:
            resource = self._get(level, ident)
            gone = self._remove(resource)
            ancestor = resource.parent
            while ancestor is not None and not ancestor.children:
                gone.extend(self._remove(ancestor))
                ancestor = ancestor.parent
            # A deleted resource takes its change entries with it (ON DELETE CASCADE in Orthanc's index).
            removed = set(gone)
            self._changes = [change for change in self._changes if change.resource not in removed]
            return {"RemainingAncestor": None if ancestor is None else ancestor.reference()}

    def _remove(self, resource: Resource) -> list[Resource]:
        gone = [resource]
        for child in list(resource.children.values()):
            gone.extend(self._remove(child))
        del self._levels[resource.level][resource.id]
        if resource.parent is not None:
            del resource.parent.children[resource.id]
        return gone

    def clear_changes(self) -> None:
        with self._lock:
            self._changes.clear()

    def _log(self, kind: str, resource: Resource, date: str) -> None:
        self._last_seq += 1
        self._changes.append(Change(self._last_seq, kind, resource, date))

    # --- reads -------------------------------------------------------------------------

    def _get(self, level: str, ident: str) -> Resource:
        try:
            return self._levels[level][ident]
        except KeyError:
            raise Missing(f"/{level}/{ident}") from None

    def _ordered(self, resources: Iterable[Resource]) -> list[Resource]:
        if self.version >= EXTENDED_FROM:
            return sorted(resources, key=lambda resource: resource.id)
        return sorted(resources, key=lambda resource: resource.serial)

    def document(self, level: str, ident: str) -> dict[str, Any]:
        """`GET /{level}/{id}` (Missing if there is no such resource)."""
        with self._lock:
            return self._document(self._get(level, ident))

    def _document(self, resource: Resource) -> dict[str, Any]:
        level = resource.level
        document: dict[str, Any] = {"ID": resource.id, "Type": TYPES[level], "MainDicomTags": dict(resource.tags)}
        if level in CHILD_IDS:
            document[CHILD_IDS[level]] = [child.id for child in self._ordered(resource.children.values())]
            document.update(IsStable=False, LastUpdate=resource.last_update)
        if resource.parent is not None:
            document[PARENT_ID[level]] = resource.parent.id
        if level == "studies":
            document["PatientMainDicomTags"] = dict(resource.patient_tags)
        elif level == "series":
            document.update(ExpectedNumberOfInstances=resource.expected, Status=series_status(resource))
        elif level == "instances":
            document.update(FileSize=len(resource.data), FileUuid=resource.uuid,
                            IndexInSeries=index_in_series(resource.tags))
        if self.version >= LABELS_FROM:
            document["Labels"] = []
        return document

    def listing(self, level: str, expand: bool, since: int | None = None, limit: int | None = None) -> list[Any]:
        """`GET /{level}` (IDs, or documents with `expand`), paged by `since` and `limit`."""
        with self._lock:
            resources = self._ordered(self._levels[level].values())
            if since is not None and limit is not None:
                unlimited = limit == 0 and self.version >= EXTENDED_FROM
                resources = resources[since:] if unlimited else resources[since : since + limit]
            return [self._document(r) if expand else r.id for r in resources]

    def find(self, request: dict[str, Any]) -> list[Any]:
        """`POST /tools/find`: resources of a level whose main tags match every constraint of the
        query (an exact value, a `*`/`?` pattern, or a `from-to` range of dates), expanded or not,
        paged by Since and Limit.  (Labels are not modelled: a labelled query finds nothing.)"""
        level = FIND_LEVELS[str(request.get("Level", "")).lower()]
        query = request.get("Query", {})
        with self._lock:
            matches = [r for r in self._ordered(self._levels[level].values())
                       if not request.get("Labels") and all(_matches(_tag_of(r, tag), wanted)
                                                            for tag, wanted in query.items())]
            since, limit = int(request.get("Since", 0)), int(request.get("Limit", 0))
            matches = matches[since:since + limit] if limit else matches[since:]
            if "ResponseContent" in request:
                return [self._content(r, request["ResponseContent"]) for r in matches]
            return [self._document(r) if request.get("Expand") else r.id for r in matches]

    def _content(self, resource: Resource, asked: list[str]) -> dict[str, Any]:
        """A found resource with only the parts ResponseContent names (1.12.5): MainDicomTags (with the
        patient's for a study), Parent, Children, Metadata (here only LastUpdate)."""
        document = self._document(resource)
        parts = {"MainDicomTags": ("MainDicomTags", "PatientMainDicomTags"), "Children": tuple(CHILD_IDS.values()),
                 "Parent": tuple(PARENT_ID.values())}
        kept = {"ID", "Type"} | {key for part in asked for key in parts.get(part, ())}
        content = {key: value for key, value in document.items() if key in kept}
        if "Metadata" in asked:
            content["Metadata"] = {"LastUpdate": resource.last_update} if resource.level in CHILD_IDS else {}
        return content

    def descendants(self, level: str, ident: str, below: str) -> list[dict[str, Any]]:
        """`GET /{level}/{id}/{below}`: the expanded descendants of one level, as Orthanc orders them.

        1.10 walks level by level and puts the children of each next resource *in front of* those
        found so far (std::list::splice at begin): the last study's series come first."""
        with self._lock:
            try:
                current = [self._levels[level][ident]]
            except KeyError:
                raise unknown_resource() from None
            for _ in range(LEVELS.index(below) - LEVELS.index(level)):
                found: list[Resource] = []
                for resource in current:
                    found[:0] = self._ordered(resource.children.values())
                current = found
            if self.version >= EXTENDED_FROM:
                current = self._ordered(current)
            return [self._document(resource) for resource in current]

    def instance(self, ident: str) -> Resource:
        """The instance whose file and attachment are asked for (an OrthancError if unknown)."""
        with self._lock:
            try:
                return self._levels["instances"][ident]
            except KeyError:
                raise unknown_resource() from None

    def attachment_info(self, ident: str) -> dict[str, Any]:
        instance = self.instance(ident)
        size = len(instance.data)
        return {"CompressedMD5": instance.md5, "CompressedSize": size, "ContentType": 1,
                "UncompressedMD5": instance.md5, "UncompressedSize": size, "Uuid": instance.uuid}

    def lookup(self, value: str) -> list[dict[str, str]]:
        """`POST /tools/lookup`: patients by PatientID, studies, series and instances by UID.

        Orthanc compares normalized identifiers (see normalized_identifier), and refuses wildcards."""
        if "*" in value or "?" in value:
            raise OrthancError(400, "Parameter out of range", 3, "Wildcards are not allowed on tag 0010,0020")
        wanted = normalized_identifier(value)
        with self._lock:
            return [resource.reference() for level, tag in zip(LEVELS, ID_TAGS, strict=True)
                    for resource in self._ordered(self._levels[level].values())
                    if tag in resource.tags and normalized_identifier(resource.tags[tag]) == wanted]

    def changes(self, since: int, limit: int) -> dict[str, Any]:
        """`GET /changes`: what was added after `since`, `limit` entries at most."""
        with self._lock:
            after = [change for change in self._changes if change.seq > since]
            page = after[:limit]
            answer: dict[str, Any] = {"Changes": [change.document() for change in page], "Done": len(after) <= limit,
                                      "Last": page[-1].seq if page else self._last_seq}
            if page and self.version >= EXTENDED_FROM:  # 1.12.5's "extended changes" say where the page starts
                answer["First"] = page[0].seq
            return answer

    def last_change(self) -> dict[str, Any]:
        """`GET /changes?last`."""
        with self._lock:
            newest = [self._changes[-1].document()] if self._changes else []
            # The newest entry still there (deletions remove entries), else the sequence's end.
            answer: dict[str, Any] = {"Changes": newest, "Done": True,
                                      "Last": self._changes[-1].seq if self._changes else self._last_seq}
            if newest and self.version >= EXTENDED_FROM:
                answer["First"] = self._changes[-1].seq
            return answer

    def statistics(self) -> dict[str, Any]:
        with self._lock:
            size = sum(len(instance.data) for instance in self._levels["instances"].values())
            counts = {COUNT_KEYS[level]: len(resources) for level, resources in self._levels.items()}
        return {**counts, "TotalDiskSize": str(size), "TotalDiskSizeMB": size >> 20,
                "TotalUncompressedSize": str(size), "TotalUncompressedSizeMB": size >> 20}


def parse(body: bytes) -> Dataset:
    """The dataset of a Part-10 file, or the error Orthanc answers for it.

    Values are read at once and without pydicom's warnings (Orthanc takes over-long or badly
    formatted values as they are); the warnings filter is process-wide, so one parse at a time."""
    if not body:
        raise OrthancError(400, "Bad file format", 15, "Received an empty DICOM file")
    try:
        with _PARSING, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dataset = dcmread(io.BytesIO(body))
            if _cut_short(dataset, len(body)):
                raise EOFError("the file ends inside an element")
            list(dataset)  # converts each raw value now, under the filter
            return dataset
    except (InvalidDicomError, ValueError, EOFError, OSError, KeyError, TypeError) as exc:
        raise OrthancError(400, "Bad file format", 15,
                           f"Cannot parse an invalid DICOM file (size: {len(body)} bytes)") from exc


def _cut_short(dataset: Dataset, size: int) -> bool:
    """Whether the file does not end where its last element does: pydicom reads a file cut short
    as far as it goes, DCMTK (and so Orthanc) refuses it.  Asked before values are converted: a
    raw element knows where it was read."""
    for group in (dataset, getattr(dataset, "file_meta", Dataset())):
        if len(group):
            last = group.get_item(next(reversed(group.keys())))
            if last.length == UNDEFINED_LENGTH:  # ends with its delimiter: pydicom checked it
                return False
            return last.value_tell + last.length != size
    return True


def instance_identifiers(dataset: Dataset) -> tuple[str, ...]:
    """PatientID (may be missing: then "") and the three UIDs (must not: 404 "Inexistent tag"),
    as Orthanc hashes them: trailing spaces stripped, leading ones kept."""
    values = []
    for keyword in ID_TAGS:
        found = element(dataset, keyword)
        if found is None and keyword != "PatientID":
            raise OrthancError(404, "Inexistent tag", 21)
        values.append("" if found is None else text_of(found.value))
    return tuple(values)


def element(dataset: Dataset, keyword: str) -> DataElement | None:
    return dataset.get(Tag(keyword))  # by tag: by keyword, get() would give the value


def tag_text(element: DataElement | None) -> str | None:
    """A main tag's value as Orthanc shows it; None where Orthanc keeps nothing (absent, binary,
    a sequence, too long)."""
    if element is None or element.VR == "SQ" or isinstance(element.value, bytes):
        return None
    text = text_of(element.value)
    return None if len(text.encode("utf-8")) > MAX_TAG_BYTES else text


def text_of(value: Any) -> str:
    """A value as the string it was in the file: several values joined by backslashes again
    (a PatientID `DUP\\1` is one string to Orthanc), trailing spaces stripped (not leading ones)."""
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(item) for item in value).rstrip(" ")
    return str(value).rstrip(" ")


def expected_instances(dataset: Dataset) -> int | None:
    """What a series' first file says its size is, as Orthanc reads it (ComputeExpectedNumberOfInstances)."""
    for first, second in (("ImagesInAcquisition", "NumberOfTemporalPositions"),
                          ("NumberOfSlices", "NumberOfTimeSlices"), ("CardiacNumberOfImages", None)):
        values = [text_of(dataset.get(keyword)) for keyword in (first, second) if keyword]
        if all(values):
            try:
                return math.prod(int(value) for value in values)
            except ValueError:
                return None
    return None


def series_status(series: Resource) -> str:
    """Orthanc's series status: Unknown without an expected count, else whether the instance indexes fill 1..n."""
    if series.expected is None or series.expected < 0:
        return "Unknown"
    indexes = [index_in_series(instance.tags) for instance in series.children.values()]
    if None in indexes:
        return "Unknown"
    if len(set(indexes)) < len(indexes) or not all(0 < index <= series.expected for index in indexes):
        return "Inconsistent"
    return "Complete" if len(indexes) == series.expected else "Missing"


def index_in_series(tags: dict[str, str]) -> int | None:
    """Orthanc's IndexInSeries: the InstanceNumber (or ImageIndex), if it is a number."""
    for keyword in ("InstanceNumber", "ImageIndex"):
        value = tags.get(keyword)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def normalized_identifier(value: str) -> str:
    """Orthanc's NormalizeIdentifier: what its index stores of an identifier, and lookups compare:
    ASCII only, no control characters, `%` and `_` as spaces, upper case, stripped."""
    kept = "".join(" " if char in "%_" else char for char in value if char.isascii() and char.isprintable())
    return kept.upper().strip()


def timestamp() -> str:
    """Now, as Orthanc writes LastUpdate and change dates (local time)."""
    return time.strftime("%Y%m%dT%H%M%S")


FIND_LEVELS = {"patient": "patients", "study": "studies", "series": "series", "instance": "instances"}


def _tag_of(resource: Resource, tag: str) -> str:
    return str(resource.tags.get(tag) or resource.patient_tags.get(tag) or "")


def _matches(value: str, wanted: str) -> bool:
    """DICOM C-FIND matching as Orthanc's find does it for the tags we ask about."""
    if "-" in wanted and wanted.replace("-", "").isdigit():  # a range of dates: from-to, -to, from-
        first, _, last = wanted.partition("-")
        return bool(value) and (not first or value >= first) and (not last or value <= last)
    if "*" in wanted or "?" in wanted:
        return fnmatch.fnmatchcase(value, wanted)
    return value == wanted
