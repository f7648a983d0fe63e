"""uploads/: a real folder on local disk whose files are sent to Orthanc when closed.

Files live in a private staging directory (under the cache directory) while
they are written, so nothing is held in RAM and a file Orthanc did not take
survives a remount.  A file that Orthanc stores leaves the folder; any other
keeps its place, with the reason in the ledger (shown as an extended attribute
and in ORTHANCFS-REPORT.txt).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import AlreadyExists, InvalidName, NotADirectory, NotEmpty, NotFound, OrthancFSError
from .ingest import Ingester, Outcome
from .ledger import Ledger
from .nodes import Kind, Node, Role

log = logging.getLogger(__name__)

UPLOADS = "uploads"
REPORT_NAME = "ORTHANCFS-REPORT.txt"
STATUS_XATTR = "user.orthancfs.status"
TEMPORARY_SUFFIXES = ("~", ".part", ".partial", ".tmp", ".crdownload")
EMPTY_FOLDER_GRACE = 2.0  # seconds a folder emptied by ingestion stays, so a running `cp -r` can go on


def is_temporary(name: str) -> bool:
    """Names that editors and file managers write before renaming (`.goutputstream-X`, `x.part`)."""
    return name.startswith(".") or name.endswith(TEMPORARY_SUFFIXES)


def upload_root() -> Node:
    return Node((UPLOADS, Role.UPLOADS, ""), Kind.DIRECTORY)


class UploadHandle:
    """One open file of uploads/: reads and writes go straight to the staging file."""

    def __init__(self, area: UploadArea, rel: str, fd: int, writable: bool, changed: bool = False):
        self.area, self.rel, self.fd, self.writable = area, rel, fd, writable
        # Only a handle that created, wrote or truncated the file sends it at close:
        # `touch` opens for writing too, and must not send a file twice.
        self.changed = changed

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def write(self, offset: int, data: bytes) -> int:
        self.changed = True
        return os.pwrite(self.fd, data, offset)

    def flush(self) -> bool:
        """Send the file to Orthanc if this handle changed it; True if it left uploads/."""
        if not self.changed:
            return False
        self.changed = False
        return self.area.finish(self.rel)

    async def flush_from_loop(self) -> bool | None:
        """flush() for a trio loop (see UploadArea.finish_from_loop); None: call flush() in a thread."""
        if not self.changed:
            return False
        self.changed = False
        left = await self.area.finish_from_loop(self.rel)
        if left is None:
            self.changed = True  # nothing was sent: flush() sends it
        return left

    def close(self) -> None:
        os.close(self.fd)


class UploadArea:
    """The uploads/ folder: local files, sent to Orthanc when the writer closes them."""

    def __init__(self, state_dir: Path, ingester: Ingester, on_stored: Callable[[], None]):
        self.files = state_dir / "files"
        self.files.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._files_prefix = f"{self.files}{os.sep}"
        self.ledger = Ledger(state_dir / "ledger.json")
        self.ingester = ingester
        self.on_stored = on_stored
        self._emptied: set[str] = set()  # folders that ingestion emptied: removed once idle
        # Told of each folder the sweep removes, so a frontend that lets its clients cache
        # folders (FUSE) can take the stale name back.
        self.on_removed: Callable[[str], None] = lambda rel: None
        self._lock = threading.Lock()
        self._adopt_leftovers()

    def close(self) -> None:
        self.ledger.close()
        self.ingester.close()

    # --- paths and nodes ------------------------------------------------------

    def local(self, rel: str) -> str:
        """The staging path of `rel`: a plain string, since pathlib cost a tenth of the
        time orthancfs spends on each uploaded file besides sending it."""
        return self._files_prefix + rel if rel else str(self.files)

    def node(self, rel: str) -> Node:
        """The node for `rel`, from the staging file's current attributes."""
        if not rel:
            return upload_root()
        try:
            info = os.lstat(self.local(rel))
        except FileNotFoundError:
            raise NotFound(f"uploads/{rel}") from None
        name, mode = rel.rsplit("/", 1)[-1], stat.S_IMODE(info.st_mode)
        if stat.S_ISDIR(info.st_mode):
            return Node((UPLOADS, Role.UPLOAD_DIR, rel), Kind.DIRECTORY, name, mtime_ns=info.st_mtime_ns, mode=mode)
        return Node((UPLOADS, Role.UPLOAD_FILE, rel), Kind.UPLOAD, name, info.st_size, info.st_mtime_ns, mode)

    def report_node(self) -> Node:
        return Node((UPLOADS, Role.REPORT, ""), Kind.TEXT, REPORT_NAME, len(self.report()), time.time_ns())

    def children(self, parent: Node) -> dict[str, Node]:
        self._sweep_emptied()
        rel = parent.ident
        try:
            names = sorted(os.listdir(self.local(rel)))
        except FileNotFoundError:
            raise NotFound(f"uploads/{rel}") from None
        children = {}
        for name in names:
            try:
                children[name] = self.node(_join(rel, name))
            except NotFound:  # consumed while we listed
                continue
        if not rel and self.ledger.has_records():
            children[REPORT_NAME] = self.report_node()
        return dict(sorted(children.items()))

    def lookup(self, parent: Node, name: str) -> Node:
        if not parent.ident and name == REPORT_NAME and self.ledger.has_records():
            return self.report_node()
        return self.node(_join(parent.ident, name))

    # --- changes ----------------------------------------------------------------

    def create(self, parent: Node, name: str, mode: int = 0o644) -> tuple[Node, UploadHandle]:
        rel = self._new_name(parent, name)
        try:  # the owner keeps read and write: the file is ours to send and to keep
            fd = os.open(self.local(rel), os.O_RDWR | os.O_CREAT | os.O_EXCL, stat.S_IMODE(mode) | 0o600)
        except FileExistsError:
            raise AlreadyExists(f"uploads/{rel}") from None
        self.ledger.forget(rel, below=False)
        return self.node(rel), UploadHandle(self, rel, fd, writable=True, changed=True)

    def open(self, node: Node, writable: bool, truncate: bool) -> UploadHandle:
        flags = (os.O_RDWR if writable else os.O_RDONLY) | (os.O_TRUNC if truncate and writable else 0)
        try:
            fd = os.open(self.local(node.ident), flags)
        except FileNotFoundError:
            raise NotFound(f"uploads/{node.ident}") from None
        return UploadHandle(self, node.ident, fd, writable, changed=truncate and writable)

    def mkdir(self, parent: Node, name: str, mode: int = 0o755) -> Node:
        rel = self._new_name(parent, name)
        try:
            os.mkdir(self.local(rel), stat.S_IMODE(mode) | 0o700)
        except FileExistsError:
            raise AlreadyExists(f"uploads/{rel}") from None
        return self.node(rel)

    def unlink(self, parent: Node, name: str) -> None:
        rel = _join(parent.ident, name)
        if not parent.ident and name == REPORT_NAME:
            raise InvalidName("the report goes away with the files it describes")
        _local_call(os.unlink, self.local(rel), rel)
        self.ledger.forget(rel, below=False)

    def rmdir(self, parent: Node, name: str) -> None:
        rel = _join(parent.ident, name)
        _local_call(os.rmdir, self.local(rel), rel)
        self.ledger.forget(rel)

    def rename(self, old_parent: Node, old_name: str, new_parent: Node, new_name: str, replace: bool) -> None:
        old, new = _join(old_parent.ident, old_name), self._new_name(new_parent, new_name)
        if not replace and os.path.lexists(self.local(new)):
            raise AlreadyExists(f"uploads/{new}")
        _local_call(os.rename, self.local(old), old, self.local(new))
        self.moved(old, new)

    def moved(self, old: str, new: str, copied: bool = False) -> None:
        """Follow a file or folder that moved (or, `copied`, was copied) from `old` to `new` in uploads/.

        Reasons follow the file.  A file renamed from a temporary name to a final one is the
        usual end of "write a temporary file, then rename it": it is sent now.  A refusal is
        recorded with the file; a rename cannot report it any better.
        """
        self.ledger.forget(new)
        if not copied:
            self.ledger.move(old, new)
        final = not is_temporary(new.rsplit("/", 1)[-1])
        if is_temporary(old.rsplit("/", 1)[-1]) and final and os.path.isfile(self.local(new)):
            with contextlib.suppress(OrthancFSError):
                self.finish(new)

    def truncate(self, node: Node, size: int) -> None:
        _local_call(os.truncate, self.local(node.ident), node.ident, size)

    def set_times(self, node: Node, atime_ns: int | None, mtime_ns: int | None) -> bool:
        """utime; on a kept file this is also `touch` to retry: True if the file then left uploads/."""
        current = self.node(node.ident)
        times = (atime_ns if atime_ns is not None else current.mtime_ns,
                 mtime_ns if mtime_ns is not None else current.mtime_ns)
        _local_call(os.utime, self.local(node.ident), node.ident, ns=times)
        if node.kind is Kind.UPLOAD and self.ledger.get(node.ident) is not None:
            return self.finish(node.ident)  # say how the retry went
        return False

    def set_mode(self, node: Node, mode: int) -> None:
        _local_call(os.chmod, self.local(node.ident), node.ident, stat.S_IMODE(mode) | stat.S_IRUSR | stat.S_IWUSR)

    # --- ingestion ----------------------------------------------------------------

    def finish(self, rel: str) -> bool:
        """Send `rel` to Orthanc; True if it left uploads/.  Raises what the writer should see."""
        path = self._sendable(rel)
        if isinstance(path, bool):
            return path
        return self._settle(rel, self.ingester.ingest(path))

    async def finish_from_loop(self, rel: str) -> bool | None:
        """finish() for a trio loop: a plain DICOM file is sent from the loop (every other step is
        local); None for what finish() must do in a thread (archives, big files)."""
        path = self._sendable(rel)
        if isinstance(path, bool):
            return path
        outcome = await self.ingester.ingest_from_loop(path)
        return None if outcome is None else self._settle(rel, outcome)

    def _sendable(self, rel: str) -> str | bool:
        """The file to send, or finish()'s answer at once."""
        path = self.local(rel)
        if not os.path.isfile(path):
            return True  # already taken (another close of the same file)
        if is_temporary(rel.rsplit("/", 1)[-1]):
            return False
        return path

    def _settle(self, rel: str, outcome: Outcome) -> bool:
        self.on_stored()  # even a partly refused archive may have stored something
        if outcome.consumed:
            return self._consumed(rel, outcome)
        self.ledger.record(rel, outcome.reason, outcome.entries)
        (log.warning if outcome.error else log.info)("uploads/%s kept: %s", rel, outcome.reason)
        if outcome.error is not None:
            raise outcome.error
        return False

    def _consumed(self, rel: str, outcome: Outcome) -> bool:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.local(rel))
        self.ledger.forget(rel, below=False)
        log.info("uploads/%s: %s", rel, outcome.reason)
        if "/" in rel:
            with self._lock:
                self._emptied.add(rel.rsplit("/", 1)[0])
        return True

    def _sweep_emptied(self) -> None:
        """Remove folders that ingestion emptied, once nobody has touched them for a moment.

        The moment matters: `cp -r` creates the next file in a folder right after
        the previous one was taken.
        """
        with self._lock:
            candidates, self._emptied = self._emptied, set()
        later = set()
        for rel in candidates:
            path = self.local(rel)
            try:
                if os.listdir(path):
                    continue  # in use again
                if time.time() - os.stat(path).st_mtime < EMPTY_FOLDER_GRACE:
                    later.add(rel)
                    continue
                self._remove_empty_chain(rel)
            except OSError:
                continue
        with self._lock:
            self._emptied |= later

    def _remove_empty_chain(self, rel: str) -> None:
        """rmdir `rel`, then each parent that this leaves empty (never uploads/ itself)."""
        while rel:
            try:
                os.rmdir(self.local(rel))
            except OSError:
                return
            self.ledger.forget(rel)
            self.on_removed(rel)
            rel = rel.rsplit("/", 1)[0] if "/" in rel else ""

    # --- reasons ------------------------------------------------------------------------

    def status(self, node: Node) -> str | None:
        record = self.ledger.get(node.ident)
        if record is not None:
            return record["reason"]
        if node.kind is Kind.UPLOAD and is_temporary(node.name):
            return "temporary name: sent to Orthanc when renamed to its final name"
        return None

    def report(self) -> bytes:
        lines = ["Files kept in uploads/ and why (remove a file to clear its line; touch it to retry).", ""]
        for rel, record in self.ledger.items():
            lines.append(f"{rel}\n    {record['time']}  {record['reason']}")
            lines.extend(f"    - {name}: {reason}" for name, reason in record.get("entries", []))
        return ("\n".join(lines) + "\n").encode("utf-8")

    def _adopt_leftovers(self) -> None:
        """After a restart: keep reasons of files still here, explain files never sent."""
        existing = {str(p.relative_to(self.files)) for p in self.files.rglob("*") if p.is_file()}
        self.ledger.keep_only(existing)
        for rel in sorted(existing - {rel for rel, _ in self.ledger.items()}):
            self.ledger.record(rel, "found at start-up, never sent (interrupted); touch it to send it")

    def _new_name(self, parent: Node, name: str) -> str:
        if not parent.ident and name == REPORT_NAME:
            raise InvalidName(f"{REPORT_NAME} is reserved for the report")
        if parent.kind is not Kind.DIRECTORY:
            raise NotADirectory(parent.name)
        return _join(parent.ident, name)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _local_call(function: Callable[..., object], path: str, rel: str, *args: object, **kwargs: object) -> None:
    """Run a local file operation, with its failure in the model's words."""
    try:
        function(path, *args, **kwargs)
    except FileNotFoundError:
        raise NotFound(f"uploads/{rel}") from None
    except NotADirectoryError:
        raise NotADirectory(f"uploads/{rel}") from None
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:
            raise NotEmpty(f"uploads/{rel}") from None
        raise
