"""Files Orthanc took a moment ago, still readable by their exact path for a minute (never listed).

Clients such as rclone read an object back right after uploading it; the file has already
left uploads/ (Orthanc has it), so without this they would report it lost.  Receipts only
make a client's check pass: they are given up first when uploads need the disk.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid

RECEIPT_SECONDS = 60.0


class Receipts:
    """upload path -> a hard copy of the file it was, for RECEIPT_SECONDS."""

    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        for stale in os.listdir(directory):
            os.unlink(os.path.join(directory, stale))
        self._items: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def take(self, rel: str, path: str) -> None:
        """Move the file at `path` (just stored) into the receipts, as what `rel` was."""
        kept = os.path.join(self.directory, uuid.uuid4().hex)
        os.rename(path, kept)
        with self._lock:
            previous = self._items.pop(rel, None)
            self._items[rel] = (time.monotonic() + RECEIPT_SECONDS, kept)
        if previous:
            _remove(previous[1])

    def get(self, rel: str) -> str | None:
        """The path of the receipt for `rel`, if there is one still."""
        self._expire()
        with self._lock:
            found = self._items.get(rel)
        return found[1] if found else None

    def forget(self, rel: str) -> None:
        with self._lock:
            found = self._items.pop(rel, None)
        if found:
            _remove(found[1])

    def drop_all(self) -> None:
        """Give every receipt up (uploads need the disk)."""
        with self._lock:
            items, self._items = self._items, {}
        for _, path in items.values():
            _remove(path)

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            expired = [rel for rel, (until, _) in self._items.items() if until < now]
            paths = [self._items.pop(rel)[1] for rel in expired]
        for path in paths:
            _remove(path)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
