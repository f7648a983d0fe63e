"""Why each file kept in uploads/ was kept, persisted beside the kept files.

Also a short history of archives that left uploads/ with entries that were not sent (a
zipped CD's README, viewer or autorun.inf): nobody should have to wonder where they went.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SAVE_DELAY = 0.2  # seconds: the changes of this moment are written together
NOTES_KEPT = 100  # archive notes, at most
NOTE_SECONDS = 24 * 3600  # how long an archive note is shown


class Ledger:
    """relative path -> {reason, time, entries}; written atomically, a moment after it changes.

    Writing the whole file on every change made a big drop of files that stay (not DICOM, or
    refused) quadratic: each kept file rewrote every record so far.  Changes are written together
    SAVE_DELAY after the first of them, and close() writes what is pending.  A crash loses at most
    that moment's reasons, never a file: start-up adopts kept files that have no record, and says so.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._records, self._notes = self._load()
        self._saving: threading.Timer | None = None  # a save is due
        self._closed = False
        self.changed_ns = time.time_ns()  # when the records or notes last changed (the report's date)

    def _load(self) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        try:
            stored = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing, or damaged: that loses reasons, never files
            return {}, []
        if not isinstance(stored, dict):
            return {}, []
        if stored.get("version") != 2:  # written before notes existed: records only
            return stored, []
        return dict(stored.get("kept", {})), list(stored.get("notes", []))

    def _save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        document = {"version": 2, "kept": self._records, "notes": self._notes}
        temporary.write_text(json.dumps(document, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(temporary, self.path)

    def _changed(self) -> None:
        """With the lock held: have the records written soon (at once once closed)."""
        self.changed_ns = time.time_ns()
        if self._closed:
            self._save_quietly()
        elif self._saving is None:
            self._saving = threading.Timer(SAVE_DELAY, self._save_due)
            self._saving.daemon = True
            self._saving.start()

    def _save_due(self) -> None:
        with self._lock:
            if self._saving is None:
                return  # close() saved
            self._saving = None
            self._save_quietly()  # nobody to raise to in this thread; the next change tries again

    def close(self) -> None:
        """Write what is pending; later changes are written at once."""
        with self._lock:
            self._closed = True
            due, self._saving = self._saving, None
            if due is not None:
                due.cancel()
                self._save_quietly()

    def _save_quietly(self) -> None:
        """Save, or say why not: a full disk must not stop an unmount (start-up re-adopts the files)."""
        try:
            self._save()
        except OSError as exc:
            log.warning("cannot write %s: %s", self.path, exc)

    def record(self, rel: str, reason: str, entries: list[tuple[str, str]] | None = None,
               incomplete: bool = False) -> None:
        """Why `rel` is kept; `incomplete`: its writer did not write it whole, so it is never sent."""
        with self._lock:
            self._records[rel] = {"reason": reason, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                                  "entries": entries or [], **({"incomplete": True} if incomplete else {})}
            self._changed()

    def get(self, rel: str) -> dict[str, Any] | None:
        with self._lock:
            return self._records.get(rel)

    def forget(self, rel: str, below: bool = True) -> None:
        """Forget `rel` and (unless `below` is False: a file) everything below it."""
        with self._lock:
            if below:
                doomed = [key for key in self._records if key == rel or key.startswith(rel + "/")]
            else:  # one lookup instead of a scan: every new upload forgets its name
                doomed = [rel] if rel in self._records else []
            for key in doomed:
                del self._records[key]
            if doomed:
                self._changed()

    def move(self, old: str, new: str) -> None:
        """Follow a rename of `old` (a file or a folder) to `new`."""
        with self._lock:
            moved = {key: value for key, value in self._records.items() if key == old or key.startswith(old + "/")}
            for key, value in moved.items():
                del self._records[key]
                self._records[new + key[len(old):]] = value
            if moved:
                self._changed()

    def note(self, rel: str, reason: str, entries: list[tuple[str, str]]) -> None:
        """Remember, for a day, an archive that left uploads/ with entries that were not sent."""
        with self._lock:
            self._notes = [*self._recent_notes(), {"name": rel, "reason": reason, "entries": entries,
                                                  "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                  "epoch": time.time()}][-NOTES_KEPT:]
            self._changed()

    def notes(self) -> list[dict[str, Any]]:
        with self._lock:
            return self._recent_notes()

    def clear_notes(self) -> None:
        with self._lock:
            if self._notes:
                self._notes = []
                self._changed()

    def _recent_notes(self) -> list[dict[str, Any]]:
        since = time.time() - NOTE_SECONDS
        return [note for note in self._notes if note.get("epoch", 0) >= since]

    def has_records(self) -> bool:
        """Whether there is anything to report: a kept file, or a recent archive note."""
        with self._lock:
            return bool(self._records) or bool(self._recent_notes())

    def has_kept(self) -> bool:
        with self._lock:
            return bool(self._records)

    def items(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return sorted(self._records.items())

    def keep_only(self, existing: set[str]) -> None:
        """Drop records of files that are gone (removed while we were not mounted)."""
        with self._lock:
            stale = [key for key in self._records if key not in existing]
            for key in stale:
                del self._records[key]
            if stale:
                self._changed()
