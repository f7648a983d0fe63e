"""The tree model: path -> node, children, content, statistics.

Synchronous and thread-safe: the FUSE frontend calls it from worker threads,
the WebDAV frontend from server threads.  Nothing here knows about errno or
HTTP statuses; failures are the exceptions of `orthancfs.errors`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cachetools import LRUCache, TTLCache

from ..cache import MetadataCache, NotCached
from ..content import BytesContent, ContentStore, Handle
from ..errors import (
    CrossDevice,
    Forbidden,
    InvalidName,
    IsADirectory,
    NotADirectory,
    NotFound,
    NotPermitted,
    ReadOnly,
    WouldBlock,
)
from ..orthanc import Level, OrthancClient
from . import views
from .early import EarlyEntries
from .events import ChangedElsewhere, Events
from .follower import POLL_SECONDS, ChangeFollower, Invalidation
from .index import BULK_LIMIT, PAGE_SIZE, OrthancIndex
from .ingest import Ingester
from .naming import NameAssigner
from .nodes import ROLE_LEVEL, Kind, Node, Role, directory
from .staging import SpaceBudget
from .uploads import UPLOADS, UploadArea, UploadHandle
from .walks import WalkSpotter

log = logging.getLogger(__name__)

MAX_REMEMBERED_DIRECTORIES = 20_000
# After this mount deleted something, for so many seconds a resource found gone is taken for its
# doing (Orthanc removes a series and its study with their last instance), not another client's.
OWN_DELETIONS_EXPLAIN = 10.0
T = TypeVar("T")


@dataclass(frozen=True)
class FsStats:
    """Numbers for statfs: Orthanc's disk use and instance count, and the room left for uploads.

    Uploads are staged on local disk before Orthanc sees them, so the room is the staging
    disk's: what a file manager checks before it copies into uploads/.  While uploads are
    refused there is no room at all.
    """

    used_bytes: int
    instances: int
    free_bytes: int = 0
    free_files: int = 0


@dataclass(frozen=True)
class WritePolicy:
    """What the mount lets users change (Orthanc's WebDavUploadAllowed / WebDavDeleteAllowed)."""

    uploads: bool = True
    deletes: bool = False
    read_only: bool = False
    labels: bool = False  # studies' labels may be changed (--allow-labels)


UID_NAME = re.compile(r"[0-9]+(\.[0-9]+)*")  # a DICOM UID: digits and dots, as by-uids/ names them
LABEL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what Orthanc takes as a label
YEAR_NAME = re.compile(r"[0-9]{4}")  # a folder of by-dates/


@dataclass
class _Listing:
    found: views.Sources
    children: dict[str, Node]
    stamp: int | None = None  # the metadata cache's stamp when `found` was fetched
    walked: bool = False  # listed as part of a walk at that stamp (its prefetches are asked for)


class Tree:
    """One Orthanc server seen as a directory tree (see DESIGN.md section 2)."""

    def __init__(self, client: OrthancClient, state_dir: Path, *, metadata_ttl: float = 10.0,
                 spool_dir: str | None = None, page_size: int = PAGE_SIZE, policy: WritePolicy | None = None,
                 bulk_limit: int = BULK_LIMIT, content_cache_bytes: int = 1 << 30, walks: WalkSpotter | None = None):
        self.client = client
        self.policy = policy or WritePolicy()
        self.index = OrthancIndex(client, MetadataCache(metadata_ttl), page_size, bulk_limit)
        self._early = EarlyEntries(views.ITEM_VIEWS, views.view_entry)
        self.index.page_watchers.append(self._early.arrived)
        self.content = ContentStore(client, spool_dir, content_cache_bytes, ranges=client.capabilities.attachment_range)
        self.events = Events()
        # Uploads and download spools share the cache disk: uploads leave room for reads, and
        # finished spools (kept only for speed) make way for uploads.
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        budget = SpaceBudget.for_disk(str(state_dir), content_cache_bytes)
        budget.relief.append(self.content.drop_idle)
        self.uploads = UploadArea(state_dir, Ingester(client, spool_dir), budget,
                                  on_stored=self.index.cache.invalidate, events=self.events)
        self.root = directory("", Role.ROOT, "", time.time_ns())
        # Per directory: the name assigner (so names stick) and the last listing,
        # reused while the sources it was computed from are the very same objects.
        self._listings: LRUCache = LRUCache(MAX_REMEMBERED_DIRECTORIES)
        self._assigners: LRUCache = LRUCache(MAX_REMEMBERED_DIRECTORIES)
        self._lock = threading.Lock()
        self._walks = walks or WalkSpotter()
        # by-uids/ folders where a name was just found without listing, and that name (see _child_by_uid).
        self._probed: TTLCache | None = TTLCache(MAX_REMEMBERED_DIRECTORIES, metadata_ttl) if metadata_ttl > 0 else None
        self.follower: ChangeFollower | None = None
        self._vanished_at = self._own_deletion_at = float("-inf")

    def follow_changes(self, poll_seconds: float = POLL_SECONDS) -> None:
        """Follow Orthanc's change log from now on, so what other clients add or delete shows
        within seconds instead of after the metadata TTL (which then only bounds what the
        log cannot tell: docs/semantics.md)."""
        if self.index.cache.ttl > 0 and self.follower is None:
            self.follower = ChangeFollower(self.client, self.changed_elsewhere, poll_seconds)
            self.follower.start()

    def changed_elsewhere(self, found: Invalidation) -> None:
        """Another client changed Orthanc: forget what that made stale, and tell the frontends."""
        self.index.changed_ns = time.time_ns()  # first: forgetting raises the stamp listings are reused by
        forgotten = self.index.forget(found)
        if found.everything:
            log.debug("changes elsewhere (%s): every cached answer dropped", found.everything)
            with self._lock:
                if self._probed is not None:
                    self._probed.clear()
        else:
            log.debug("changes elsewhere: %d cached answers dropped", forgotten)
        if found.deleted:
            self.content.suspect_all()
        self.events.publish(ChangedElsewhere(found.deleted))

    def vanished(self, what: str) -> None:
        """Orthanc no longer has something a listing showed: deleted elsewhere, and the
        follower may not have seen it yet.  Once a second at most: a file manager showing a
        deleted folder asks for it again and again."""
        now = time.monotonic()
        if now - self._vanished_at < 1.0 or now - self._own_deletion_at < OWN_DELETIONS_EXPLAIN:
            return  # (what this mount deleted is gone, and it has invalidated its answers itself)
        self._vanished_at = now
        log.debug("%s is gone from Orthanc: every cached answer dropped", what)
        self.changed_elsewhere(Invalidation(everything=f"{what} is gone", deleted=True))

    @property
    def source(self) -> str:
        """The Orthanc this tree shows (its URL)."""
        return self.client.base_url

    @property
    def version(self) -> str:
        """Orthanc's version, as its /system says."""
        return self.client.capabilities.version_text

    def at_once(self, call: Callable[..., T], *args: Any) -> T:
        """`call(*args)` answered from what is known already, or WouldBlock if that needs Orthanc.

        An event loop serves cached answers itself this way (a thread hop costs more than most
        answers), and sends the rest to a worker thread.  `call` is one of this tree's methods.
        """
        try:
            with self.index.cache.peeking():
                return call(*args)
        except NotCached:
            raise WouldBlock from None

    def pending(self) -> tuple[list[str], list[str]]:
        """uploads/ names open for writing, and those being sent (what an unmount waits for)."""
        return self.uploads.pending()

    def children(self, node: Node, prefetch: bool = True) -> dict[str, Node]:
        """The entries of directory `node`, by name, sorted.

        `prefetch`: somebody lists this folder (not just looks a name up in it).  When the
        listings look like a walk (walks.py), the bulk lists below start loading.  Opening a
        known path never starts them (a cold read right after mounting took twice as long).
        """
        if not node.is_dir:
            raise NotADirectory(node.name)
        if node.view == UPLOADS:
            return self.uploads.children(node)
        walking = prefetch and node.role is not Role.ROOT and self._walks.listed(node)
        stamp = self.index.cache.stamp()
        with self._lock:
            listing = self._listings.get(node.key)
            if listing is not None and stamp is not None and listing.stamp == stamp and listing.walked >= walking:
                return listing.children  # nothing it was computed from has changed
        if walking:
            self.index.prepare_walk()
        item_view = _item_view(node)
        with self._early.listing(item_view):
            try:
                found = views.sources(self.index, node)
            except NotFound:
                if node.role in ROLE_LEVEL:  # a folder listed a moment ago
                    self.vanished(f"{ROLE_LEVEL[node.role].route} {node.ident}")
                raise
            if walking and node.role in ROLE_LEVEL and not self.index.in_bulk_mode():
                self.index.list_grandchildren(ROLE_LEVEL[node.role], node.ident, found[0])
            return self._listed(node, found, stamp, walking, item_view)

    def _listed(self, node: Node, found: views.Sources, stamp: int | None, walking: bool,
                item_view: str | None) -> dict[str, Node]:
        """The listing of `node` from `found`, its names kept from the last one where it has not
        changed; `item_view`: the view whose whole-level folder `node` is (early.py), if it is one."""
        with self._lock:
            listing = self._listings.get(node.key)
            if listing is None or not _same_sources(listing.found, found):
                made = views.entries(node, found) if item_view is None else self._early.entries(item_view, found[0])
                listing = self._listings[node.key] = _Listing(found, self._name(node, made))
            else:
                # Equal answers, perhaps in new objects (fetched again after the TTL): keep the names,
                # but hold these objects, or every later call compares each item deeply again (a
                # WebDAV walk after the TTL took 13 s instead of 4).
                listing.found = found
            listing.stamp, listing.walked = stamp, walking
            return listing.children

    def _name(self, node: Node, entries: list[views.Entry]) -> dict[str, Node]:
        assigner = self._assigners.get(node.key)
        if assigner is None:
            assigner = self._assigners[node.key] = NameAssigner()
        names = assigner.assign([wanted for wanted, _ in entries])
        named = {}
        for wanted, child in entries:  # entries come named as they would be alone (views.py): most stay so
            name = names[wanted.resource]
            named[name] = child if child.name == name else child.named(name)
        return dict(sorted(named.items()))

    def lookup(self, parent: Node, name: str) -> Node:
        if parent.view == UPLOADS:
            return self.uploads.lookup(parent, name)
        found = self.lookup_without_listing(parent, name)
        if found is not None:
            return found
        try:
            return self.children(parent, prefetch=False)[name]
        except KeyError:
            raise NotFound(name) from None

    def stamp(self) -> int | None:
        """A number that stays the same exactly while every listing and node of the views stays as
        the tree hands it out (None while nothing is cached: --metadata-ttl 0).  What a frontend
        computes from the views alone (an answer it wrote) holds while it does."""
        return self.index.cache.stamp()

    def lookup_without_listing(self, parent: Node, name: str) -> Node | None:
        """`name` in `parent` where it can be found without listing `parent`; None: only the
        listing can tell.  Raises NotFound.  It answers only names that are their own display
        name (bare UIDs), so frontends that rename for display may use it as it is.

        That is `by-uids/{StudyInstanceUID}`, unless every study is listed already: scripts open
        such paths directly, and listing `by-uids/` to find one study loaded the whole studies
        list (seconds and hundreds of MB for 100,000 studies).  A UID two studies share is left
        to the listing, which numbers them.  Below it, a series by its UID and an instance by
        `{SOPInstanceUID}.dcm` (see _child_by_uid).
        """
        if parent.view == views.BY_DATES and parent.role is Role.VIEW:
            return self._year(name)
        if parent.view != views.BY_UIDS:
            return None
        if parent.role in (Role.STUDY, Role.SERIES):
            return self._child_by_uid(parent, name)
        if parent.role is not Role.VIEW or not UID_NAME.fullmatch(name) \
                or self.index.level_loaded(Level.STUDIES):
            return None
        studies = self.index.studies_with_uid(name)
        if not studies:
            raise NotFound(name)
        if len(studies) > 1:
            return None
        [entry] = views.entries(parent, (studies,))
        return _named_if_plain(entry, name)

    def _year(self, name: str) -> Node | None:
        """by-dates/{year}, found with a date-range query instead of listing every study (unless they
        are at hand already); NotFound if no study was made that year."""
        if not YEAR_NAME.fullmatch(name) or self.index.level_loaded(Level.STUDIES) or not self.index.finds_completely():
            return None
        entry = views.year_entry(name, self.index.studies_of_year(name))
        if entry is None:
            raise NotFound(f"by-dates/{name}")
        return entry[1].named(name)

    def _child_by_uid(self, parent: Node, name: str) -> Node | None:
        """A series of a by-uids/ study, or an instance (`UID.dcm`) of a by-uids/ series, found by
        the Orthanc ID its UIDs make: one small request instead of the listing of every sibling
        (a CT series lists thousands of instances).  Only the first name asked for in a folder
        goes this way (again and again if need be: WebDAV resolves a path more than once per
        request).  Another name within the TTL means the folder is being read file after file:
        the listing, fetched once, then answers them all.
        """
        level, extension = ROLE_LEVEL[parent.role], ".dcm" if parent.role is Role.SERIES else ""
        uid = name.removesuffix(extension) if name.endswith(extension) else ""
        if not UID_NAME.fullmatch(uid) or self.index.children_at_hand(level, parent.ident):
            return None
        with self._lock:
            if self._probed is not None and self._probed.get(parent.key, name) != name:
                return None  # another name of this folder came first (the same one again: WebDAV resolves twice)
        child = self.index.child_with_uid(level, parent.ident, uid)
        with self._lock:
            if self._probed is not None:
                self._probed[parent.key] = name
        return None if child is None else _named_if_plain(views.child_entry(parent, child), name)

    def resolve(self, path: str) -> Node:
        """The node at a slash-separated path relative to the root."""
        node = self.root
        for name in path.strip("/").split("/"):
            if name:
                node = self.lookup(node, name)
        return node

    def refresh(self, node: Node) -> Node:
        """`node` with current attributes (uploads change under our feet; Orthanc's resources do not)."""
        if node.view != UPLOADS or node.role is Role.UPLOADS:
            return node
        if node.role is Role.REPORT:
            return self.uploads.report_node()
        if node.role is Role.RECEIPT:
            found = self.uploads.receipt(node.ident)
            if found is None:
                raise NotFound(node.name)
            return found
        return self.uploads.node(node.ident)

    def receipt(self, path: str) -> Node | None:
        """A file of uploads/ (`path` inside it) that Orthanc took a moment ago, readable for a minute
        by its exact path but never listed: for clients that read back what they wrote."""
        return self.uploads.receipt(path.strip("/"))

    def writable(self, node: Node) -> bool:
        """Whether the mode bits should invite changes to `node` (or, for folders, its entries)."""
        if self.policy.read_only or node.kind in (Kind.TEXT, Kind.JSON, Kind.INSTANCE) or node.role is Role.RECEIPT:
            return False
        if node.view == UPLOADS:
            return self.policy.uploads
        if self.policy.labels and node.role is Role.STUDY:  # (the kernel lets only writers set xattrs)
            return True
        return self.policy.deletes and node.is_dir and node.role is not Role.ROOT

    def open(self, node: Node, writable: bool = False, truncate: bool = False) -> Handle:
        """Content of a file node; close() it when done.  Only uploads can be opened for writing."""
        if writable:
            self._check_upload(node)
        if node.kind is Kind.UPLOAD:
            return self.uploads.open(node, writable, truncate)
        if node.kind is Kind.TEXT:
            return BytesContent(self.uploads.report())
        if node.kind is Kind.INSTANCE:
            try:
                return self.content.open_instance(node.ident, node.size, node.version)
            except NotFound:
                self.vanished(f"instance {node.ident}")
                raise
        if node.kind is Kind.JSON:
            level = Level.STUDIES if node.role is Role.STUDY_JSON else Level.SERIES
            return BytesContent(self.index.document(level, node.ident))
        raise IsADirectory(node.name)

    @staticmethod
    def opens_locally(node: Node) -> bool:
        """True if open() touches only local files: an instance's spool (its download starts at the
        first read), a staged upload, the report.  Generated documents ask Orthanc."""
        return node.kind is not Kind.JSON

    # --- changes -------------------------------------------------------------------

    def _check_upload(self, node: Node) -> None:
        if self.policy.read_only:
            raise ReadOnly("mounted --read-only")
        if node.view != UPLOADS or node.kind is Kind.TEXT:
            raise Forbidden("only uploads/ accepts new or changed files")
        if not self.policy.uploads:
            raise Forbidden("uploads are disabled (--no-upload)")

    def create(self, parent: Node, name: str, mode: int = 0o644, exclusive: bool = False) -> tuple[Node, UploadHandle]:
        """A new file in uploads/, open for writing (`exclusive`: O_EXCL, fail if the name is taken)."""
        self._check_upload(parent)
        return self.uploads.create(parent, name, mode, exclusive)

    def copy(self, node: Node, new_parent: Node, new_name: str) -> None:
        """Copy a file of uploads/ to another name in it (WebDAV COPY)."""
        self._check_upload(new_parent)
        self.uploads.copy(node, new_parent, new_name)

    def mkdir(self, parent: Node, name: str, mode: int = 0o755) -> Node:
        self._check_upload(parent)
        return self.uploads.mkdir(parent, name, mode)

    def unlink(self, parent: Node, name: str) -> None:
        self._remove(parent, name, folder=False)

    def rmdir(self, parent: Node, name: str) -> None:
        self._remove(parent, name, folder=True)

    def _remove(self, parent: Node, name: str, folder: bool) -> None:
        """In uploads/ a local file or folder goes; in the views, the Orthanc resource behind it."""
        if parent.view != UPLOADS:
            self._delete(parent, name, folder)
            return
        self._check_upload(parent)
        (self.uploads.rmdir if folder else self.uploads.unlink)(parent, name)

    def _delete(self, parent: Node, name: str, folder: bool) -> None:
        """Delete the Orthanc resource behind `name`: an instance, or a whole series/study/patient."""
        if self.policy.read_only:
            raise ReadOnly("mounted --read-only")
        if not self.policy.deletes:
            raise Forbidden("deleting is disabled; mount with --allow-delete")
        try:
            node = self.lookup(parent, name)
        except NotFound:
            return  # the kernel saw it a moment ago: gone meanwhile (e.g. with its last instance)
        if node.is_dir != folder:
            raise IsADirectory(name) if node.is_dir else NotADirectory(name)
        if node.kind is Kind.JSON:
            # study.json/series.json are Orthanc's account of their folder's resource and go with
            # it.  File managers (Explorer, rm -r, rclone) delete a folder file by file, then the
            # folder: refusing the document stopped them midway.  Orthanc's WebDAV does the same.
            return
        level = ROLE_LEVEL.get(node.role)
        if level is None:
            raise NotPermitted(f"{name} is not an Orthanc resource and cannot be deleted")
        self._own_deletion_at = time.monotonic()
        if self.follower is not None:
            self.follower.forget_counts()
        with contextlib.suppress(NotFound):  # already gone is what rm wanted
            self.client.delete_resource(level, node.ident)
        self.index.cache.invalidate()
        self.content.suspect_all()  # (a deletion elsewhere meanwhile is taken for ours: see semantics.md)
        self._own_deletion_at = time.monotonic()
        if self.follower is not None:
            self.follower.forget_counts()
        log.info("deleted %s %s (%s)", level.route, node.ident, name)

    def rename(self, old_parent: Node, old_name: str, new_parent: Node, new_name: str,
               replace: bool = True) -> tuple[str, str]:
        """Rename inside uploads/ (only there); returns the old and new identities for the frontend."""
        if self.policy.read_only:
            raise ReadOnly("mounted --read-only")
        inside = (old_parent.view == UPLOADS, new_parent.view == UPLOADS)
        if inside == (True, True):
            self._check_upload(new_parent)
            self.uploads.rename(old_parent, old_name, new_parent, new_name, replace)
            return _child(old_parent, old_name), _child(new_parent, new_name)
        if any(inside):
            raise CrossDevice("moves between uploads/ and the views are copies")
        raise NotPermitted("the views are Orthanc's; names cannot be changed")

    def set_attributes(self, node: Node, *, size: int | None = None, mode: int | None = None,
                       atime_ns: int | None = None, mtime_ns: int | None = None,
                       handle: UploadHandle | None = None) -> Node:
        """truncate/chmod/utime (through `handle`, if the caller has the file open): only for uploads
        (owners cannot change, so they are not asked)."""
        if self.policy.read_only:
            raise ReadOnly("mounted --read-only")
        if node.view != UPLOADS or node.role in (Role.UPLOADS, Role.REPORT, Role.RECEIPT):
            raise NotPermitted(f"{node.name or '/'} belongs to Orthanc; its attributes are not yours to change")
        self._check_upload(node)
        if size is not None:
            handle.truncate(size) if handle is not None and handle.writable else self.uploads.truncate_path(node, size)
        if mode is not None:
            self.uploads.set_mode(node, mode)
        if atime_ns is not None or mtime_ns is not None:
            if handle is not None and handle.changed:  # times of a file still being written: nothing to retry
                handle.set_times(node.mtime_ns if atime_ns is None else atime_ns,
                                 node.mtime_ns if mtime_ns is None else mtime_ns)
            elif self.uploads.set_times(node, atime_ns, mtime_ns):
                return node  # a retried upload was delivered: the file is gone, and that is success
        return self.refresh(node)

    def labels(self, node: Node) -> list[str] | None:
        """A study folder's labels, in any view (None: not a study, or an Orthanc without labels)."""
        if node.role is not Role.STUDY or not self.index.has_labels():
            return None
        return sorted(self.index.resource(Level.STUDIES, node.ident).get("Labels", []))

    def check_labels(self, node: Node, labels: list[str]) -> set[str]:
        """The labels set_labels() would give `node`, or the error it would raise (changing nothing)."""
        if self.policy.read_only:
            raise ReadOnly("mounted --read-only")
        if not self.policy.labels:
            raise Forbidden("changing labels is disabled; mount with --allow-labels")
        if node.role is not Role.STUDY or not self.index.has_labels():
            raise NotPermitted(f"{node.name}: only studies carry labels (Orthanc 1.12 and later)")
        wanted = {label.strip() for label in labels if label.strip()}
        bad = sorted(label for label in wanted if not LABEL_NAME.fullmatch(label))
        if bad:
            raise InvalidName(f"not a label (letters, digits, - and _, 64 at most): {', '.join(bad)}")
        return wanted

    def set_labels(self, node: Node, labels: list[str]) -> None:
        """Give a study exactly these labels (each added or removed in Orthanc), visible at once."""
        wanted = self.check_labels(node, labels)
        current = set(self.client.item(Level.STUDIES, node.ident).get("Labels", []))
        for label in sorted(wanted - current):
            self.client.add_label(Level.STUDIES, node.ident, label)
        for label in sorted(current - wanted):
            self.client.remove_label(Level.STUDIES, node.ident, label)
        self.index.cache.invalidate()
        log.info("labels of study %s (%s): %s", node.ident, node.name, ", ".join(sorted(wanted)) or "none")

    def status(self, node: Node) -> str | None:
        """Why an upload is still in uploads/ (None: nothing to say)."""
        return self.uploads.status(node) if node.view == UPLOADS else None

    def statfs(self) -> FsStats:
        stats = self.index.statistics()
        used, instances = int(stats.get("TotalDiskSize", 0)), int(stats.get("CountInstances", 0))
        if not self.policy.uploads or self.policy.read_only:
            return FsStats(used, instances)
        budget = self.uploads.budget
        staging = os.statvfs(self.uploads.files)
        # A disk that counts no inodes (btrfs) reports 0 of 0: there, each staged file
        # takes a block at least.
        files = staging.f_favail if staging.f_files else staging.f_bavail
        # The room is what uploads may still take: the staging disk's, less what stays free for reads.
        return FsStats(used, instances, max(0, budget.free() - budget.reserve), files)

    def close(self) -> None:
        if self.follower is not None:
            self.follower.close()
        self.uploads.close()
        self.content.close()
        self.index.close()


def _child(parent: Node, name: str) -> str:
    return f"{parent.ident}/{name}" if parent.ident else name


def _item_view(node: Node) -> str | None:
    """The view whose folder `node` is, if it lists one entry per resource of a level (early.py)."""
    return node.view if node.role is Role.VIEW and node.view in views.ITEM_VIEWS else None


def _same_sources(old: views.Sources, new: views.Sources) -> bool:
    """Whether a listing computed from `old` holds for `new`.

    Usually the very same objects.  Equal ones count too: a folder first listed from a
    bulk list still loading gets a list of the same item objects once it has loaded
    (comparing them is a pointer check per item, recomputing the names is not).
    """
    return len(old) == len(new) and all(a is b or a == b for a, b in zip(old, new, strict=True))


def _named_if_plain(entry: views.Entry, name: str) -> Node | None:
    """The entry's node named `name`, if that is the name it wants (a listing could number a
    name others share; only it can tell)."""
    wanted, node = entry
    return node.named(name) if wanted.stem + wanted.extension == name else None
