"""uploads/ over WebDAV: a wsgidav provider over the tree's upload folder.

The same state machine as the mount (tree/uploads.py): a PUT is one writer, its body
written into a private staging copy and sent when complete (end_write), exactly as a
close() through the mount.  Stored files leave the folder (readable for a minute by
their path, as receipts); refused ones stay with their reason (ORTHANCFS-REPORT.txt and
the `orthancfs:status` property) and the PUT answers with the error.  A body that could
not be written whole (the disk full, the client gone) is never sent.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable
from typing import Any

from wsgidav import util
from wsgidav.dav_error import HTTP_BAD_REQUEST, HTTP_FORBIDDEN, DAVError
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider

from ..errors import NotFound, OrthancFSError
from ..tree import Node, Role, Tree
from .errors import dav_error
from .streams import ContentFile

log = logging.getLogger(__name__)

STATUS_PROPERTY = "{http://orthancfs.invalid/ns}status"
READING = ("GET", "HEAD", "PROPFIND", "OPTIONS")
UPLOADS = "uploads"


class UploadsProvider(DAVProvider):
    """uploads/ as a WebDAV folder (litmus: every basic, copymove, props, locks and http test)."""

    def __init__(self, tree: Tree):
        super().__init__()
        self.tree = tree

    def is_readonly(self) -> bool:
        """False even under --read-only or --no-upload: for a read-only provider wsgidav
        answers every write 405 before the tree is asked (no Allow header, and a MKCOL's
        405 says the folder exists); the tree refuses it with its reason, as a 403."""
        return False

    def get_resource_inst(self, path: str, environ: dict) -> Any:
        rel = path.strip("/")
        try:
            node = self.tree.resolve(f"{UPLOADS}/{rel}")
        except NotFound:
            receipt = self.tree.receipt(rel) if rel and environ.get("REQUEST_METHOD") in READING else None
            return UploadFile(path, environ, receipt) if receipt else None
        except OrthancFSError as exc:
            raise dav_error(exc) from None
        return make_resource(path, environ, node)

    def parent_and_name(self, path: str) -> tuple[Node, str]:
        """The folder node a path is in, and its last name (for changes made by name)."""
        parent, _, name = path.strip("/").rpartition("/")
        return self._node(parent), name

    def _node(self, rel: str) -> Node:
        return _model(lambda: self.tree.resolve(f"{UPLOADS}/{rel}".rstrip("/")))


def make_resource(path: str, environ: dict, node: Node) -> Any:
    if node.is_dir:
        return UploadFolder(path, environ, node)
    if node.role is Role.REPORT:
        return Report(path, environ, node)
    return UploadFile(path, environ, node)


def _model(call: Any) -> Any:
    """Call the tree, with its errors as the HTTP answers they mean."""
    try:
        return call()
    except OrthancFSError as exc:
        raise dav_error(exc) from None


class _Resource:
    """What files and folders of uploads/ share: a tree node, its times and name, its reason."""

    def __init__(self, path: str, environ: dict, node: Node):
        super().__init__(path, environ)  # type: ignore[call-arg]
        self.node = node

    @property
    def tree(self) -> Tree:
        return self.provider.tree  # type: ignore[attr-defined]

    def get_display_name(self) -> str:
        return self.node.name or UPLOADS

    def get_creation_date(self) -> float:
        return self.node.mtime_ns / 1e9

    def get_last_modified(self) -> float:
        return self.node.mtime_ns / 1e9

    def get_property_names(self, *, is_allprop: bool) -> list[str]:
        names = super().get_property_names(is_allprop=is_allprop)  # type: ignore[misc]
        return [*names, STATUS_PROPERTY] if self.tree.status(self.node) else names

    def get_property_value(self, name: str) -> Any:
        if name == STATUS_PROPERTY:
            status = self.tree.status(self.node)
            if status is None:
                raise DAVError(404)
            return status
        if name == "{DAV:}getetag" and self.get_etag() is not None:  # type: ignore[attr-defined]
            return f'"{self.get_etag()}"'  # type: ignore[attr-defined]  # an entity-tag, quotes included (RFC 4918)
        return super().get_property_value(name)  # type: ignore[misc]

    def _parent_and_name(self) -> tuple[Node, str]:
        return self.provider.parent_and_name(self.path)  # type: ignore[attr-defined]

    def _forget_properties(self) -> None:
        self.remove_all_properties(recursive=True)  # type: ignore[attr-defined]
        self.remove_all_locks(recursive=True)  # type: ignore[attr-defined]

    def _follow_properties(self, dest_path: str, is_move: bool, with_children: bool) -> None:
        """Dead properties go (or are copied) with a resource, as wsgidav's file system provider does."""
        manager = self.provider.prop_manager  # type: ignore[attr-defined]
        if not manager:
            return
        destination = self.provider.get_resource_inst(dest_path, self.environ)  # type: ignore[attr-defined]
        if destination is None:
            return
        source_url, target_url = self.get_ref_url(), destination.get_ref_url()  # type: ignore[attr-defined]
        if is_move:
            manager.move_properties(source_url, target_url, with_children=with_children, environ=self.environ)
        else:
            manager.copy_properties(source_url, target_url, self.environ)  # type: ignore[attr-defined]

    def _renamed(self, dest_path: str, replace: bool) -> None:
        old_parent, old_name = self._parent_and_name()
        new_parent, new_name = self.provider.parent_and_name(dest_path)  # type: ignore[attr-defined]
        _model(lambda: self.tree.rename(old_parent, old_name, new_parent, new_name, replace))

    def support_recursive_move(self, dest_path: str) -> bool:
        return True

    def move_recursive(self, dest_path: str) -> None:
        self._renamed(dest_path, replace=False)  # wsgidav removed what was there (Overwrite: T)
        self._follow_properties(dest_path, is_move=True, with_children=True)


class UploadFolder(_Resource, DAVCollection):
    def get_etag(self) -> None:
        return None

    def get_member_names(self) -> list[str]:
        return list(_model(lambda: self.tree.children(self.node)))

    def get_member(self, name: str) -> Any:
        return self.provider.get_resource_inst(util.join_uri(self.path, name), self.environ)

    def create_empty_resource(self, name: str) -> Any:
        """A new file: for a PUT, the writer its body goes to; otherwise (LOCK of an unmapped URL)
        an empty file, closed at once."""
        node, handle = _model(lambda: self.tree.create(self.node, name))
        resource = UploadFile(util.join_uri(self.path, name), self.environ, node)
        if self.environ.get("REQUEST_METHOD") == "PUT":
            resource.handle = handle
        else:
            resource.finish(handle)
        return resource

    def create_collection(self, name: str) -> None:
        _model(lambda: self.tree.mkdir(self.node, name))

    def delete(self) -> None:
        """The folder and everything in it (wsgidav also deletes the destination of a MOVE this way)."""
        parent, name = self._parent_and_name()
        if not name:
            raise DAVError(HTTP_FORBIDDEN, "uploads/ itself cannot be removed")
        for member_name, member in _model(lambda: self.tree.children(self.node)).items():
            make_resource(util.join_uri(self.path, member_name), self.environ, member).delete()
        _model(lambda: self.tree.rmdir(parent, name))
        self._forget_properties()

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        """The folder itself (wsgidav copies the members one by one)."""
        if self.provider.get_resource_inst(dest_path, self.environ) is None:
            parent, name = self.provider.parent_and_name(dest_path)
            _model(lambda: self.tree.mkdir(parent, name))
        self._follow_properties(dest_path, is_move, with_children=False)


class UploadFile(_Resource, DAVNonCollection):
    def __init__(self, path: str, environ: dict, node: Node):
        super().__init__(path, environ, node)
        self.handle: Any = None  # the writer of a PUT, from create_empty_resource or begin_write
        self._body: PutBody | None = None

    def get_content_length(self) -> int:
        return self.node.size

    def get_content_type(self) -> str:
        return util.guess_mime_type(self.path, self.environ["wsgidav.config"])

    def get_etag(self) -> str:
        return f"{self.node.mtime_ns:x}-{self.node.size:x}"

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def get_content(self) -> ContentFile:
        return ContentFile(_model(lambda: self.tree.open(self.node)), self.node.size)

    def begin_write(self, *, content_type: str | None = None) -> PutBody:
        if self.node.role is Role.RECEIPT:
            raise DAVError(HTTP_FORBIDDEN, "Orthanc has this file: it can be read back, not written")
        if self.handle is None:
            self.handle = _model(lambda: self.tree.open(self.node, writable=True, truncate=True))
        self._body = PutBody(self.handle, _declared_length(self.environ))
        return self._body

    def end_write(self, *, with_errors: bool) -> None:
        """The body is complete (or not): send it, and answer the PUT with what became of it."""
        handle, body, self.handle = self.handle, self._body, None
        if handle is None or body is None:
            return
        incomplete = body.incomplete or ("wsgidav could not copy it" if with_errors else None)
        if incomplete:
            handle.abandon(f"the request body was not received whole ({incomplete})")
        try:
            self.finish(handle, keep_receipt=True)
        except DAVError:
            if not incomplete and not with_errors:  # (with errors, wsgidav answers itself)
                raise
        if body.read_error is not None and not with_errors:
            raise body.read_error  # a client that stopped sending: the error pages answer 408 and close
        if incomplete and not with_errors:
            raise DAVError(HTTP_BAD_REQUEST, "the request body was not received whole")

    def finish(self, handle: Any, keep_receipt: bool = False) -> None:
        """Close a writer: send its file; the resource then describes what is left (or the receipt)."""
        try:
            closing = _model(lambda: handle.closing(keep_receipt=keep_receipt))
            if closing is not None:
                _model(closing.send)
        finally:
            handle.close()
            self._refresh()

    def _refresh(self) -> None:
        rel = self.path.strip("/")
        try:
            self.node = self.tree.refresh(self.node)
        except OrthancFSError:
            self.node = self.tree.receipt(rel) or self.node

    def delete(self) -> None:
        parent, name = self._parent_and_name()
        _model(lambda: self.tree.unlink(parent, name))
        self._forget_properties()

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        if is_move:
            self._renamed(dest_path, replace=True)
        else:
            parent, name = self.provider.parent_and_name(dest_path)
            _model(lambda: self.tree.copy(self.node, parent, name))
        self._follow_properties(dest_path, is_move, with_children=False)


class PutBody:
    """Where wsgidav writes a PUT's body: the upload's writer.

    Failures are remembered, not raised: a raised error would make wsgidav log a traceback and
    leave the rest of the body unread.  After a failed write the body is still read (and dropped),
    so the connection stays usable, and end_write() answers with the failure.
    """

    def __init__(self, handle: Any, expected: int | None):
        self.handle = handle
        self.expected = expected  # Content-Length, if the client gave one
        self.offset = 0
        self.failure: OrthancFSError | None = None
        self.incomplete: str | None = None  # why the body could not be read to its end
        self.read_error: Exception | None = None  # what reading it raised (a timeout, a lost client)

    def writelines(self, chunks: Iterable[bytes]) -> None:
        iterator = iter(chunks)
        while True:
            try:
                chunk = next(iterator)
            except StopIteration:  # the end of what came: a client that went away ends a body early too
                if self.expected is not None and self.offset != self.expected:
                    self.incomplete = f"{self.offset} of its {self.expected} bytes arrived"
                return
            except Exception as exc:  # noqa: BLE001 - the client went away, timed out, or sent a bad body
                self.incomplete, self.read_error = str(exc) or type(exc).__name__, exc
                return
            self._write(chunk)

    def _write(self, chunk: bytes) -> None:
        if self.failure is None:
            try:
                self.handle.write(self.offset, chunk)
            except OrthancFSError as exc:
                self.failure = exc
        self.offset += len(chunk)

    def write(self, chunk: bytes) -> None:
        self._write(chunk)

    def close(self) -> None:
        pass


def _declared_length(environ: dict) -> int | None:
    text = environ.get("CONTENT_LENGTH", "").strip()
    return int(text) if text.isdigit() else None


class Report(_Resource, DAVNonCollection):
    """ORTHANCFS-REPORT.txt: every kept upload and why, with every live property a file has."""

    def __init__(self, path: str, environ: dict, node: Node):
        super().__init__(path, environ, node)
        content = _model(lambda: self.tree.open(node))
        try:
            self._data = content.read(0, 1 << 30)
        finally:
            content.close()

    def get_content_length(self) -> int:
        return len(self._data)

    def get_content_type(self) -> str:
        return "text/plain; charset=utf-8"

    def get_content(self) -> io.BytesIO:
        return io.BytesIO(self._data)

    def get_etag(self) -> str:
        return hashlib.md5(self._data, usedforsecurity=False).hexdigest()

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def begin_write(self, *, content_type: str | None = None) -> Any:
        raise DAVError(HTTP_FORBIDDEN, "ORTHANCFS-REPORT.txt is written by orthancfs")

    def delete(self) -> None:
        parent, name = self._parent_and_name()
        _model(lambda: self.tree.unlink(parent, name))

