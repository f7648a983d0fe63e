"""Entries of a whole-level folder (by-patients/, by-studies/, by-uids/) made while its list loads.

Listing by-patients/ of 100,000 patients waited 4-7 s for Orthanc's pages (1.10 answers them one
at a time), then made 100,000 entries in one go (0.6 s) before naming them.  The pages arrive one
by one in the index's page threads, which spend most of the load waiting for Orthanc: entries made
there, as each page arrives, leave only the naming for after the last page.

Only for a folder somebody is listing (listing() around it), so a walk loading the study level for
by-patients/ makes no by-studies/ entries nobody asked for, and only from the latest load of the
level (a reload replaces what an earlier one made: one level's worth at most).  An entry is taken
only for the very item object it was made from; any other item gets its entry made then, as
before.  A reload that brings the same items keeps the listing's names, and its entries go unused:
0.6 s of CPU per 100,000 items, in threads that mostly wait for Orthanc.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

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
        self._made: dict[str, _Made] = {}  # view -> what the latest load of its level made
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
        try:
            yield
        finally:
            with self._lock:
                self._wanted[view] -= 1
                if not self._wanted[view]:
                    del self._wanted[view]
                    self._made.pop(view, None)

    def arrived(self, level: Level, load: object, page: list[dict[str, Any]]) -> None:
        """A page of `level`'s list, from the load `load` (the index calls this from its page threads)."""
        with self._lock:
            views = [view for view in self._wanted if self._levels.get(view) is level]
        for view in views:
            made = {id(item): (item, self._make(view, item)) for item in page}
            with self._lock:
                if view not in self._wanted:
                    continue  # its listing ended meanwhile
                kept = self._made.get(view)
                if kept is None or kept.load is not load:
                    kept = self._made[view] = _Made(load, {})
                kept.entries.update(made)

    def entries(self, view: str, items: list[dict[str, Any]]) -> list[Entry]:
        """The entries of `items` in `view`'s folder: those made early, the rest now."""
        with self._lock:
            kept = self._made.get(view)
        # Read without the lock: the load that brought `items` has ended (its last page came before
        # them), and what another load adds meanwhile belongs to other item objects.
        made = kept.entries if kept is not None else {}
        return [_made_for(made, item) or self._make(view, item) for item in items]


class _Made(NamedTuple):
    load: object  # the index's token for one load of a level
    entries: dict[int, tuple[dict[str, Any], Entry]]  # id(item) -> (item, its entry)


def _made_for(made: dict[int, tuple[dict[str, Any], Entry]], item: dict[str, Any]) -> Entry | None:
    """The entry made early for this very item object (an id is only ever the same object's while it lives)."""
    early = made.get(id(item))
    return early[1] if early is not None and early[0] is item else None
