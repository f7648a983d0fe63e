"""Nodes: what one name in the tree stands for.

A node is a value.  Its `key` is unique per path in the tree (each Orthanc
resource has exactly one parent per view), so frontends can use it as the
identity of an inode or a WebDAV resource.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..orthanc.levels import Level


class Kind(enum.Enum):
    DIRECTORY = "directory"
    INSTANCE = "instance"  # a DICOM file, content from GET /instances/{id}/file
    JSON = "json"  # study.json / series.json, content from GET /{level}/{id}
    UPLOAD = "upload"  # a file in uploads/, stored on local disk until Orthanc takes it
    TEXT = "text"  # a generated report


class Role(enum.StrEnum):
    """What a directory (or file) is, which decides how its children are listed."""

    ROOT = "root"
    VIEW = "view"
    UPLOADS = "uploads"
    PATIENT = "patient"
    STUDY = "study"
    SERIES = "series"
    LABEL = "label"  # a folder of by-labels/, named after its label
    YEAR = "year"
    MONTH = "month"
    UNDATED = "undated"
    INSTANCE = "instance"
    STUDY_JSON = "study.json"
    SERIES_JSON = "series.json"
    UPLOAD_DIR = "upload-dir"
    UPLOAD_FILE = "upload-file"
    RECEIPT = "receipt"  # a file Orthanc took a moment ago, readable by its path for a minute
    REPORT = "report"


NodeKey = tuple[str, Role, str]  # (view, role, identifier)
ROLE_LEVEL = {Role.PATIENT: Level.PATIENTS, Role.STUDY: Level.STUDIES, Role.SERIES: Level.SERIES,
              Role.INSTANCE: Level.INSTANCES}


@dataclass(frozen=True, slots=True)  # slots: one per entry of every listing, 100,000s of them
class Node:
    """One entry of the tree: a directory, a DICOM instance, or a JSON document."""

    key: NodeKey
    kind: Kind
    name: str = ""
    size: int = 0
    mtime_ns: int = 0
    mode: int | None = None  # permission bits of a local (uploads/) entry; None: derived from the policy
    # Which content an instance has: Orthanc's attachment UUID.  IDs come from UIDs, so an instance
    # deleted and sent again (or overwritten) keeps its ID and paths, but not this.
    version: str = ""
    # What the node needs to list its children or produce its content; never
    # part of its identity (equality of keys is what matters).
    extra: Any = field(default=None, compare=False, repr=False)

    @property
    def view(self) -> str:
        return self.key[0]

    @property
    def role(self) -> Role:
        return self.key[1]

    @property
    def ident(self) -> str:
        return self.key[2]

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIRECTORY

    @property
    def size_is_exact(self) -> bool:
        """False where the content may change between stat and open (generated documents)."""
        return self.kind not in (Kind.JSON, Kind.TEXT)

    def named(self, name: str) -> Node:
        # Not dataclasses.replace: this runs for every entry of every listing, and
        # the constructor is several times faster.
        return Node(self.key, self.kind, name, self.size, self.mtime_ns, self.mode, self.version, self.extra)


def directory(view: str, role: Role, ident: str, mtime_ns: int, extra: Any = None, name: str = "") -> Node:
    return Node((view, role, ident), Kind.DIRECTORY, name, mtime_ns=mtime_ns, extra=extra)
