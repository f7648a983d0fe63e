"""The Orthanc views (everything but uploads/) as a read-only wsgidav provider.

Each resource wraps a tree node; names may be mapped to Windows-safe ones, and
the reverse mapping is taken from the parent's listing, never decoded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from cachetools import LRUCache, TTLCache
from wsgidav.dav_error import HTTP_FORBIDDEN, HTTP_NOT_FOUND, DAVError
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider

from ..errors import NotFound, OrthancFSError
from ..tree import Kind, Node, Role, Tree
from .errors import dav_error
from .names import windows_safe
from .quoting import quoted
from .streams import ContentFile

MAPPINGS_KEPT = 4096
LABELS_PROPERTY = "{http://orthancfs.invalid/ns}labels"  # a study's labels, comma-separated
VANISHED_FOR = 60.0  # seconds a folder emptied by this server's deletes still takes DELETEs
HREF_SAFE = "!*'(),$-_|."  # what wsgidav's get_href() leaves unquoted besides "/" (Nautilus wants it so)
CONTENT_TYPES = {Kind.INSTANCE: "application/dicom", Kind.JSON: "application/json", Kind.TEXT: "text/plain"}
READING = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND"})  # nothing changes while they are answered
RESOLVED = "orthancfs.views.resolved"  # environ: path -> resource, for this request


class ViewsProvider(DAVProvider):
    """by-patients/, by-studies/, by-dates/, by-uids/ (and the uploads/ entry of the root listing)."""

    def __init__(self, tree: Tree, windows_names: bool):
        super().__init__()
        self.tree = tree
        self.windows_names = windows_names
        # folder -> (the tree's children dict, its display mapping).  Every request walks its
        # ancestors and PROPFIND asks for each member: the mapping is rebuilt only when the
        # tree hands out a new listing (it memoizes its own on the same terms).
        self._mappings: LRUCache = LRUCache(MAPPINGS_KEPT)
        self._lock = threading.Lock()
        # Folders above what was deleted through here (path -> when).  Orthanc removes a series, its
        # study and its patient with their last instance, so a client deleting a folder file by file
        # (Explorer, cadaver, rclone) finds the rest gone under it: for a while such a folder still
        # shows, empty, to whoever asks for it by path, and DELETEs in it succeed, so the recursive
        # delete completes (Orthanc's WebDAV answers 204 to any DELETE at all).  Listings show what
        # Orthanc has, and anything else below such a folder is 404.
        self._emptied: TTLCache = TTLCache(MAPPINGS_KEPT, VANISHED_FOR)

    def display(self, name: str) -> str:
        return windows_safe(name) if self.windows_names else name

    def listing(self, node: Node, prefetch: bool = True) -> dict[str, tuple[str, Node]]:
        """display name -> (tree name, node); `prefetch` as in Tree.children (False: resolving a path)."""
        try:
            children = self.tree.children(node, prefetch)
        except OrthancFSError as exc:
            raise dav_error(exc) from None
        with self._lock:
            known = self._mappings.get(node.key)
        if known is not None and known[0] is children:
            return known[1]
        mapping = {self.display(name): (name, child) for name, child in children.items()}
        with self._lock:
            self._mappings[node.key] = (children, mapping)
        return mapping

    def get_resource_inst(self, path: str, environ: dict) -> Any:
        """The resource at `path`; resolved once per reading request (the directory browser, our
        PROPFIND and wsgidav's GET each ask for it: resolving took half of a small PROPFIND's time)."""
        if environ.get("REQUEST_METHOD") not in READING:
            return self._resolve(path, environ)
        resolved = environ.setdefault(RESOLVED, {})
        if path not in resolved:
            resolved[path] = self._resolve(path, environ)
        return resolved[path]

    def _resolve(self, path: str, environ: dict) -> Any:
        node, parent, name = self.tree.root, None, ""
        parts = [p for p in path.strip("/").split("/") if p]
        for depth, part in enumerate(parts):
            found = self._child(node, part)
            if found is None:
                return self._vanished(path, environ, "/".join(parts[: depth + 1]))
            parent, (name, node) = node, found
        if environ.get("REQUEST_METHOD") == "PROPPATCH" and node.role is not Role.STUDY:
            raise DAVError(HTTP_FORBIDDEN, "the views are read-only: they keep no properties (a study's labels "
                                           "aside)")
        return make_resource(path, environ, node, parent, name)

    def _child(self, node: Node, part: str) -> tuple[str, Node] | None:
        """(tree name, node) of the entry displayed as `part`, None if there is none."""
        try:  # its answers are names that display as they are (bare UIDs)
            child = self.tree.lookup_without_listing(node, part)
        except NotFound:
            return None
        except OrthancFSError as exc:
            raise dav_error(exc) from None
        return (part, child) if child is not None else self.listing(node, prefetch=False).get(part)

    def deleting(self, path: str) -> None:
        """`path` is about to be deleted: remember the folders above it (see _emptied)."""
        if not self.tree.policy.deletes or self.tree.policy.read_only:
            return
        parts, now = _parts(path), time.time()
        with self._lock:
            for depth in range(2, len(parts)):  # below the view, above the path itself
                self._emptied["/".join(parts[:depth])] = now

    def deleted(self, path: str) -> None:
        with self._lock:
            self._emptied.pop("/".join(_parts(path)), None)

    def _vanished(self, path: str, environ: dict, missing: str) -> Any:
        """What is found at `path`, whose part `missing` is gone, where folders were emptied through
        here: such a folder itself, empty; for a DELETE below one, something to delete."""
        with self._lock:
            since, below = self._emptied.get("/".join(_parts(path))), missing in self._emptied
        if since is not None:
            return EmptiedFolder(path, environ, since)
        return Vanished(path, environ) if below and environ.get("REQUEST_METHOD") == "DELETE" else None


def _parts(path: str) -> list[str]:
    return [p for p in path.strip("/").split("/") if p]


def make_resource(path: str, environ: dict, node: Node, parent: Node | None, name: str) -> Any:
    kind = TreeFolder if node.is_dir else TreeFile
    return kind(path, environ, node, parent, name)


class _TreeResource:
    def __init__(self, path: str, environ: dict, node: Node, parent: Node | None, name: str):
        super().__init__(path, environ)  # type: ignore[call-arg]
        self.node, self.parent, self.tree_name = node, parent, name
        self._ref_url: str | None = None
        self._href: str | None = None

    def get_ref_url(self) -> str:
        # wsgidav asks for it once per property of every member of a PROPFIND, and quoting a
        # path is slow Python: once per resource instead (a fifth of a WebDAV walk's CPU).
        if self._ref_url is None:
            self._ref_url = super().get_ref_url()  # type: ignore[misc]
        return self._ref_url

    def get_href(self) -> str:
        if self._href is None:
            self._href = super().get_href()  # type: ignore[misc]
        return self._href

    def _quoted_below(self, parent: _TreeResource, name: str) -> None:
        """This member's URLs from its folder's, quoting only its own name: quoting the whole
        path of every member took a sixth of a warm walk (parents' spaces defeat quote()'s fast path)."""
        tail = "/" if self.is_collection else ""  # type: ignore[attr-defined]
        self._ref_url = parent.get_ref_url() + quoted(name, "") + tail
        self._href = parent.get_href() + quoted(name, HREF_SAFE) + tail

    def prevent_locking(self) -> bool:
        # A lock on something read-only guards nothing (the root included: a lock there would
        # reach into uploads/ and hold every uploader out; policy.py refuses LOCK here anyway).
        # Without locking, PROPFIND leaves out lockdiscovery and supportedlock: no lock lookup per
        # member, half the XML to write and for the client to parse.
        return True

    def set_property_value(self, name: str, value: Any, dry_run: bool = False) -> None:
        """Only a study's labels (Orthanc 1.12, --allow-labels).  Dead properties here would be kept by
        nobody but this process; refused, as writes are (and propfind.py answers for every property)."""
        if name != LABELS_PROPERTY:
            raise DAVError(HTTP_FORBIDDEN, "the views are read-only: they keep no properties")
        text = value if isinstance(value, str) else getattr(value, "text", None) or ""
        labels = text.split(",") if value is not None else []  # None: PROPPATCH's remove
        tree: Tree = self.provider.tree
        try:
            (tree.check_labels if dry_run else tree.set_labels)(self.node, labels)
        except OrthancFSError as exc:
            raise dav_error(exc) from None

    def labels_property(self) -> str | None:
        """A study's labels, comma-separated (None: not a study, or an Orthanc without labels)."""
        try:
            labels = self.provider.tree.labels(self.node)
        except OrthancFSError as exc:
            raise dav_error(exc) from None
        return None if labels is None else ",".join(labels)

    def get_property_value(self, name: str) -> Any:
        if name == LABELS_PROPERTY:
            value = self.labels_property()
            if value is None:
                raise DAVError(HTTP_NOT_FOUND)
            return value
        return super().get_property_value(name)  # type: ignore[misc]

    def get_display_name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def get_last_modified(self) -> float:
        return self.node.mtime_ns / 1e9

    def get_creation_date(self) -> float:
        return self.node.mtime_ns / 1e9

    def handle_delete(self) -> bool:
        """DELETE of an instance, series, study or patient: one call to Orthanc (deletes must be on;
        policy.py has checked the role)."""
        if self.parent is None:
            raise DAVError(HTTP_FORBIDDEN)
        self.provider.deleting(self.path)  # before: a concurrent DELETE below may find the folder gone at once
        tree: Tree = self.provider.tree
        try:
            (tree.rmdir if self.node.is_dir else tree.unlink)(self.parent, self.tree_name)
        except OrthancFSError as exc:
            raise dav_error(exc) from None
        return True

    def handle_copy(self, dest_path: str, *, depth_infinity: bool) -> bool:
        raise DAVError(HTTP_FORBIDDEN, "the views are read-only; copy into uploads/ from a client")

    def handle_move(self, dest_path: str) -> bool:
        raise DAVError(HTTP_FORBIDDEN, "the views are Orthanc's; names cannot be changed")


class TreeFolder(_TreeResource, DAVCollection):
    def get_member_names(self) -> list[str]:
        return list(self.provider.listing(self.node))

    def get_member_list(self) -> list[Any]:
        """Every member from one listing: wsgidav's default asks for the listing again per name."""
        return list(self.iter_members())

    def iter_members(self) -> Iterator[Any]:
        """The members one by one (propfind.py writes each as it comes: 100,000s in a big folder)."""
        base = self.path.rstrip("/")
        for name, (tree_name, child) in self.provider.listing(self.node).items():
            member = make_resource(f"{base}/{name}", self.environ, child, self.node, tree_name)
            member._quoted_below(self, name)
            yield member

    def listed(self) -> Iterator[tuple[str, str, Node]]:
        """(href, display name, node) of each member, without making its resource: what propfind.py
        writes for an allprop, at a third of the cost (most of a walk's members are written so)."""
        base = self.get_href()
        for name, (_, child) in self.provider.listing(self.node).items():
            yield base + quoted(name, HREF_SAFE) + ("/" if child.is_dir else ""), name, child

    def get_member(self, name: str) -> Any:
        found = self.provider.listing(self.node).get(name)
        if found is None:
            return None
        tree_name, child = found
        return make_resource(self.path.rstrip("/") + "/" + name, self.environ, child, self.node, tree_name)

    def create_empty_resource(self, name: str) -> Any:
        raise DAVError(HTTP_FORBIDDEN, "only uploads/ accepts new files")

    def create_collection(self, name: str) -> Any:
        raise DAVError(HTTP_FORBIDDEN, "only uploads/ accepts new folders")

    def delete(self) -> None:
        self.handle_delete()


class TreeFile(_TreeResource, DAVNonCollection):
    def get_content_length(self) -> int:
        return content_length(self.provider.tree, self.node)

    def get_content_type(self) -> str:
        return content_type(self.node)

    def get_etag(self) -> str | None:
        return etag(self.node)

    def support_etag(self) -> bool:
        return self.node.kind is Kind.INSTANCE

    def support_ranges(self) -> bool:
        return True

    def get_content(self) -> ContentFile:
        try:
            return ContentFile(self.provider.tree.open(self.node), self.get_content_length())
        except OrthancFSError as exc:
            raise dav_error(exc) from None

    def begin_write(self, *, content_type: str | None = None) -> Any:
        raise DAVError(HTTP_FORBIDDEN, "the views are read-only")

    def delete(self) -> None:
        self.handle_delete()



def content_length(tree: Tree, node: Node) -> int:
    if node.size_is_exact:
        return node.size
    content = tree.open(node)  # a document: its exact size is its length
    try:
        return len(content.read(0, 1 << 30))
    finally:
        content.close()


def content_type(node: Node) -> str:
    return CONTENT_TYPES.get(node.kind, "application/octet-stream")


def etag(node: Node) -> str | None:
    # An instance's content changes only with its attachment (sent again under the same UIDs).
    return f"{node.ident}-{node.version or node.size}" if node.kind is Kind.INSTANCE else None


class EmptiedFolder(DAVCollection):
    """A folder Orthanc removed with the last instance deleted below it through here: empty, for
    the client that emptied it to delete it next (Explorer and cadaver look before they delete)."""

    def __init__(self, path: str, environ: dict, since: float):
        super().__init__(path, environ)
        self._since = since

    def get_member_names(self) -> list[str]:
        return []

    def iter_members(self) -> Iterator[Any]:
        return iter(())

    def get_display_name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def get_creation_date(self) -> float:
        return self._since

    def get_last_modified(self) -> float:
        return self._since

    def get_etag(self) -> str | None:
        return None

    def prevent_locking(self) -> bool:
        return True

    def create_empty_resource(self, name: str) -> Any:
        raise DAVError(HTTP_FORBIDDEN, "only uploads/ accepts new files")

    def create_collection(self, name: str) -> Any:
        raise DAVError(HTTP_FORBIDDEN, "only uploads/ accepts new folders")

    def handle_copy(self, dest_path: str, *, depth_infinity: bool) -> bool:
        raise DAVError(HTTP_FORBIDDEN, "the views are read-only; copy into uploads/ from a client")

    def handle_move(self, dest_path: str) -> bool:
        raise DAVError(HTTP_FORBIDDEN, "the views are Orthanc's; names cannot be changed")

    def handle_delete(self) -> bool:
        self.provider.deleted(self.path)  # gone for good now
        return True


class Vanished(DAVNonCollection):
    """Something in a folder that Orthanc removed with the last instance deleted through here."""

    def get_content_length(self) -> int:
        return 0

    def get_content_type(self) -> str:
        return "application/octet-stream"

    def get_content(self) -> ContentFile:
        raise DAVError(HTTP_NOT_FOUND)

    def get_etag(self) -> str | None:
        return None

    def support_etag(self) -> bool:
        return False

    def handle_delete(self) -> bool:
        return True  # gone already, which is what DELETE wanted
