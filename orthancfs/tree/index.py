"""Read access to Orthanc's database, in the shapes the views need, cached.

Two ways to list a folder's children.  Folder by folder: one request to an
expanded child route per folder.  In bulk: every resource of the child level
in a few paged requests, grouped by parent, so a walk of the whole tree costs
a handful of requests instead of one per folder.  Bulk is used while the
database is small enough to hold in memory (BULK_LIMIT resources) and caching
is on; each expanded item is exactly what `GET /{level}/{id}` returns, so the
JSON documents come from the same lists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ..cache import MetadataCache
from ..errors import NotFound
from ..orthanc import Level, OrthancClient
from ..settings import BULK_LIMIT
from .follower import Invalidation

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
# BULK_LIMIT (the default of --bulk-limit): resources of all levels; above it, folders are listed
# one by one.  Decoded expanded JSON costs about 1 KB per resource: 50,000 keep peak RSS well
# under 250 MB.
PARALLEL_PAGES = 4  # pages of one bulk list fetched at once (Orthanc answers them in parallel)
# What listings read of an expanded item (views.py), plus what links levels.  Above the bulk limit
# a level is kept with only these: 100,000 patients took 97 MB as decoded JSON, and no document
# is served from such a list (study.json / series.json are then fetched one by one).
LISTED_KEYS = ("ID", "LastUpdate", "FileSize", "FileUuid", "ParentPatient", "ParentStudy", "ParentSeries")
LISTED_TAGS = ("PatientID", "PatientName", "StudyDate", "StudyDescription", "StudyInstanceUID", "Modality",
               "SeriesDescription", "SeriesInstanceUID", "SOPInstanceUID")
SHARED_TAGS = {"StudyDate", "StudyDescription", "Modality", "SeriesDescription"}  # values that repeat


class LoadedLevel:
    """Every resource of one level, by ID and by parent."""

    def __init__(self, items: list[dict[str, Any]], parent_key: str | None):
        self.items = items
        self.by_id = {item["ID"]: item for item in items}
        self.by_parent: dict[str, list[dict[str, Any]]] = defaultdict(list)
        if parent_key:
            for item in items:
                self.by_parent[item.get(parent_key, "")].append(item)
        self.none: list[dict[str, Any]] = []  # one shared empty list: listings memoize on identity


class OrthancIndex:
    """Expanded resource lists and documents, each fetched once per TTL."""

    def __init__(self, client: OrthancClient, cache: MetadataCache, page_size: int = PAGE_SIZE,
                 bulk_limit: int = BULK_LIMIT):
        self.client = client
        self.cache = cache
        self.page_size = page_size
        self.bulk_limit = bulk_limit
        self._pages = ThreadPoolExecutor(PARALLEL_PAGES, thread_name_prefix="orthancfs-pages")
        self._prefetch = ThreadPoolExecutor(1, thread_name_prefix="orthancfs-prefetch")  # one walk preparation
        self._arriving: dict[Level, dict[str, dict[str, Any]]] = {}  # items by ID, while the level's list loads
        self._walk_lock = threading.Lock()
        self._walk_prepared: Future | None = None
        self.changed_ns = 0  # when another client last changed Orthanc, as far as we know (follower.py)
        # Called with each page of a level's list as it arrives, in the page threads (early.py): the
        # level, a token for the load it belongs to, the page.
        self.page_watchers: list[Callable[[Level, object, list[dict[str, Any]]], None]] = []
        self._failed_watchers: list[Callable] = []

    def close(self) -> None:
        self._pages.shutdown(wait=False, cancel_futures=True)
        self._prefetch.shutdown(wait=False, cancel_futures=True)

    # The cache's keys: ("level", Level), ("children", Level, id), ("item", Level, id),
    # ("document", Level, id), ("lookup", uid), ("statistics",), ("labels",), ("label", label),
    # ("year", year).

    def forget(self, found: Invalidation) -> int:
        """Drop what another client's changes made stale (follower.py); how many answers went."""
        if found.everything:
            self.cache.invalidate()
            return -1
        return self.cache.invalidate_where(stale_keys(found))

    def patients(self) -> list[dict[str, Any]]:
        return self._level(Level.PATIENTS).items

    def studies(self) -> list[dict[str, Any]]:
        return self._level(Level.STUDIES).items

    def has_labels(self) -> bool:
        return self.client.capabilities.labels

    def labels(self) -> list[str]:
        """Every label in use, sorted (the folders of by-labels/)."""
        return self.cache.get(("labels",), lambda: sorted(self.client.all_labels()))

    def studies_with_label(self, label: str) -> list[dict[str, Any]]:
        """The expanded studies that carry `label`: a query where Orthanc can page it to its end
        (extended find), else the list of every study, whose items name their labels."""
        if not self.client.capabilities.extended_find:
            return [study for study in self.studies() if label in study.get("Labels", ())]
        return self.cache.get(("label", label), lambda: self.client.find(Level.STUDIES, self.page_size, [label]))

    def finds_completely(self) -> bool:
        """Whether queries can list folders (Orthanc pages them to their end: extended find)."""
        return self.client.capabilities.extended_find

    def studies_of_year(self, year: str) -> list[dict[str, Any]]:
        """The expanded studies whose StudyDate falls in `year` (by-dates/{year}/ and its months): with
        one date-range query (paged) where Orthanc can page it to its end, not the list of every study
        (a PACS holds decades of them); from every study where they are at hand, or must be."""
        loaded = self.cache.peek(("level", Level.STUDIES))
        if loaded is not None or not self.finds_completely():
            studies = loaded.items if loaded is not None else self.studies()
            return [s for s in studies if str(s.get("MainDicomTags", {}).get("StudyDate", "")).startswith(year)]
        return self.cache.get(("year", year), lambda: self.client.find(
            Level.STUDIES, self.page_size, query={"StudyDate": f"{year}0101-{year}1231"}))

    def resource(self, level: Level, orthanc_id: str) -> dict[str, Any]:
        """One expanded resource: from its level's list if that is loaded whole, else `item`."""
        loaded = self.cache.peek(("level", level))
        if loaded is not None and self.in_bulk_mode() and orthanc_id in loaded.by_id:
            return loaded.by_id[orthanc_id]
        return self.item(level, orthanc_id)

    def level_loaded(self, level: Level) -> bool:
        """Whether every resource of `level` is at hand (no request needed to list them)."""
        return self.cache.peek(("level", level)) is not None

    def children(self, level: Level, orthanc_id: str) -> list[dict[str, Any]]:
        """The expanded children of a patient, study or series (complete).

        From the bulk lists once they are loaded; until then from the pages of the
        child list that have arrived, if they hold every child the parent names; else
        from the folder's own child route (one small request), while the bulk lists
        load in the background: a single `ls` stays as fast as one request, and a walk
        follows the pages as they come instead of asking folder by folder.
        """
        child_level = _child(level)
        parents, children = self.cache.peek(("level", level)), self.cache.peek(("level", child_level))
        # Nothing loaded or loading: no need to ask /statistics whether it could be (a cold request).
        if parents is not None and self.in_bulk_mode():
            if children is not None:
                if orthanc_id not in parents.by_id:
                    raise NotFound(f"{level.route} {orthanc_id}")
                return children.by_parent.get(orthanc_id) or children.none
            arrived = self._arrived_children(parents, level, orthanc_id)
            if arrived is not None:
                return arrived
        return self.cache.get(("children", level, orthanc_id), lambda: self.client.children(level, orthanc_id))

    def studies_with_uid(self, uid: str) -> list[dict[str, Any]]:
        """The expanded studies whose StudyInstanceUID is `uid` (two patients may share one),
        with two small requests instead of the list of every study."""
        found = self.cache.get(("lookup", uid), lambda: self.client.lookup(uid))
        return [self.item(Level.STUDIES, item["ID"]) for item in found if item.get("Type") == "Study"]

    def children_at_hand(self, level: Level, orthanc_id: str) -> bool:
        """Whether the children of `orthanc_id` can be listed without a request."""
        return (self.cache.peek(("children", level, orthanc_id)) is not None
                or self.cache.peek(("level", _child(level))) is not None)

    def child_with_uid(self, level: Level, parent_id: str, uid: str) -> dict[str, Any] | None:
        """The child of study or series `parent_id` whose UID is `uid`, without listing its siblings:
        one `GET` of the Orthanc ID that the UIDs make (see orthanc_id).  None when Orthanc has no
        resource of that ID, or one that is not this child: only the listing can then tell."""
        child_level = _child(level)
        try:
            child = self.item(child_level, orthanc_id(*self._uids_above(level, parent_id), uid))
        except NotFound:
            return None
        if child.get(child_level.parent_key or "") != parent_id or _uid_of(child, child_level) != uid:
            return None
        return child

    def _uids_above(self, level: Level, orthanc_id: str) -> list[str]:
        """What the IDs of a study's (or series') children hash besides their own UID: PatientID,
        StudyInstanceUID (and SeriesInstanceUID)."""
        item = self.item(level, orthanc_id)
        if level is Level.SERIES:
            return [*self._uids_above(Level.STUDIES, item.get("ParentStudy", "")), _uid_of(item, Level.SERIES)]
        return [item.get("PatientMainDicomTags", {}).get("PatientID", ""), _uid_of(item, Level.STUDIES)]

    def list_grandchildren(self, level: Level, orthanc_id: str, children: list[dict[str, Any]]) -> None:
        """Cache the child lists of every child of a patient or study, with one request.

        For walks folder by folder (databases above the bulk limit): a walker lists each child
        next, and Orthanc answers one bigger request for much less than one per child (our
        CPU per request, most of it parsing HTTP, is what bounds such a walk).
        """
        child_level, grandchild_level = level.child, level.grandchild
        if child_level is None or grandchild_level is None:
            return
        keys = {child["ID"]: ("children", child_level, child["ID"]) for child in children}
        if all(self.cache.peek(key) is not None for key in keys.values()):
            return

        def by_child() -> dict[tuple, list[dict[str, Any]]]:
            grouped: dict[tuple, list[dict[str, Any]]] = {key: [] for key in keys.values()}
            for item in self.client.grandchildren(level, orthanc_id):
                key = keys.get(item.get(grandchild_level.parent_key or "", ""))
                if key is not None:  # one that arrived since the children were listed waits for its own listing
                    grouped[key].append(item)
            return grouped

        self.cache.fill(by_child)

    def _arrived_children(self, parents: LoadedLevel | None, level: Level,
                          orthanc_id: str) -> list[dict[str, Any]] | None:
        """The children of one resource from a child list still loading, or None unless all have arrived.

        The parent's own expanded item names its children (Studies, Series, Instances), so
        completeness is known without waiting for the whole list.
        """
        arriving = self._arriving.get(_child(level))
        parent = parents.by_id.get(orthanc_id) if parents is not None else None
        if arriving is None or parent is None:
            return None
        return arrived_children(parent, level.children_key or "", arriving)

    def document(self, level: Level, orthanc_id: str) -> bytes:
        """`GET /{level}/{id}` rendered the way study.json/series.json show it."""
        loaded = self.cache.peek(("level", level))
        if loaded is not None and self.in_bulk_mode():
            item = loaded.by_id.get(orthanc_id)
            if item is None:
                raise NotFound(f"{level.route} {orthanc_id}")
            return self.cache.get(("document", level, orthanc_id), lambda: render_json(item))
        return self.cache.get(("document", level, orthanc_id), lambda: render_json(self.item(level, orthanc_id)))

    def item(self, level: Level, orthanc_id: str) -> dict[str, Any]:
        """`GET /{level}/{id}`, cached: a study found by UID and its study.json share one request."""
        return self.cache.get(("item", level, orthanc_id), lambda: self.client.item(level, orthanc_id))

    def statistics(self) -> dict[str, Any]:
        return self.cache.get(("statistics",), self.client.statistics)

    def in_bulk_mode(self) -> bool:
        """Whether folders are listed from whole-level lists (small databases, caching on)."""
        if self.cache.ttl <= 0 or self.bulk_limit <= 0:
            return False  # without a cache, bulk would reload everything for every folder
        statistics = self.statistics()
        return sum(int(statistics.get(level.count_key, 0)) for level in Level) <= self.bulk_limit

    def _level(self, level: Level) -> LoadedLevel:
        return self.cache.get(("level", level), lambda: self._load_level(level))

    def prepare_walk(self) -> None:
        """A folder is being listed: in bulk mode, load the levels below patients (top down) in the background."""
        if self.in_bulk_mode() and any(not self.level_loaded(level) for level in list(Level)[1:]):
            with self._walk_lock:
                if self._walk_prepared is not None and not self._walk_prepared.done():
                    return  # loading already
                self._walk_prepared = self._prefetch.submit(self._load_deeper, Level.PATIENTS)

    def _load_level(self, level: Level) -> LoadedLevel:
        if not self.in_bulk_mode():  # only the top-level lists, for listing: keep what listings read
            return LoadedLevel(self._listed(level), level.parent_key)
        arriving = self._arriving[level] = {}
        arrived = self._watched(level, lambda page: arriving.update((item["ID"], item) for item in page))
        try:
            items = self._all(level, self._expected(level), on_page=arrived)
        finally:
            if self._arriving.get(level) is arriving:
                del self._arriving[level]
        return LoadedLevel(items, level.parent_key)

    def _load_deeper(self, level: Level) -> None:
        """Load the levels below `level`, top down: a level's items name their children, so
        listings can use the next level's pages as they arrive (see children())."""
        deeper = level.child
        while deeper is not None:
            self._quietly(deeper)
            deeper = deeper.child

    def _quietly(self, level: Level) -> None:
        # The cache keeps the answer (or nothing): a failure here is met again by the reader.
        with contextlib.suppress(Exception):
            self._level(level)

    def _expected(self, level: Level) -> int:
        try:
            return int(self.statistics().get(level.count_key, 0))
        except Exception:  # noqa: BLE001 - only a hint for paging
            return 0

    def _listed(self, level: Level) -> list[dict[str, Any]]:
        """A whole top-level list for listing only (above the bulk limit): where Orthanc has extended
        find, asked for just what listings show (measured on 1.12.7, 3,000 studies: 146 ms instead of
        175, 3,000 patients: 95 instead of 101); where its LimitFindResults cuts those pages, the rest
        comes from the level's own list, which no limit cuts."""
        arrived = self._watched(level, _keep_listed_parts)
        if not self.finds_completely():
            return self._all(level, self._expected(level), on_page=arrived)
        items: list[dict[str, Any]] = []
        while True:
            page = self.client.listed_page(level, len(items), self.page_size)
            arrived(page)
            items.extend(page)
            if not page:
                return items
            if len(page) < self.page_size:  # the end, or the server's limit: the plain list tells which
                rest = self._all(level, on_page=arrived, since=len(items))
                return items + rest

    def _watched(self, level: Level, first: Callable[[list[dict[str, Any]]], None]
                 ) -> Callable[[list[dict[str, Any]]], None]:
        """What one load of `level` does with each page: `first`, then the page watchers, told
        which load the page belongs to."""
        load = object()

        def arrived(page: list[dict[str, Any]]) -> None:
            first(page)
            self._tell_watchers(level, load, page)
        return arrived

    def _tell_watchers(self, level: Level, load: object, page: list[dict[str, Any]]) -> None:
        for watcher in self.page_watchers:
            try:
                watcher(level, load, page)
            except Exception:  # a watcher only saves time later: the load goes on without it
                if watcher in self._failed_watchers:  # said once already: it would fail for every page
                    log.debug("watching a page of %s failed", level.route, exc_info=True)
                else:
                    self._failed_watchers.append(watcher)
                    log.exception("watching a page of %s failed", level.route)

    def _all(self, level: Level, expected: int = 0,
             on_page: Callable[[list[dict[str, Any]]], None] = lambda page: None,
             since: int = 0) -> list[dict[str, Any]]:
        """Every resource of a level, page by page, so no server limit can truncate it.

        The pages that `expected` (from /statistics) predicts are fetched at once; then
        page after page until a short one, so a level that grew meanwhile is still complete.
        `on_page` sees each page as it arrives (in any order).
        """
        def page(since: int) -> list[dict[str, Any]]:
            found = self.client.page(level, since, self.page_size)
            on_page(found)
            return found

        items: list[dict[str, Any]] = []
        predicted = range(since, expected, self.page_size)
        for found in self._pages.map(page, predicted) if len(predicted) > 1 else map(page, predicted):
            items.extend(found)
        while len(items) % self.page_size == 0:  # the last page was full (or none was fetched yet)
            found = page(since + len(items))
            items.extend(found)
            if len(found) < self.page_size:
                break
        return items


STUDY_QUERIES = frozenset({"year", "label", "labels", "lookup"})  # answers that list studies by what they hold


def stale_keys(found: Invalidation) -> Callable[[tuple], bool]:
    """Which cache keys a change makes stale.  A new resource changes its level's list and its
    parent's item (which names its children): the parent is not in the log entry, so every
    answer of the parent's level that lists children goes; the counts go too.  Its other ancestors
    change only their LastUpdate (a folder's date), which the TTL bounds: dropping whole levels for
    it cost every walk a reload while a PACS receives.  A resource changed in place (stable,
    attachment updated): its own answers, and for an instance the listings that give its size."""
    lists = set(found.added) | {Level.INSTANCES for level, _ in found.updated if level is Level.INSTANCES}
    parents = {level.parent for level in lists} - {None}
    resources = set(found.updated)
    studies = Level.STUDIES in found.added

    def stale(key: tuple) -> bool:
        kind = key[0]
        if kind == "statistics":
            return bool(found.added)
        if kind == "level":
            return key[1] in lists or key[1] in parents
        if kind in ("children", "item", "document"):
            return key[1] in parents or (key[1], key[2]) in resources
        return studies and kind in STUDY_QUERIES

    return stale


def orthanc_id(*identifiers: str) -> str:
    """The ID Orthanc gives a resource: the SHA-1 of its identifiers and those of its parents
    (`PatientID|StudyInstanceUID|SeriesInstanceUID|SOPInstanceUID`, as far down as its level),
    written as five dash-separated groups of eight hex digits (the Orthanc Book, "Orthanc
    identifiers")."""
    digest = hashlib.sha1("|".join(identifiers).encode("utf-8")).hexdigest()
    return "-".join(digest[start:start + 8] for start in range(0, len(digest), 8))


def _uid_of(item: dict[str, Any], level: Level) -> str:
    return str(item.get("MainDicomTags", {}).get(level.uid_tag, ""))


def _child(level: Level) -> Level:
    assert level.child is not None, level
    return level.child


def arrived_children(parent: dict[str, Any], ids_key: str,
                     arriving: dict[str, dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The children that `parent` names under `ids_key`, if all are in `arriving`; else None."""
    try:
        return [arriving[child] for child in parent.get(ids_key, ())]
    except KeyError:
        return None


def _keep_listed_parts(page: list[dict[str, Any]]) -> None:
    page[:] = [listed_part(item) for item in page]


def listed_part(item: dict[str, Any]) -> dict[str, Any]:
    """What listings need of an expanded item; repeated values (dates, tags) shared, not copied.

    Not the child ID lists: only bulk mode, where items are kept whole, lists from arriving pages.
    """
    slim = {key: item[key] for key in LISTED_KEYS if key in item}
    if "LastUpdate" in slim:
        slim["LastUpdate"] = sys.intern(slim["LastUpdate"])
    for group in ("MainDicomTags", "PatientMainDicomTags"):
        tags = item.get(group)
        if tags:
            slim[group] = {tag: sys.intern(tags[tag]) if tag in SHARED_TAGS else tags[tag]
                           for tag in LISTED_TAGS if tags.get(tag)}
    return slim


def render_json(document: Any) -> bytes:
    return (json.dumps(document, indent=3, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
