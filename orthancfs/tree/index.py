"""Read access to Orthanc's database, in the shapes the views need, cached."""

from __future__ import annotations

import json
from typing import Any

from ..cache import MetadataCache
from ..orthanc import OrthancClient

PAGE_SIZE = 1000

CHILD_ROUTES = {
    "patients": "/patients/{}/studies",
    "studies": "/studies/{}/series",
    "series": "/series/{}/instances",
}


class OrthancIndex:
    """Expanded resource lists and documents, each fetched once per TTL."""

    def __init__(self, client: OrthancClient, cache: MetadataCache, page_size: int = PAGE_SIZE):
        self.client = client
        self.cache = cache
        self.page_size = page_size

    def patients(self) -> list[dict[str, Any]]:
        return self.cache.get("patients", lambda: self._all("/patients"))

    def studies(self) -> list[dict[str, Any]]:
        return self.cache.get("studies", lambda: self._all("/studies"))

    def children(self, level: str, orthanc_id: str) -> list[dict[str, Any]]:
        """The expanded children of a patient, study or series (complete, unpaged)."""
        route = CHILD_ROUTES[level].format(orthanc_id)
        return self.cache.get(route, lambda: self.client.get_json(route))

    def document(self, level: str, orthanc_id: str) -> bytes:
        """`GET /{level}/{id}` rendered the way study.json/series.json show it."""
        route = f"/{level}/{orthanc_id}"
        return self.cache.get(("document", route), lambda: render_json(self.client.get_json(route)))

    def statistics(self) -> dict[str, Any]:
        return self.cache.get("statistics", lambda: self.client.get_json("/statistics"))

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
