"""Entries of a whole-level folder (by-patients/, by-studies/, by-uids/) made while its list loads.

Listing by-patients/ of 100,000 patients waited 4-7 s for Orthanc's pages (1.10 answers them one
at a time), then made 100,000 entries in one go (0.6 s) before naming them.  The pages arrive one
by one in the index's page threads, which spend most of the load waiting for Orthanc: entries made
there, as each page arrives, leave only the naming for after the last page.

Only for a folder somebody is listing (listing() around it), so a walk loading the study level for
by-patients/ makes no by-studies/ entries nobody asked for.  An entry is taken only for the very
item object it was made from; any other item (a page of an earlier or later load) gets its entry
made at take(), as before.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from ..orthanc import Level
from .naming import Wanted
from .nodes import Node

Entry = tuple[Wanted, Node]
MakeEntry = Callable[[str, dict[str, Any]], Entry]  # (view, item) -> its entry


class EarlyEntries:
    """Entries made from arriving pages for the views being listed; thread-safe."""

    def __init__(self, levels: dict[str, Level], make: MakeEntry):
        self._levels = levels  # view -> the level its folder lists
        self._make = make
        self._wanted: Counter[str] = Counter()  # views being listed, and by how many callers
        self._made: dict[str, dict[int, tuple[dict[str, Any], Entry]]] = {}  # view -> id(item) -> (item, entry)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def listing(self, view: str | None) -> Iterator[None]:
        """While the folder of `view` is listed (None: another folder), make its entries from the
        pages that arrive; what was made goes when the last listing of the view ends."""
        if view not in self._levels:
            yield
            return
        with self._lock:
            self._wanted[view] += 1
            self._made.setdefault(view, {})
        try:
            yield
        finally:
            with self._lock:
                self._wanted[view] -= 1
                if not self._wanted[view]:
                    del self._wanted[view]
                    del self._made[view]

    def arrived(self, level: Level, page: list[dict[str, Any]]) -> None:
        """A page of `level`'s list (the index calls this from its page threads)."""
        with self._lock:
            views = [view for view in self._wanted if self._levels.get(view) is level]
        for view in views:
            made = {id(item): (item, self._make(view, item)) for item in page}
            with self._lock:
                if view in self._made:
                    self._made[view].update(made)

    def entries(self, view: str, items: list[dict[str, Any]]) -> list[Entry]:
        """The entries of `items` in `view`'s folder: those made early, the rest now."""
        with self._lock:
            made = self._made.get(view, {})  # (read while pages may still add to it: single lookups are safe)
        entries = []
        for item in items:
            early = made.get(id(item))
            entries.append(early[1] if early is not None and early[0] is item else self._make(view, item))
        return entries
