"""File content: DICOM instances streamed into disk spools, JSON documents from memory.

An instance is downloaded once into an unlinked temporary file (never whole
into RAM) by a download thread; reads are served as soon as the bytes they
ask for have arrived, so the first bytes of a large file come at the speed of
the first chunk.  A version of an instance (its attachment UUID) never changes,
so a finished spool is kept after its last reader closes it, in an LRU bounded
by bytes and files, and a second read of the same file costs no request.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .errors import Forbidden, NotFound
from .orthanc import Level, OrthancClient

log = logging.getLogger(__name__)

MAX_SPOOLS = 256  # open descriptors held by the cache, at most
DOWNLOADS = 8  # concurrent downloads, at most
# A read that starts this far beyond what the download has brought (or will bring soon) is fetched by
# itself with a Range request, where Orthanc takes them (1.12.5): a DICOM reader jumping to the end of a
# 64 MiB file should not wait for all of it.  Far enough that a sequential reader, whose kernel reads
# ahead by 1 MiB at most, never does it while the download streams.
FAR_AHEAD = 8 << 20


class Handle:
    """What Tree.open() and Tree.create() hand out: one open file, whatever it is.

    Frontends use only this: read (and, for uploads, write) at an offset; whether a range can
    be read without waiting (ready_for), and a wake-up, from another thread, once it can
    (when_ready), so an event loop never parks a thread on a download; close.  A writer's
    close goes through closing() (tree/uploads.py); other handles have nothing to send.
    """

    writable = False

    @property
    def changed(self) -> bool:
        """Whether closing it now would send something (only a writer of uploads/)."""
        return False

    def read(self, offset: int, size: int) -> bytes:
        raise NotImplementedError

    def write(self, offset: int, data: bytes) -> int:
        raise Forbidden("not open for writing")

    def ready_for(self, offset: int, size: int) -> bool:
        return True

    def fetches(self, offset: int, size: int) -> bool:
        """Whether read() of this range will fetch it itself, blocking (call it from a thread), rather
        than wait for bytes already on their way (when_ready)."""
        return False

    def when_ready(self, offset: int, size: int, wake: Callable[[], None]) -> bool:
        """Call `wake` (from another thread) once a read of this range would not wait; False if it
        would not wait now (then `wake` is never called)."""
        return False

    def closing(self, keep_receipt: bool = False) -> Any:
        """A writer's close: what sending its file takes (tree.uploads.Closing), or None."""
        return None

    def close(self) -> None:
        pass


class BytesContent(Handle):
    """Content that is small and already in memory (JSON documents, reports)."""

    def __init__(self, data: bytes):
        self.data = data

    def read(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]


class SpoolDiscarded(Exception):
    """Stops the download of a spool that was evicted meanwhile."""


class Spool:
    """One instance's bytes in an unlinked temporary file, filled while it is read."""

    def __init__(self, instance_id: str, size: int, spool_dir: str | None, version: str = ""):
        self.instance_id = instance_id
        self.size = size
        self.version = version  # the attachment the listing named when this spool was opened
        self.users = 0
        self._file = tempfile.TemporaryFile(dir=spool_dir, prefix="orthancfs-spool-")  # noqa: SIM115
        self._arrived = 0
        self._complete = False
        self.started = False  # downloads start at the first read: a page-cache hit needs none
        self.failure: BaseException | None = None
        self._changed = threading.Condition()
        self._waiters: list[tuple[int, Callable[[], None]]] = []  # (end offset, wake-up) of async readers
        self._filling = False  # a download thread writes into the file
        self._discarded = False

    @property
    def failed(self) -> bool:
        return self.failure is not None

    def fill(self, client: OrthancClient) -> None:
        """Download the instance (in a download thread), waking readers as bytes arrive."""
        with self._changed:
            self._filling = True
        try:
            client.download_instance(self.instance_id, self._file.fileno(), self._arrive)
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the readers
            with self._changed:
                self.failure = exc
                self._wake()
        else:
            with self._changed:
                self._complete = True
                self._wake()
            log.debug("spooled instance %s (%d bytes)", self.instance_id, self._arrived)
        finally:
            with self._changed:
                self._filling = False
                close = self._discarded
            if close:
                self._file.close()

    def _arrive(self, total: int) -> None:
        with self._changed:
            if self._discarded:  # evicted while downloading: nobody wants the rest
                raise SpoolDiscarded(self.instance_id)
            self._arrived = total
            self._wake()

    def ready_for(self, offset: int, size: int) -> bool:
        """True if a read of this range would not wait (the FUSE loop serves those itself)."""
        return self._settled_for(offset + size)

    def far_ahead(self, offset: int) -> bool:
        """Whether a read at `offset` is far beyond what the download has brought (none yet: from 0)."""
        with self._changed:
            if self._complete or self.failure is not None or offset >= self.size:
                return False
            return offset >= (self._arrived if self.started else 0) + FAR_AHEAD

    def when_ready(self, offset: int, size: int, wake: Callable[[], None]) -> bool:
        """Call `wake` (from the download thread) once a read of this range would not wait.

        False if it would not wait already (then `wake` is never called).  This lets an event
        loop wait for bytes without parking a thread per read: a waiting read then costs one
        wake-up instead of two thread switches, which for 64 MiB read in 128 KiB requests was
        most of the gap to a plain GET.
        """
        with self._changed:
            if self._settled_for(offset + size):
                return False
            self._waiters.append((offset + size, wake))
            return True

    def _settled_for(self, end: int) -> bool:
        return self._complete or self._arrived >= end or self.failure is not None

    def _wake(self) -> None:
        """With the lock held: wake blocked and async readers whose bytes are here."""
        self._changed.notify_all()
        if self._waiters:
            due = [wake for end, wake in self._waiters if self._settled_for(end)]
            self._waiters = [(end, wake) for end, wake in self._waiters if not self._settled_for(end)]
            for wake in due:
                wake()

    def read(self, offset: int, size: int) -> bytes:
        with self._changed:
            while not self._settled_for(offset + size):
                self._changed.wait()
            if self.failure is not None and self._arrived < offset + size:
                raise self.failure
        return os.pread(self._file.fileno(), size, offset)

    def discard(self) -> None:
        """Close the file, or have its download stop and close it: the download holds the
        descriptor's number, and a number closed under it could be reused by any other file."""
        with self._changed:
            self._discarded = True
            if self._filling:
                return
        self._file.close()


class SpoolHandle(Handle):
    """What one open() of an instance gets: a reference to a shared spool."""

    def __init__(self, store: ContentStore, spool: Spool):
        self._store = store
        self.spool = spool

    def ready_for(self, offset: int, size: int) -> bool:
        return self.spool.ready_for(offset, size)

    def fetches(self, offset: int, size: int) -> bool:
        return self._store.ranges and self.spool.far_ahead(offset)

    def when_ready(self, offset: int, size: int, wake: Callable[[], None]) -> bool:
        """See Spool.when_ready; starts the download if need be."""
        self._store.start(self.spool)
        return self.spool.when_ready(offset, size, wake)

    def read(self, offset: int, size: int) -> bytes:
        if self.fetches(offset, size):  # the bytes alone, not the whole file before them
            end = min(offset + size, self.spool.size) - 1
            return self._store.client.instance_range(self.spool.instance_id, offset, end)
        self._store.start(self.spool)
        return self.spool.read(offset, size)

    def close(self) -> None:
        self._store.release(self.spool)


class ContentStore:
    """Spools by instance: shared by concurrent readers, kept (bounded) after the last one."""

    def __init__(self, client: OrthancClient, spool_dir: str | None = None, capacity_bytes: int = 1 << 30,
                 ranges: bool = False):
        self.client = client
        self.spool_dir = spool_dir
        self.capacity_bytes = capacity_bytes
        self.ranges = ranges  # Orthanc answers Range requests for an instance's bytes
        self._spools: OrderedDict[str, Spool] = OrderedDict()
        self._lock = threading.Lock()
        self._downloads = ThreadPoolExecutor(DOWNLOADS, thread_name_prefix="orthancfs-download")
        self._suspect: set[str] = set()  # spooled instances perhaps deleted since (suspect_all)

    def suspect_all(self) -> None:
        """Resources were deleted in Orthanc, which cannot say which: a kept spool is served to a
        new open only once Orthanc confirms that instance (one small request), never stale."""
        with self._lock:
            self._suspect.update(self._spools)

    def open_instance(self, instance_id: str, size: int = 0, version: str = "") -> SpoolHandle:
        """A handle on the spool of `instance_id` as `version` (its attachment UUID).

        A failed download is tried again by the next open; another version (the instance was sent
        again under the same UIDs) is downloaded anew, while readers of the old spool keep it.
        """
        self._confirm(instance_id, version)
        replaced = None
        with self._lock:
            spool = self._spools.get(instance_id)
            if spool is None or spool.failed or spool.version != version:
                if spool is not None and spool.users == 0:
                    replaced = spool
                spool = self._spools[instance_id] = Spool(instance_id, size, self.spool_dir, version)
            self._spools.move_to_end(instance_id)
            spool.users += 1
        if replaced is not None:
            replaced.discard()
        return SpoolHandle(self, spool)

    def _confirm(self, instance_id: str, version: str) -> None:
        """Raise NotFound if a suspect spool's instance is gone (its spool then goes too)."""
        with self._lock:
            if instance_id not in self._suspect:
                return
        try:
            current = self.client.item(Level.INSTANCES, instance_id).get("FileUuid", version)
        except NotFound:
            self._drop(instance_id)
            raise
        with self._lock:
            self._suspect.discard(instance_id)
        if current != version:
            log.debug("instance %s was sent again meanwhile (attachment %s)", instance_id, current)

    def _drop(self, instance_id: str) -> None:
        with self._lock:
            self._suspect.discard(instance_id)
            spool = self._spools.get(instance_id)
            if spool is None or spool.users:
                return
            del self._spools[instance_id]
        spool.discard()

    def start(self, spool: Spool) -> None:
        """Begin the download of `spool`, once."""
        with self._lock:
            if spool.started:
                return
            spool.started = True
        self._downloads.submit(spool.fill, self.client)

    def release(self, spool: Spool) -> None:
        with self._lock:
            spool.users -= 1
            evicted = self._evict()
            if spool.users == 0 and self._spools.get(spool.instance_id) is not spool:
                evicted.append(spool)  # replaced by a newer version while it was read
        for old in evicted:
            old.discard()

    def drop_idle(self) -> None:
        """Give up every spool nobody reads: they are kept only for speed, and uploads need the disk."""
        with self._lock:
            idle = [spool for spool in self._spools.values() if spool.users == 0]
            for spool in idle:
                del self._spools[spool.instance_id]
        for spool in idle:
            spool.discard()

    def cached_bytes(self) -> int:
        with self._lock:
            return sum(spool.size for spool in self._spools.values())

    def _evict(self) -> list[Spool]:
        """Drop least recently used idle spools beyond the budget (and every idle failed one)."""
        evicted = [s for s in self._spools.values() if s.users == 0 and (s.failed or not s.started)]
        total = sum(s.size for s in self._spools.values() if s not in evicted)
        for spool in list(self._spools.values()):
            if total <= self.capacity_bytes and len(self._spools) - len(evicted) <= MAX_SPOOLS:
                break
            if spool.users == 0 and spool not in evicted:
                evicted.append(spool)
                total -= spool.size
        for spool in evicted:
            del self._spools[spool.instance_id]
        return evicted

    def close(self) -> None:
        self._downloads.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            spools, self._spools = list(self._spools.values()), OrderedDict()
        for spool in spools:
            spool.discard()
