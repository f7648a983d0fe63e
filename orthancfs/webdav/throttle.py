"""Failed logins: a growing wait per key (an address, a user name), up to a lockout that expires.

The wait is not a sleep: a worker thread that slept through it would be held by the
attacker it is meant to slow down (16 guessing connections would stall the server).
Instead an attempt that comes before its key's wait is over is refused at once,
without looking at its password (429 and Retry-After), so guessing costs the
server nothing and gains the guesser nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cachetools import LRUCache

FREE_FAILURES = 3  # mistyped passwords cost nothing
FIRST_WAIT = 1.0  # seconds, doubled with each further failure: 1, 2, 4, 8, 16, 32
LOCKOUT_AFTER = 10  # failures
LOCKOUT_SECONDS = 900.0
FORGET_AFTER = 900.0  # a key's failures are forgotten this long after its last one
KEYS_KEPT = 10_000  # bounded memory, whatever names or addresses are sent


def wait_after(failures: int) -> float:
    """How long a key must wait after this many failures in a row."""
    if failures <= FREE_FAILURES:
        return 0.0
    if failures >= LOCKOUT_AFTER:
        return LOCKOUT_SECONDS
    return FIRST_WAIT * 2 ** (failures - FREE_FAILURES - 1)


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0  # when the last failure happened
    until: float = 0.0  # no attempt is checked before this


class Throttle:
    """Thread-safe failure counts; `clock` is injectable so tests need not wait."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._records: LRUCache = LRUCache(KEYS_KEPT)
        self._lock = threading.Lock()

    def wait(self, keys: Iterable[str]) -> float:
        """Seconds before an attempt for these keys may be checked (0: now)."""
        now = self._clock()
        with self._lock:
            records = [self._records.get(key) for key in keys]
        return max([record.until - now for record in records if record] + [0.0])

    def failed(self, keys: Iterable[str]) -> float:
        """Count a failure for each key; the longest wait that follows."""
        now = self._clock()
        waits = [0.0]
        with self._lock:
            for key in keys:
                record = self._records.get(key) or _Record()
                if now - record.last > FORGET_AFTER:
                    record.failures = 0
                record.failures += 1
                record.last, record.until = now, now + wait_after(record.failures)
                self._records[key] = record
                waits.append(record.until - now)
        return max(waits)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._records.pop(key, None)
