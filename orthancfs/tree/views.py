"""The views: how each kind of directory lists its children.

Each directory role has two halves.  `sources` fetches what the listing needs
(network, cached by the index); `entries` turns that into wanted names and
nodes (pure, so it can be memoized on the identity of its sources).
"""

from __future__ import annotations

import calendar
import functools
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..orthanc import Level
from .index import OrthancIndex
from .naming import Wanted, join_fields, numbered
from .nodes import ROLE_LEVEL, Kind, Node, Role, directory

BY_PATIENTS, BY_STUDIES, BY_DATES, BY_UIDS, UPLOADS = "by-patients", "by-studies", "by-dates", "by-uids", "uploads"
BY_LABELS = "by-labels"  # only where Orthanc has labels (1.12): absent, not empty, elsewhere
VIEWS = (BY_DATES, BY_PATIENTS, BY_STUDIES, BY_UIDS)
# The views whose folder holds one entry per resource of a whole level (view_entry makes it).
ITEM_VIEWS = {BY_PATIENTS: Level.PATIENTS, BY_STUDIES: Level.STUDIES, BY_UIDS: Level.STUDIES}
ALL_VIEWS = (BY_DATES, BY_LABELS, BY_PATIENTS, BY_STUDIES, BY_UIDS)
UNDATED_NAME = "unknown-date"

Entry = tuple[Wanted, Node]
Sources = tuple[Any, ...]


def sources(index: OrthancIndex, node: Node) -> Sources:
    """Everything (from Orthanc) that the listing of `node` depends on."""
    role, view = node.role, node.view
    if role is Role.ROOT:
        return (index.has_labels(), index.changed_ns)
    if role is Role.VIEW and view == BY_LABELS:
        return (index.labels(),)
    if role is Role.VIEW:
        return (index.patients(),) if view == BY_PATIENTS else (index.studies(),)
    if role is Role.LABEL:
        return (index.studies_with_label(node.ident),)
    if role in (Role.YEAR, Role.MONTH):
        return (index.studies_of_year(node.ident[:4]),)
    if role is Role.UNDATED:
        return (index.studies(),)
    level = ROLE_LEVEL[role]
    children = index.children(level, node.ident)
    if view == BY_UIDS and role in (Role.STUDY, Role.SERIES):
        return (children, index.document(level, node.ident))
    return (children,)


def entries(node: Node, found: Sources) -> list[Entry]:
    return _LISTERS[node.role](node, *found)


def child_entry(parent: Node, child: dict) -> Entry:
    """The entry of one child (a series of study `parent`, an instance of series `parent`) as
    `parent`'s listing has it."""
    return _instance(parent, child) if parent.role is Role.SERIES else _series_folder(parent, child)


def _root(node: Node, labels: bool, changed_ns: int) -> list[Entry]:
    """The views are dated by the last change seen in Orthanc (WebDAV clients re-list on a newer date)."""
    names = (*(ALL_VIEWS if labels else VIEWS), UPLOADS)
    views_ns = max(node.mtime_ns, changed_ns)
    return [
        (Wanted(name, name), directory(name, Role.UPLOADS if name == UPLOADS else Role.VIEW, "",
                                       node.mtime_ns if name == UPLOADS else views_ns))
        for name in names
    ]


def _view(node: Node, resources: list) -> list[Entry]:
    if node.view == BY_LABELS:  # label names are [A-Za-z0-9_-]{1,64}: safe as they are
        return [(Wanted(label, label), directory(BY_LABELS, Role.LABEL, label, node.mtime_ns)) for label in resources]
    if node.view == BY_DATES:
        return _years(resources)
    return [view_entry(node.view, resource) for resource in resources]


def view_entry(view: str, resource: dict) -> Entry:
    """The entry of a resource of level ITEM_VIEWS[view] in the folder of `view` (one per resource)."""
    if view == BY_PATIENTS:
        return _dir(view, Role.PATIENT, resource, [_tag(resource, "PatientID"), _tag(resource, "PatientName")])
    if view == BY_UIDS:
        return _dir(BY_UIDS, Role.STUDY, resource, [_tag(resource, "StudyInstanceUID")])
    return _study_folder(view, resource)


def _studies(view: str, studies: Iterable[dict]) -> list[Entry]:
    return [_study_folder(view, s) for s in studies]


def _study_folder(view: str, study: dict) -> Entry:
    """A study folder named `{PatientID} - {PatientName} - {StudyDescription}`."""
    return _dir(view, Role.STUDY, study, [_patient_tag(study, "PatientID"), _patient_tag(study, "PatientName"),
                                          _tag(study, "StudyDescription")])


def _label(node: Node, studies: list[dict]) -> list[Entry]:
    return _studies(BY_LABELS, studies)


def _patient(node: Node, studies: list[dict]) -> list[Entry]:
    return [_dir(node.view, Role.STUDY, s, [_tag(s, "StudyDate"), _tag(s, "StudyDescription")]) for s in studies]


def _study(node: Node, series: list[dict], document: bytes | None = None) -> list[Entry]:
    found = [_series_folder(node, s) for s in series]
    return [*found, _json(node, Role.STUDY_JSON, document)] if node.view == BY_UIDS else found


def _series_folder(study: Node, series: dict) -> Entry:
    if study.view == BY_UIDS:
        return _dir(BY_UIDS, Role.SERIES, series, [_tag(series, "SeriesInstanceUID")])
    return _dir(study.view, Role.SERIES, series, [_tag(series, "Modality"), _tag(series, "SeriesDescription")])


def _series(node: Node, instances: list[dict], document: bytes | None = None) -> list[Entry]:
    found = [_instance(node, i) for i in instances]
    if node.view == BY_UIDS:
        found.append(_json(node, Role.SERIES_JSON, document))
    return found


def _instance(series: Node, instance: dict) -> Entry:
    orthanc_id = instance["ID"]
    # Orthanc IDs are hex and dashes: safe names as they are.
    stem = join_fields([_tag(instance, "SOPInstanceUID")], orthanc_id) if series.view == BY_UIDS else orthanc_id
    wanted = Wanted(orthanc_id, stem, ".dcm")
    # Instances carry no date of their own in listings; the series' last update
    # is the closest bound that costs no extra request.
    node = Node((series.view, Role.INSTANCE, orthanc_id), Kind.INSTANCE,
                size=int(instance.get("FileSize", 0)), mtime_ns=series.mtime_ns, version=instance.get("FileUuid", ""))
    return wanted, node


def _json(parent: Node, role: Role, document: bytes | None) -> Entry:
    assert document is not None
    name = role.value
    node = Node((parent.view, role, parent.ident), Kind.JSON, size=len(document), mtime_ns=parent.mtime_ns)
    return Wanted(f"json:{name}", name.removesuffix(".json"), ".json"), node


def year_entry(year: str, studies: list[dict]) -> Entry | None:
    """by-dates/{year}'s entry as the listing of by-dates/ would have it, from that year's studies."""
    return next((entry for entry in _years(studies) if entry[0].stem == year), None)


def _years(studies: list[dict]) -> list[Entry]:
    years: dict[str, int] = {}
    for study in studies:
        key = study_year_month(_tag(study, "StudyDate"))
        year = key[0] if key else UNDATED_NAME
        years[year] = max(years.get(year, 0), last_update_ns(study))
    return [
        (Wanted(year, year), directory(BY_DATES, Role.UNDATED if year == UNDATED_NAME else Role.YEAR,
                                       "" if year == UNDATED_NAME else year, mtime))
        for year, mtime in years.items()
    ]


def _year(node: Node, studies: list[dict]) -> list[Entry]:
    months: dict[str, int] = {}
    for study in studies:
        key = study_year_month(_tag(study, "StudyDate"))
        if key and key[0] == node.ident:
            months[key[1]] = max(months.get(key[1], 0), last_update_ns(study))
    return [(Wanted(m, m), directory(BY_DATES, Role.MONTH, m, mtime)) for m, mtime in months.items()]


def _month(node: Node, studies: list[dict]) -> list[Entry]:
    return _studies(BY_DATES, (s for s in studies if _month_of(s) == node.ident))


def _undated(node: Node, studies: list[dict]) -> list[Entry]:
    return _studies(BY_DATES, (s for s in studies if study_year_month(_tag(s, "StudyDate")) is None))


_LISTERS: dict[Role, Callable[..., list[Entry]]] = {
    Role.ROOT: _root, Role.VIEW: _view, Role.LABEL: _label, Role.PATIENT: _patient,
    Role.STUDY: _study, Role.SERIES: _series, Role.YEAR: _year, Role.MONTH: _month, Role.UNDATED: _undated,
}


def _dir(view: str, role: Role, resource: dict, fields: list[str]) -> Entry:
    orthanc_id = resource["ID"]
    stem = join_fields(fields, orthanc_id)
    # Named as it would be if no other entry wants the name (most are): naming then keeps the node.
    node = directory(view, role, orthanc_id, last_update_ns(resource), name=numbered(stem, 0))
    return Wanted(orthanc_id, stem), node


def _tag(resource: dict, name: str) -> str:
    return str(resource.get("MainDicomTags", {}).get(name, ""))


def _patient_tag(study: dict, name: str) -> str:
    return str(study.get("PatientMainDicomTags", {}).get(name, ""))


def _month_of(study: dict) -> str | None:
    key = study_year_month(_tag(study, "StudyDate"))
    return key[1] if key else None


_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")


def study_year_month(date: str) -> tuple[str, str] | None:
    """('2020', '2020-05') for a valid DICOM date 20200517, None for anything else."""
    match = _DATE.fullmatch(date.strip())
    if not match:
        return None
    year, month, day = (int(g) for g in match.groups())
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(max(year, 1), month)[1]) or year == 0:
        return None
    return match.group(1), f"{match.group(1)}-{match.group(2)}"


def last_update_ns(resource: dict) -> int:
    """Orthanc's `LastUpdate` (UTC, `20201109T123456`) in nanoseconds; 0 when absent or odd."""
    text = resource.get("LastUpdate", "")
    return _parse_last_update(text) if isinstance(text, str) else 0


@functools.lru_cache(maxsize=4096)  # strptime is slow, and resources stored together share the second
def _parse_last_update(text: str) -> int:
    try:
        return calendar.timegm(time.strptime(text, "%Y%m%dT%H%M%S")) * 1_000_000_000
    except (TypeError, ValueError):
        return 0
