"""Telling the kernel to forget names it caches, from a thread of our own.

pyfuse3's invalidate_entry_async logs a traceback when the kernel answers with an
error, and it does when the notice races an unmount.  Here errors are expected and
quiet, and the thread is stopped before the FUSE session is closed (a notice sent
after that would use a destroyed session).
"""

from __future__ import annotations

import logging
import queue
import threading

import pyfuse3

log = logging.getLogger(__name__)


class KernelNotifier:
    """Queues "forget this name" notices; never blocks the caller (which may be a request handler)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="orthancfs-notify", daemon=True)
        self._thread.start()

    def forget_entry(self, parent_inode: int, name: bytes) -> None:
        self._queue.put((parent_inode, name))

    def _run(self) -> None:
        # Synchronous notices from this thread: the kernel may wait for the directory lock that
        # the request which caused the notice holds, so they must never be sent from a handler.
        while (notice := self._queue.get()) is not None:
            parent_inode, name = notice
            try:
                pyfuse3.invalidate_entry(parent_inode, name)
            except OSError as exc:  # the kernel had dropped the name already, or we are unmounting
                log.debug("kernel did not forget %r in inode %d: %s", name, parent_inode, exc)

    def close(self) -> None:
        """Send what is queued, then stop (before pyfuse3.close())."""
        self._queue.put(None)
        self._thread.join(timeout=10)
