"""Read access to Orthanc's database, in the shapes the views need, cached.

Two ways to list a folder's children.  Folder by folder: one request to an
expanded child route per folder.  In bulk: every resource of the child level
in a few paged requests, grouped by parent, so a walk of the whole tree costs
a handful of requests instead of one per folder.  Bulk is used while the
database is small enough to hold in memory (BULK_LIMIT instances) and caching
is on; each expanded item is exactly what `GET /{level}/{id}` returns, so the
JSON documents come from the same lists.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from ..cache import MetadataCache
from ..errors import NotFound
from ..orthanc import OrthancClient

PAGE_SIZE = 1000
BULK_LIMIT = 100_000  # instances; above this, folders are listed one by one

CHILD_ROUTES = {
    "patients": "/patients/{}/studies",
    "studies": "/studies/{}/series",
    "series": "/series/{}/instances",
}
CHILD_LEVEL = {"patients": "studies", "studies": "series", "series": "instances"}
PARENT_KEY = {"studies": "ParentPatient", "series": "ParentStudy", "instances": "ParentSeries"}


class Level:
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

    def patients(self) -> list[dict[str, Any]]:
        return self._level("patients").items

    def studies(self) -> list[dict[str, Any]]:
        return self._level("studies").items

    def children(self, level: str, orthanc_id: str) -> list[dict[str, Any]]:
        """The expanded children of a patient, study or series (complete)."""
        if not self._bulk():
            route = CHILD_ROUTES[level].format(orthanc_id)
            return self.cache.get(route, lambda: self.client.get_json(route))
        if orthanc_id not in self._level(level).by_id:
            raise NotFound(f"/{level}/{orthanc_id}")
        children = self._level(CHILD_LEVEL[level])
        return children.by_parent.get(orthanc_id) or children.none

    def document(self, level: str, orthanc_id: str) -> bytes:
        """`GET /{level}/{id}` rendered the way study.json/series.json show it."""
        route = f"/{level}/{orthanc_id}"
        if self._bulk():
            item = self._level(level).by_id.get(orthanc_id)
            if item is None:
                raise NotFound(route)
            return self.cache.get(("document", route), lambda: render_json(item))
        return self.cache.get(("document", route), lambda: render_json(self.client.get_json(route)))

    def statistics(self) -> dict[str, Any]:
        return self.cache.get("statistics", lambda: self.client.get_json("/statistics"))

    def _bulk(self) -> bool:
        if self.cache.ttl <= 0 or self.bulk_limit <= 0:
            return False  # without a cache, bulk would reload everything for every folder
        return int(self.statistics().get("CountInstances", 0)) <= self.bulk_limit

    def _level(self, level: str) -> Level:
        return self.cache.get(("all", level), lambda: Level(self._all(f"/{level}"), PARENT_KEY.get(level)))

    def _all(self, route: str) -> list[dict[str, Any]]:
        """Every resource of a level, page by page, so no server limit can truncate it."""
        items: list[dict[str, Any]] = []
        while True:
            params = {"expand": "", "since": len(items), "limit": self.page_size}
            page = self.client.get_json(route, params=params)
            items.extend(page)
            if len(page) < self.page_size:
                return items


def render_json(document: Any) -> bytes:
    return (json.dumps(document, indent=3, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
