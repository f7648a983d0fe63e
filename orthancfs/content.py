"""File content: DICOM instances spooled to disk, JSON documents from memory.

An instance is downloaded once per set of concurrent opens into an unlinked
temporary file (never whole into RAM), and reads are served from it with
pread, which is safe from any number of threads.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from typing import Protocol

from .orthanc import OrthancClient

log = logging.getLogger(__name__)


class Content(Protocol):
    def read(self, offset: int, size: int) -> bytes: ...

    def close(self) -> None: ...


class BytesContent:
    """Content that is small and already in memory (JSON documents)."""

    def __init__(self, data: bytes):
        self.data = data

    def read(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]

    def close(self) -> None:
        pass


class Spool:
    """One instance's bytes in an unlinked temporary file."""

    def __init__(self, client: OrthancClient, instance_id: str, spool_dir: str | None):
        self.instance_id = instance_id
        self.users = 0
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self._file = tempfile.TemporaryFile(dir=spool_dir, prefix="orthancfs-spool-")  # noqa: SIM115 - lives as long as the spool
        self._client = client

    def fetch(self) -> None:
        path = f"/instances/{self.instance_id}/file"
        with self._client.stream(path) as chunks:
            for chunk in chunks:
                self._file.write(chunk)
        self._file.flush()
        log.debug("spooled instance %s (%d bytes)", self.instance_id, self._file.tell())

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self._file.fileno(), size, offset)

    def discard(self) -> None:
        self._file.close()


class SpoolHandle:
    """What one open() gets: a reference to a shared spool."""

    def __init__(self, store: ContentStore, spool: Spool):
        self._store = store
        self._spool = spool

    def read(self, offset: int, size: int) -> bytes:
        return self._spool.read(offset, size)

    def close(self) -> None:
        self._store.release(self._spool)


class ContentStore:
    """Shares one download between concurrent readers of the same instance."""

    def __init__(self, client: OrthancClient, spool_dir: str | None = None):
        self.client = client
        self.spool_dir = spool_dir
        self._spools: dict[str, Spool] = {}
        self._lock = threading.Lock()

    def open_instance(self, instance_id: str) -> SpoolHandle:
        spool, owner = self._join(instance_id)
        if owner:
            self._fill(spool)
        spool.ready.wait()
        if spool.failure is not None:
            self.release(spool)
            raise spool.failure
        return SpoolHandle(self, spool)

    def _join(self, instance_id: str) -> tuple[Spool, bool]:
        with self._lock:
            spool = self._spools.get(instance_id)
            owner = spool is None
            if owner:
                spool = self._spools[instance_id] = Spool(self.client, instance_id, self.spool_dir)
            spool.users += 1
            return spool, owner

    def _fill(self, spool: Spool) -> None:
        try:
            spool.fetch()
        except BaseException as exc:
            spool.failure = exc
            with self._lock:  # a failed spool must not be handed to later openers
                if self._spools.get(spool.instance_id) is spool:
                    del self._spools[spool.instance_id]
        finally:
            spool.ready.set()

    def release(self, spool: Spool) -> None:
        with self._lock:
            spool.users -= 1
            if spool.users > 0:
                return
            if self._spools.get(spool.instance_id) is spool:
                del self._spools[spool.instance_id]
        spool.discard()

    def close(self) -> None:
        with self._lock:
            spools, self._spools = list(self._spools.values()), {}
        for spool in spools:
            spool.discard()
