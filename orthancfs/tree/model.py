"""The tree model: path -> node, children, content, statistics.

Synchronous and thread-safe: the FUSE frontend calls it from worker threads,
the WebDAV frontend from server threads.  Nothing here knows about errno or
HTTP statuses; failures are the exceptions of `orthancfs.errors`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from cachetools import LRUCache

from ..cache import MetadataCache
from ..content import BytesContent, Content, ContentStore
from ..errors import IsADirectory, NotADirectory, NotFound
from ..orthanc import OrthancClient
from . import views
from .index import PAGE_SIZE, OrthancIndex
from .naming import NameAssigner
from .nodes import Kind, Node, Role, directory

log = logging.getLogger(__name__)

MAX_REMEMBERED_DIRECTORIES = 20_000


@dataclass(frozen=True)
class FsStats:
    """Numbers for statfs: Orthanc's disk use and instance count."""

    used_bytes: int
    instances: int


@dataclass
class _Listing:
    found: views.Sources
    children: dict[str, Node]


class Tree:
    """One Orthanc server seen as a directory tree (see DESIGN.md section 2)."""

    def __init__(self, client: OrthancClient, *, metadata_ttl: float = 10.0, spool_dir: str | None = None,
                 page_size: int = PAGE_SIZE):
        self.client = client
        self.index = OrthancIndex(client, MetadataCache(metadata_ttl), page_size)
        self.content = ContentStore(client, spool_dir)
        self.root = directory("", Role.ROOT, "", time.time_ns())
        # Per directory: the name assigner (so names stick) and the last listing,
        # reused while the sources it was computed from are the very same objects.
        self._listings: LRUCache = LRUCache(MAX_REMEMBERED_DIRECTORIES)
        self._assigners: LRUCache = LRUCache(MAX_REMEMBERED_DIRECTORIES)
        self._lock = threading.Lock()

    def children(self, node: Node) -> dict[str, Node]:
        """The entries of directory `node`, by name, sorted."""
        if not node.is_dir:
            raise NotADirectory(node.name)
        found = views.sources(self.index, node)
        with self._lock:
            listing = self._listings.get(node.key)
            if listing is None or not _same_sources(listing.found, found):
                listing = _Listing(found, self._name(node, views.entries(node, found)))
                self._listings[node.key] = listing
            return listing.children

    def _name(self, node: Node, entries: list[views.Entry]) -> dict[str, Node]:
        assigner = self._assigners.get(node.key)
        if assigner is None:
            assigner = self._assigners[node.key] = NameAssigner()
        names = assigner.assign([wanted for wanted, _ in entries])
        named = {names[wanted.resource]: child.named(names[wanted.resource]) for wanted, child in entries}
        return dict(sorted(named.items()))

    def lookup(self, parent: Node, name: str) -> Node:
        try:
            return self.children(parent)[name]
        except KeyError:
            raise NotFound(name) from None

    def resolve(self, path: str) -> Node:
        """The node at a slash-separated path relative to the root."""
        node = self.root
        for name in path.strip("/").split("/"):
            if name:
                node = self.lookup(node, name)
        return node

    def open(self, node: Node) -> Content:
        """Readable content of a file node; close() it when done."""
        if node.kind is Kind.INSTANCE:
            return self.content.open_instance(node.ident)
        if node.kind is Kind.JSON:
            level = "studies" if node.role is Role.STUDY_JSON else "series"
            return BytesContent(self.index.document(level, node.ident))
        raise IsADirectory(node.name)

    def statfs(self) -> FsStats:
        stats = self.index.statistics()
        return FsStats(int(stats.get("TotalDiskSize", 0)), int(stats.get("CountInstances", 0)))

    def close(self) -> None:
        self.content.close()


def _same_sources(old: views.Sources, new: views.Sources) -> bool:
    return len(old) == len(new) and all(a is b for a, b in zip(old, new, strict=True))
