"""Why each file kept in uploads/ was kept, persisted beside the kept files."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any


class Ledger:
    """relative path -> {reason, time, entries}; written atomically on every change."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            records = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):  # a damaged ledger loses reasons, never files
            return {}
        return records if isinstance(records, dict) else {}

    def _save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self._records, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(temporary, self.path)

    def record(self, rel: str, reason: str, entries: list[tuple[str, str]] | None = None) -> None:
        with self._lock:
            self._records[rel] = {"reason": reason, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                                  "entries": entries or []}
            self._save()

    def get(self, rel: str) -> dict[str, Any] | None:
        with self._lock:
            return self._records.get(rel)

    def forget(self, rel: str) -> None:
        """Forget `rel` and everything below it."""
        with self._lock:
            doomed = [key for key in self._records if key == rel or key.startswith(rel + "/")]
            for key in doomed:
                del self._records[key]
            if doomed:
                self._save()

    def move(self, old: str, new: str) -> None:
        """Follow a rename of `old` (a file or a folder) to `new`."""
        with self._lock:
            moved = {key: value for key, value in self._records.items() if key == old or key.startswith(old + "/")}
            for key, value in moved.items():
                del self._records[key]
                self._records[new + key[len(old):]] = value
            if moved:
                self._save()

    def has_records(self) -> bool:
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
                self._save()
