"""Metadata caching: a TTL cache that also merges concurrent requests for one key.

When the kernel walks a tree it often asks for the same directory from several
threads at once; only the first asks Orthanc, the others wait for its answer.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from cachetools import Cache, TTLCache


class NotCached(Exception):
    """Raised while peeking, instead of asking Orthanc."""


PARTIAL_KEPT = 64  # partial invalidations remembered; an answer older than all of them is not kept


class MetadataCache:
    """Answers of Orthanc kept for `ttl` seconds (ttl 0: nothing kept, requests still merged)."""

    def __init__(self, ttl: float, maxsize: int = 4096, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self._store: TTLCache | None = TTLCache(maxsize, ttl, timer=clock) if ttl > 0 else None
        self._inflight: dict[Hashable, Future] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._generation = 0  # raised by every invalidation
        self._cleared_at = 0  # the generation of the last invalidation of everything
        # The last partial invalidations, (generation, which keys): an answer on its way during one
        # is kept unless its key was among them (the follower drops a few keys a second while a
        # PACS receives; discarding every answer under way made a walk then ask again and again).
        self._partial: deque[tuple[int, Callable[[Any], bool]]] = deque(maxlen=PARTIAL_KEPT)
        self._changes = 0  # raised by every store, invalidation and expiry (see stamp)

    def stamp(self) -> int | None:
        """A number that stays the same exactly while every answer kept stays as it is; None when
        nothing is kept (ttl 0).  What is computed from cached answers alone holds while it does:
        the tree answers a listing again without recomputing its sources (a dozen lookups here)."""
        if self._store is None:
            return None
        with self._lock:
            # Counted as stored (len() would expire first): the store expires answers from the
            # moment it took them, so nothing computed from one outlives it.
            kept = Cache.__len__(self._store)
            self._store.expire()
            if Cache.__len__(self._store) < kept:
                self._changes += 1
            return self._changes

    def _stored(self) -> None:
        """With the lock held: something was stored."""
        self._changes += 1

    @contextmanager
    def peeking(self) -> Iterator[None]:
        """In this thread, answer only from what is cached; anything else raises NotCached.

        The FUSE loop uses it to serve cached answers itself instead of paying a
        thread hop, and to send everything else to a worker thread.
        """
        self._local.peeking = True
        try:
            yield
        finally:
            self._local.peeking = False

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if self._store is not None and key in self._store:
                return self._store[key]
            if getattr(self._local, "peeking", False):
                raise NotCached(key)
            future = self._inflight.get(key)
            owner = future is None
            if owner:
                future = self._inflight[key] = Future()
        if not owner:
            return future.result()
        return self._compute(key, compute, future)

    def _compute(self, key: Hashable, compute: Callable[[], Any], future: Future) -> Any:
        generation = self._generation
        try:
            value = compute()
        except BaseException as exc:
            with self._lock:
                del self._inflight[key]
            future.set_exception(exc)
            raise
        with self._lock:
            del self._inflight[key]
            # An answer that was on its way while the mount changed Orthanc may predate the
            # change: its waiters get it, the cache does not keep it.
            fresh = self._fresh_since(generation)
            if self._store is not None and fresh is not None and fresh(key):
                self._store[key] = value
                self._stored()
        future.set_result(value)
        return value

    def fill(self, compute: Callable[[], dict[Hashable, Any]]) -> None:
        """Store several answers that one request gave at once; kept, as get()'s, only if nothing
        was invalidated meanwhile.  Asks Orthanc, so it raises NotCached while peeking."""
        if getattr(self._local, "peeking", False):
            raise NotCached("fill")
        generation = self._generation
        values = compute()
        with self._lock:
            fresh = self._fresh_since(generation)
            if self._store is not None and fresh is not None:
                self._store.update((key, value) for key, value in values.items() if fresh(key))
                self._stored()

    def peek(self, key: Hashable) -> Any:
        """The cached value, or None; never asks Orthanc."""
        with self._lock:
            return self._store.get(key) if self._store is not None else None

    def _fresh_since(self, generation: int) -> Callable[[Hashable], bool] | None:
        """With the lock held: which keys of answers asked for at `generation` may be kept now
        (None: none)."""
        if generation == self._generation:
            return lambda key: True
        if self._cleared_at > generation:
            return None
        since = [stale for at, stale in self._partial if at > generation]
        if len(since) < self._generation - generation:
            return None  # some of them are forgotten
        return lambda key: not any(stale(key) for stale in since)

    def invalidate_where(self, stale: Callable[[Any], bool]) -> int:
        """Forget every key for which `stale(key)` is true, and do not keep such answers now on
        their way; how many were forgotten."""
        with self._lock:
            self._generation += 1
            self._partial.append((self._generation, stale))
            if self._store is None:
                self._changes += 1
                return 0
            keys = [key for key in list(self._store.keys()) if stale(key)]
            for key in keys:
                self._store.pop(key, None)
            # What was computed from the answers kept holds if none of them went, and no answer
            # on its way (not kept now, but already in somebody's hands) was named: Orthanc's
            # Stable* events after a study arrives name nothing cached, and changing the stamp for
            # them threw away every PROPFIND answer kept (fast_path.py) a minute after each arrival.
            if keys or any(stale(key) for key in self._inflight):
                self._changes += 1
            return len(keys)

    def invalidate(self, key: Hashable | None = None) -> None:
        """Forget one key, or everything."""
        with self._lock:
            self._generation += 1
            self._changes += 1
            if key is None:
                self._cleared_at = self._generation
            else:
                self._partial.append((self._generation, lambda other: other == key))
            if self._store is None:
                return
            if key is None:
                self._store.clear()
            else:
                self._store.pop(key, None)
