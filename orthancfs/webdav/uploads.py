"""uploads/ over WebDAV: wsgidav's filesystem provider on the staging folder, plus ingestion.

A PUT is ingested when its body is complete (end_write), exactly as a close()
through the mount: stored files leave the folder, refused ones stay with their
reason (in ORTHANCFS-REPORT.txt and the `orthancfs:status` property) and the
PUT answers with the error.
"""

from __future__ import annotations

import io
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from wsgidav.dav_error import HTTP_FORBIDDEN, DAVError
from wsgidav.dav_provider import DAVNonCollection
from wsgidav.fs_dav_provider import FileResource, FilesystemProvider, FolderResource

from ..errors import OrthancFSError
from ..tree import Tree
from ..tree.uploads import REPORT_NAME
from .access import require
from .errors import dav_error

STATUS_PROPERTY = "{http://orthancfs.invalid/ns}status"
RECEIPT_SECONDS = 60.0
READING = ("GET", "HEAD", "PROPFIND", "OPTIONS")


class Receipts:
    """Files stored by a PUT, still readable by their exact path for a minute (never listed).

    Clients such as rclone read an object back right after uploading it; the file
    has already left uploads/ (Orthanc has it), so without this they report it lost.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.directory.mkdir(mode=0o700, exist_ok=True)
        for stale in self.directory.iterdir():
            stale.unlink()
        self._items: dict[str, tuple[float, Path]] = {}
        self._lock = threading.Lock()

    def hold(self, file_path: str) -> Path:
        link = self.directory / uuid.uuid4().hex
        os.link(file_path, link)
        return link

    def confirm(self, path: str, link: Path) -> None:
        with self._lock:
            self._items[path.rstrip("/")] = (time.monotonic() + RECEIPT_SECONDS, link)

    def get(self, path: str) -> Path | None:
        now = time.monotonic()
        with self._lock:
            expired = [key for key, (until, _) in self._items.items() if until < now]
            links = [self._items.pop(key)[1] for key in expired]
            found = self._items.get(path.rstrip("/"))
        for link in links:
            link.unlink(missing_ok=True)
        return found[1] if found else None

    def forget(self, path: str) -> None:
        with self._lock:
            found = self._items.pop(path.rstrip("/"), None)
        if found:
            found[1].unlink(missing_ok=True)


class UploadsProvider(FilesystemProvider):
    def __init__(self, tree: Tree):
        policy = tree.policy
        super().__init__(str(tree.uploads.files), readonly=policy.read_only or not policy.uploads, fs_opts={})
        self.tree = tree
        self.receipts = Receipts(tree.uploads.files.parent / "webdav-receipts")

    def rel(self, file_path: str) -> str:
        return os.path.relpath(file_path, self.root_folder_path).replace(os.sep, "/")

    def moved(self, source_file: str, dest_path: str, copied: bool) -> None:
        """After wsgidav moved or copied something: the model follows (reasons, temporary names)."""
        self.tree.uploads.moved(self.rel(source_file), self.rel(self._loc_to_file_path(dest_path)), copied)

    def get_resource_inst(self, path: str, environ: dict) -> Any:
        if path.strip("/") == REPORT_NAME and self.tree.uploads.ledger.has_records():
            return Report(path, environ, self.tree)
        file_path = self._loc_to_file_path(path, environ)
        if not os.path.exists(file_path):
            receipt = self.receipts.get(path) if environ.get("REQUEST_METHOD") in READING else None
            return Receipt(path, environ, str(receipt)) if receipt else None
        self.receipts.forget(path)
        return (UploadFolder if os.path.isdir(file_path) else UploadFile)(path, environ, file_path)


class UploadFolder(FolderResource):
    def get_member_names(self) -> list[str]:
        names = super().get_member_names()
        if self.path.strip("/") == "" and self.provider.tree.uploads.ledger.has_records():
            names.append(REPORT_NAME)
        return names

    def get_member(self, name: str) -> Any:
        return self.provider.get_resource_inst(self.path.rstrip("/") + "/" + name, self.environ)

    def create_empty_resource(self, name: str) -> Any:
        require(self.environ, "upload")
        if self.path.strip("/") == "" and name == REPORT_NAME:
            raise DAVError(HTTP_FORBIDDEN, f"{REPORT_NAME} is reserved for the report")
        return super().create_empty_resource(name)

    def create_collection(self, name: str) -> Any:
        require(self.environ, "upload")
        return super().create_collection(name)

    def delete(self) -> None:
        require(self.environ, "upload")
        self.provider.tree.uploads.ledger.forget(self.provider.rel(self._file_path))
        super().delete()

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        require(self.environ, "upload")
        super().copy_move_single(dest_path, is_move=is_move)

    def move_recursive(self, dest_path: str) -> None:
        require(self.environ, "upload")
        super().move_recursive(dest_path)
        self.provider.moved(self._file_path, dest_path, copied=False)


class UploadFile(FileResource):
    def get_etag(self) -> str | None:
        return super().get_etag() if os.path.exists(self._file_path) else None  # gone: ingested

    def begin_write(self, *, content_type: str | None = None) -> Any:
        require(self.environ, "upload")
        return super().begin_write(content_type=content_type)

    def end_write(self, *, with_errors: bool) -> None:
        """The body is complete: send it to Orthanc, and answer the PUT with what happened."""
        if with_errors:
            return
        receipts = self.provider.receipts
        link = receipts.hold(self._file_path)
        try:
            stored = self.provider.tree.uploads.finish(self.provider.rel(self._file_path))
        except OrthancFSError as exc:
            link.unlink(missing_ok=True)
            raise dav_error(exc) from None
        if stored:
            receipts.confirm(self.path, link)
        else:
            link.unlink(missing_ok=True)

    def delete(self) -> None:
        require(self.environ, "upload")
        super().delete()
        self.provider.tree.uploads.ledger.forget(self.provider.rel(self._file_path))

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        require(self.environ, "upload")
        super().copy_move_single(dest_path, is_move=is_move)
        self.provider.moved(self._file_path, dest_path, copied=not is_move)

    def move_recursive(self, dest_path: str) -> None:
        require(self.environ, "upload")
        super().move_recursive(dest_path)
        self.provider.moved(self._file_path, dest_path, copied=False)

    def get_property_names(self, *, is_allprop: bool) -> list[str]:
        names = super().get_property_names(is_allprop=is_allprop)
        return [*names, STATUS_PROPERTY] if self._status() else names

    def get_property_value(self, name: str) -> Any:
        if name == STATUS_PROPERTY:
            return self._status()
        return super().get_property_value(name)

    def _status(self) -> str | None:
        record = self.provider.tree.uploads.ledger.get(self.provider.rel(self._file_path))
        return record["reason"] if record else None


class Receipt(FileResource):
    """A file Orthanc took a moment ago: readable, never listed, not writable."""

    def begin_write(self, *, content_type: str | None = None) -> Any:
        raise DAVError(HTTP_FORBIDDEN)

    def delete(self) -> None:
        self.provider.receipts.forget(self.path)


class Report(DAVNonCollection):
    """ORTHANCFS-REPORT.txt: every kept upload and why."""

    def __init__(self, path: str, environ: dict, tree: Tree):
        super().__init__(path, environ)
        self._data = tree.uploads.report()

    def get_content_length(self) -> int:
        return len(self._data)

    def get_content_type(self) -> str:
        return "text/plain; charset=utf-8"

    def get_content(self) -> Any:
        return io.BytesIO(self._data)

    def get_etag(self) -> None:
        return None

    def support_etag(self) -> bool:
        return False

    def support_ranges(self) -> bool:
        return True

    def delete(self) -> None:
        raise DAVError(HTTP_FORBIDDEN, "the report goes away with the files it describes")
