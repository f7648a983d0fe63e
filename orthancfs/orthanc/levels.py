"""Orthanc's four levels of resources, and what the REST API calls each thing about them."""

from __future__ import annotations

import enum


class Level(enum.Enum):
    """patients > studies > series > instances: route, what an expanded item names its children,
    its parent and its own UID, and what /statistics counts it as."""

    PATIENTS = ("patients", "Patient", "Studies", None, "PatientID", "CountPatients")
    STUDIES = ("studies", "Study", "Series", "ParentPatient", "StudyInstanceUID", "CountStudies")
    SERIES = ("series", "Series", "Instances", "ParentStudy", "SeriesInstanceUID", "CountSeries")
    INSTANCES = ("instances", "Instance", None, "ParentSeries", "SOPInstanceUID", "CountInstances")

    def __init__(self, route: str, resource_type: str, children_key: str | None, parent_key: str | None,
                 uid_tag: str, count_key: str):
        self.route = route  # /patients, /studies/{id}, ...
        self.resource_type = resource_type  # /tools/find's Level, an item's Type
        self.children_key = children_key  # an expanded item's list of its children's IDs
        self.parent_key = parent_key  # an expanded item's parent's ID
        self.uid_tag = uid_tag  # the main tag that identifies a resource of this level
        self.count_key = count_key  # in /statistics

    @property
    def child(self) -> Level | None:
        members = list(Level)
        position = members.index(self)
        return members[position + 1] if position + 1 < len(members) else None

    @property
    def parent(self) -> Level | None:
        members = list(Level)
        position = members.index(self)
        return members[position - 1] if position > 0 else None

    @property
    def grandchild(self) -> Level | None:
        return self.child.child if self.child is not None else None

    def __repr__(self) -> str:
        return f"Level.{self.name}"
