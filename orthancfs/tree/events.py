"""What the tree tells its frontends about changes they did not make themselves.

A frontend that lets its clients cache names (the kernel, for FUSE) subscribes and takes
them back when the tree changes under it.  Subscribers are called in the thread that made
the change, so they must only queue work (the FUSE frontend hands notices to a thread of
its own), never block.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FolderRemoved:
    """A folder of uploads/ that ingestion emptied was removed (`rel`: its path inside uploads/)."""

    rel: str


@dataclass(frozen=True)
class ChangedElsewhere:
    """Another client changed Orthanc (follower.py): `deleted`, resources went away, so names
    cached from earlier listings may be stale; else only new names or dates."""

    deleted: bool


Event = FolderRemoved | ChangedElsewhere
Subscriber = Callable[[Event], None]


class Events:
    """A list of subscribers, each told of every event."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add `subscriber`; returns the call that removes it."""
        with self._lock:
            self._subscribers.append(subscriber)
        return lambda: self._unsubscribe(subscriber)

    def _unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    def publish(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:  # one frontend's bug must not stop the change, nor the others
                log.exception("a subscriber failed on %s", event)
