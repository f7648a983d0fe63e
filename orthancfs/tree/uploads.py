"""uploads/: a real folder on local disk whose files are sent to Orthanc when closed.

One state machine for every frontend (docs/uploads.md draws it):

    open for writing -> WRITING (a private staging copy) -> close:
        a write had failed  -> KEPT "write failed: ..." (never sent; the close fails)
        its name was removed -> nothing kept (the close fails: cancelled)
        a temporary name    -> HELD (sent when renamed to a final name)
        otherwise           -> SENDING -> STORED (leaves uploads/) | KEPT (reason; the close fails
                                          if Orthanc refused it or could not be reached)

Every open for writing has a copy of its own, so two writers of one name are two uploads:
each close puts what its writer wrote at the name (the last close wins the name, as after two
renames onto it) and sends exactly those bytes, read through the upload's own descriptor.
A file stays in the visible folder (`files/`) while it is sent; once Orthanc has it, it goes,
unless the name has been taken by another file meanwhile.

Files live under the cache directory, so nothing is held in RAM and a file Orthanc did not
take survives a remount.  Reasons are in the ledger (an xattr, ORTHANCFS-REPORT.txt, the log).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..content import Handle
from ..errors import (
    AlreadyExists,
    Cancelled,
    Forbidden,
    InvalidName,
    IsADirectory,
    LocalDiskFull,
    NameTooLong,
    NotADirectory,
    NotEmpty,
    NotFound,
    OrthancFSError,
    StartupError,
    WriteFailed,
)
from .escape import one_line
from .events import Events, FolderRemoved
from .ingest import Dispatch, Ingester, Outcome
from .ledger import Ledger
from .naming import MAX_NAME_BYTES, numbered
from .nodes import Kind, Node, Role
from .receipts import Receipts
from .staging import SpaceBudget, Staging, copy_content

log = logging.getLogger(__name__)

UPLOADS = "uploads"
REPORT_NAME = "ORTHANCFS-REPORT.txt"
STATUS_XATTR = "user.orthancfs.status"
TEMPORARY_SUFFIXES = ("~", ".part", ".partial", ".tmp", ".crdownload")
EMPTY_FOLDER_GRACE = 2.0  # seconds a folder emptied by ingestion stays, so a running `cp -r` can go on
HELD_REASON = "temporary name: sent to Orthanc when renamed to its final name"


def is_temporary(name: str) -> bool:
    """Names that editors and file managers write before renaming (`.goutputstream-X`, `x.part`)."""
    return name.startswith(".") or name.endswith(TEMPORARY_SUFFIXES)


def upload_root() -> Node:
    return Node((UPLOADS, Role.UPLOADS, ""), Kind.DIRECTORY)


class State(enum.Enum):
    WRITING = "being written"
    SENDING = "being sent to Orthanc"
    SETTLED = "settled"


@dataclass(eq=False)
class Upload:
    """One writer's content, from its first byte to its outcome."""

    rel: str  # the name it will take (follows renames)
    path: str  # where its bytes are: a staging file, then its place in files/
    fd: int
    state: State = State.WRITING
    size: int = 0
    failure: WriteFailed | None = None  # the first write that failed: it is never sent
    cancelled: bool = False  # its name was removed while it was written
    placed: tuple[int, int] | None = None  # (st_dev, st_ino) once it stands at its name in files/
    keep_receipt: bool = False


class UploadHandle(Handle):
    """One open file of uploads/.  A writer's private copy (its Upload) is made at its first change,
    so opening for writing without writing (`touch`) costs nothing and sends nothing."""

    def __init__(self, area: UploadArea, rel: str, writable: bool, source: int | None,
                 upload: Upload | None = None):
        self.area, self.rel, self.writable = area, rel, writable
        self._source = source  # the file as it was opened: what reads see before a change
        self.upload = upload
        self._superseded: list[Upload] = []  # earlier uploads of this handle (their sends may still read them)

    @property
    def changed(self) -> bool:
        """Whether closing it now would send something (a change since the last close)."""
        return self.upload is not None and self.upload.state is State.WRITING

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self._current_fd(), size, offset)

    def write(self, offset: int, data: bytes) -> int:
        self.area.write(self._own(), offset, data)
        return len(data)

    def truncate(self, size: int) -> None:
        self.area.truncate(self._own(), size)

    def set_times(self, atime_ns: int, mtime_ns: int) -> None:
        os.utime(self._current_fd(), ns=(atime_ns, mtime_ns))

    def closing(self, keep_receipt: bool = False) -> Closing | None:
        """The close() of a writer: what sending its file takes (None: nothing new to send).
        Raises what the writer must hear at once (a failed write, a cancelled upload)."""
        if not self.changed:
            return None
        assert self.upload is not None
        self.upload.keep_receipt = keep_receipt
        return self.area.close_upload(self.upload)

    def abandon(self, reason: str) -> None:
        """The writer could not give its whole content (a client gone mid-request): never send it."""
        if self.changed:
            assert self.upload is not None
            self.upload.failure = self.upload.failure or WriteFailed(reason)

    def finish(self) -> bool:
        """closing() and send, in one blocking call; True if the file left uploads/."""
        closing = self.closing()
        return False if closing is None else closing.send()

    def close(self) -> None:
        """The last reference is gone (FUSE release, end of a WebDAV request)."""
        self.area.released(self)
        if self._source is not None:
            os.close(self._source)
            self._source = None
        for upload in [*self._superseded, *([self.upload] if self.upload else [])]:
            os.close(upload.fd)
        self._superseded, self.upload = [], None

    def _current_fd(self) -> int:
        if self.upload is not None:
            return self.upload.fd
        if self._source is None:
            raise NotFound(f"uploads/{self.rel}")
        return self._source

    def _own(self) -> Upload:
        """The upload this writer's changes go to: made from the current content at the first change
        (again after a close, for a writer that goes on writing through another descriptor)."""
        if not self.writable:
            raise Forbidden("not open for writing")
        if self.upload is not None and self.upload.state is State.WRITING:
            return self.upload
        previous = self.upload
        self.upload = self.area.begin(self.rel, self._current_fd())
        if previous is not None:
            self._superseded.append(previous)
        return self.upload


class Closing:
    """One writer's close, between "what is it" and "what became of it".

    A frontend with its own way to send (an event loop) POSTs `body` itself and hands the answer
    to answered(); anything else calls send() in a thread.  Only confirm() and send() may block.
    """

    def __init__(self, area: UploadArea, upload: Upload, dispatch: Dispatch):
        self.area, self.upload, self.dispatch = area, upload, dispatch
        self._answer: tuple[Any, OrthancFSError | None] = (None, None)

    @property
    def body(self) -> bytes | None:
        """A plain DICOM file's bytes, read already (None: send() must do it: a ZIP, a big file...)."""
        return self.dispatch.body

    def send(self) -> bool:
        outcome = self.area.ingester.send(self.upload.fd, self.dispatch)
        return self.area.settle(self.upload, outcome)

    def answered(self, answer: Any = None, error: OrthancFSError | None = None) -> bool | None:
        """After the frontend POSTed `body`: True/False as send(), or None: confirm() must ask Orthanc."""
        outcome = self.area.ingester.judge(answer, error)
        if outcome is None:
            self._answer = (answer, error)
            return None
        return self.area.settle(self.upload, outcome)

    def confirm(self) -> bool:
        outcome = self.area.ingester.confirm(self.upload.fd, self.dispatch, *self._answer)
        return self.area.settle(self.upload, outcome)


@dataclass
class _Writers:
    """Open writable handles by name, and uploads being sent."""

    by_rel: dict[str, list[UploadHandle]] = field(default_factory=dict)
    sending: set[Upload] = field(default_factory=set)

    def add(self, handle: UploadHandle) -> None:
        self.by_rel.setdefault(handle.rel, []).append(handle)

    def remove(self, handle: UploadHandle) -> None:
        handles = self.by_rel.get(handle.rel, [])
        if handle in handles:
            handles.remove(handle)
        if not handles:
            self.by_rel.pop(handle.rel, None)

    def writing(self, rel: str) -> list[Upload]:
        """Uploads being written to `rel`, oldest first."""
        return [h.upload for h in self.by_rel.get(rel, ()) if h.upload is not None and h.changed]

    def below(self, rel: str) -> list[UploadHandle]:
        return [h for key, handles in self.by_rel.items() if _within(key, rel) for h in handles]

    def names_in(self, folder: str) -> set[str]:
        """Names directly in `folder` that only writers stand for so far."""
        found = set()
        for key, handles in self.by_rel.items():
            parent, _, name = key.rpartition("/")
            if parent == folder and any(h.changed for h in handles):
                found.add(name)
        return found

    def renamed(self, old: str, new: str) -> None:
        for handle in self.below(old):
            self.remove(handle)
            handle.rel = new + handle.rel[len(old):]
            self.add(handle)
            if handle.upload is not None:
                handle.upload.rel = handle.rel
        for upload in self.sending:
            if _within(upload.rel, old):
                upload.rel = new + upload.rel[len(old):]


class UploadArea:
    """The uploads/ folder: local files, sent to Orthanc when their writer closes them."""

    def __init__(self, state_dir: Path, ingester: Ingester, budget: SpaceBudget | None = None,
                 on_stored: Callable[[], None] = lambda: None, events: Events | None = None):
        self.files = state_dir / "files"
        self.files.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._files_prefix = f"{self.files}{os.sep}"
        self._owner = _lock_exclusively(state_dir)
        self.staging = Staging(str(state_dir / "staging"))
        self.receipts = Receipts(str(state_dir / "receipts"))
        self.ledger = Ledger(state_dir / "ledger.json")
        self.ingester = ingester
        self.budget = budget or SpaceBudget.for_disk(str(state_dir), 0)
        self.budget.relief.append(self.receipts.drop_all)
        self.on_stored = on_stored
        self.events = events or Events()
        self._writers = _Writers()
        self._emptied: set[str] = set()  # folders that ingestion emptied: removed once idle
        self._lock = threading.RLock()
        self._adopt_leftovers()

    def close(self) -> None:
        self.ledger.close()
        os.close(self._owner)

    # --- paths and nodes ------------------------------------------------------

    def local(self, rel: str) -> str:
        """The visible path of `rel`: a plain string, since pathlib cost a tenth of the
        time orthancfs spends on each uploaded file besides sending it."""
        return self._files_prefix + rel if rel else str(self.files)

    def node(self, rel: str) -> Node:
        """The node for `rel`: the newest upload being written to it, else the file in files/."""
        if not rel:
            return upload_root()
        with self._lock:  # (a writer's descriptor is closed only after it left the writers, under the lock)
            writing = self._writers.writing(rel)
            try:
                info = os.fstat(writing[-1].fd) if writing else os.lstat(self.local(rel))
            except (FileNotFoundError, NotADirectoryError) as exc:
                raise NotFound(f"uploads/{rel}") from exc
            except OSError as exc:
                if exc.errno != errno.ENAMETOOLONG:  # a name no upload can have
                    raise
                raise NotFound(f"uploads/{rel}") from None
        name, mode = rel.rsplit("/", 1)[-1], stat.S_IMODE(info.st_mode)
        if stat.S_ISDIR(info.st_mode):
            return Node((UPLOADS, Role.UPLOAD_DIR, rel), Kind.DIRECTORY, name, mtime_ns=info.st_mtime_ns, mode=mode)
        return Node((UPLOADS, Role.UPLOAD_FILE, rel), Kind.UPLOAD, name, info.st_size, info.st_mtime_ns, mode)

    def report_node(self) -> Node:
        return Node((UPLOADS, Role.REPORT, ""), Kind.TEXT, REPORT_NAME, len(self.report()), self.ledger.changed_ns)

    def children(self, parent: Node) -> dict[str, Node]:
        self._sweep_emptied()
        rel = parent.ident
        try:
            names = set(os.listdir(self.local(rel)))
        except FileNotFoundError:
            raise NotFound(f"uploads/{rel}") from None
        with self._lock:
            names |= self._writers.names_in(rel)
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

    def receipt(self, rel: str) -> Node | None:
        """A file Orthanc took a moment ago through this path, still readable (never listed)."""
        path = self.receipts.get(rel)
        if path is None:
            return None
        try:
            info = os.stat(path)
        except FileNotFoundError:
            return None
        return Node((UPLOADS, Role.RECEIPT, rel), Kind.UPLOAD, rel.rsplit("/", 1)[-1], info.st_size,
                    info.st_mtime_ns, stat.S_IMODE(info.st_mode))

    # --- opening and writing --------------------------------------------------------

    def create(self, parent: Node, name: str, mode: int = 0o644, exclusive: bool = False) -> tuple[Node, UploadHandle]:
        rel = self._new_name(parent, name)
        with self._lock:
            if os.path.isdir(self.local(rel)):
                raise IsADirectory(f"uploads/{rel}")
            if exclusive and (os.path.lexists(self.local(rel)) or self._writers.writing(rel)):
                raise AlreadyExists(f"uploads/{rel}")
            # The owner keeps read and write: the file is ours to send and to keep.
            handle = UploadHandle(self, rel, True, None, self._new_upload(rel, stat.S_IMODE(mode) | 0o600))
            self._writers.add(handle)
        return self.node(rel), handle

    def open(self, node: Node, writable: bool, truncate: bool) -> UploadHandle:
        if node.role is Role.RECEIPT:
            return self._open_receipt(node, writable)
        rel = node.ident
        with self._lock:
            source = self._open_current(rel)
            handle = UploadHandle(self, rel, writable, source)
            if writable and truncate:  # a new, empty content: nothing to copy
                handle.upload = self._new_upload(rel, stat.S_IMODE(os.fstat(source).st_mode))
            if writable:
                self._writers.add(handle)
        return handle

    def _open_receipt(self, node: Node, writable: bool) -> UploadHandle:
        path = self.receipts.get(node.ident)
        if writable or path is None:
            raise Forbidden("Orthanc has this file: it can be read back, not written")
        try:
            return UploadHandle(self, node.ident, False, os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        except FileNotFoundError:
            raise NotFound(f"uploads/{node.ident}") from None

    def begin(self, rel: str, source: int) -> Upload:
        """A new upload for a writer of `rel`, holding a copy of what `source` holds."""
        info = os.fstat(source)
        upload = self._new_upload(rel, stat.S_IMODE(info.st_mode))
        try:
            self.budget.claim(info.st_size)
            copy_content(source, upload.fd, info.st_size)
        except (OSError, LocalDiskFull) as exc:  # the write that asked for the copy fails: nothing new to keep
            os.close(upload.fd)
            self.staging.discard(upload.path)
            self._fail(upload, exc)
        upload.size = info.st_size
        return upload

    def _new_upload(self, rel: str, mode: int) -> Upload:
        path, fd = self.staging.new(rel, mode)
        return Upload(rel, path, fd)

    def write(self, upload: Upload, offset: int, data: bytes) -> None:
        """Write into the upload's staging copy; a write that fails dooms the upload (never sent)."""
        if upload.failure is not None:
            raise upload.failure
        end = offset + len(data)
        try:
            self.budget.claim(end - upload.size)
            _write_all(upload.fd, data, offset)
        except (OSError, LocalDiskFull) as exc:
            self._fail(upload, exc)
        upload.size = max(upload.size, end)

    def truncate(self, upload: Upload, size: int) -> None:
        if upload.failure is not None:
            raise upload.failure
        try:
            self.budget.claim(size - upload.size)
            os.ftruncate(upload.fd, size)
        except (OSError, LocalDiskFull) as exc:
            self._fail(upload, exc)
        upload.size = size

    @staticmethod
    def _fail(upload: Upload, exc: OSError | LocalDiskFull) -> None:
        if isinstance(exc, LocalDiskFull):
            upload.failure = exc
        elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
            upload.failure = LocalDiskFull(f"no space left on the local disk ({exc.strerror})")
        else:
            upload.failure = WriteFailed(f"the local disk failed: {exc.strerror or exc}")
        raise upload.failure

    def released(self, handle: UploadHandle) -> None:
        """A handle's last reference is gone.  A writer that was never closed (a frontend's bug,
        or a client gone mid-request) is settled as a failed write: never sent, kept, said why."""
        if handle.changed:
            assert handle.upload is not None
            handle.upload.failure = handle.upload.failure or WriteFailed("the file was never closed properly")
            with contextlib.suppress(OrthancFSError):
                self.close_upload(handle.upload)
        if handle.writable:
            with self._lock:
                self._writers.remove(handle)

    # --- closing: the state machine ---------------------------------------------------

    def close_upload(self, upload: Upload) -> Closing | None:
        """A writer closes: its file takes its name, then is sent (Closing), held or kept."""
        with self._lock:
            upload.state = State.SETTLED
            if upload.cancelled:
                self.staging.discard(upload.path)
                raise Cancelled(f"uploads/{upload.rel} was removed while it was written; not sent")
            self._place(upload)
            if upload.failure is not None:
                self.ledger.record(upload.rel, f"write failed, not sent: {upload.failure}", incomplete=True)
                log.warning("uploads/%s kept: write failed, not sent: %s", one_line(upload.rel), upload.failure)
                raise upload.failure
            if is_temporary(upload.rel.rsplit("/", 1)[-1]):
                return None  # held: sent when renamed to a final name
            upload.state = State.SENDING
            self._writers.sending.add(upload)
        return Closing(self, upload, self.ingester.examine(upload.fd))

    def _place(self, upload: Upload) -> None:
        """Put the upload at its name (replacing what was there: the last close wins the name)."""
        target = self.local(upload.rel)
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        try:
            os.rename(upload.path, target)
        except (IsADirectoryError, NotADirectoryError):  # a folder took its name meanwhile
            upload.rel = self._free_name(upload.rel)
            target = self.local(upload.rel)
            os.rename(upload.path, target)
        self.staging.forget(upload.path)
        self.ledger.forget(upload.rel, below=False)  # the reason of the file it replaced
        upload.path = target
        info = os.fstat(upload.fd)
        upload.placed = (info.st_dev, info.st_ino)

    def settle(self, upload: Upload, outcome: Outcome) -> bool:
        """What became of a sent upload; True if it left uploads/.  Raises what its writer must hear."""
        self.on_stored()  # even a partly refused archive may have stored something
        with self._lock:
            self._writers.sending.discard(upload)
            upload.state = State.SETTLED
            ours = self._holds(upload)
            if outcome.consumed and ours:
                self._leave(upload)
            elif not outcome.consumed and ours:
                self.ledger.record(upload.rel, outcome.reason, outcome.entries)
        self._log(upload.rel, outcome, ours)
        if outcome.not_sent:
            self.ledger.note(upload.rel, outcome.reason, outcome.not_sent)
        if outcome.error is not None:
            raise outcome.error
        return outcome.consumed

    def _holds(self, upload: Upload) -> bool:
        """Whether the upload still stands at its name (not removed, nor replaced by another file)."""
        try:
            info = os.lstat(self.local(upload.rel))
        except FileNotFoundError:
            return False
        return (info.st_dev, info.st_ino) == upload.placed

    def _leave(self, upload: Upload) -> None:
        """A stored upload leaves uploads/ (into a receipt, for a frontend that asked for one)."""
        rel = upload.rel
        if upload.keep_receipt:
            self.receipts.take(rel, self.local(rel))
        else:
            os.unlink(self.local(rel))
        self.ledger.forget(rel, below=False)
        if "/" in rel:
            self._emptied.add(rel.rsplit("/", 1)[0])

    @staticmethod
    def _log(rel: str, outcome: Outcome, ours: bool) -> None:
        name = one_line(rel)
        if outcome.consumed:
            log.info("uploads/%s: %s", name, one_line(outcome.reason))
            for entry, reason in outcome.not_sent:
                log.info("uploads/%s: entry %s not sent: %s", name, one_line(entry), one_line(reason))
        elif ours:
            (log.warning if outcome.error else log.info)("uploads/%s kept: %s", name, one_line(outcome.reason))
        else:
            log.warning("uploads/%s was not stored (%s); its name was removed or taken meanwhile, so it is not "
                        "kept", name, one_line(outcome.reason))

    def resend(self, rel: str) -> bool:
        """Send the file that stands at `rel` again (touch of a kept file, a temporary name made
        final); True if it left uploads/.  Blocking.  A file its writer did not write whole is
        never sent, not even when asked."""
        record = self.ledger.get(rel)
        if record is not None and record.get("incomplete"):
            raise WriteFailed(f"uploads/{rel} is incomplete ({record['reason']}); it is never sent: copy the whole "
                              "file again")
        with self._lock:
            try:
                fd = os.open(self.local(rel), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise NotFound(f"uploads/{rel}") from None
            info = os.fstat(fd)
            upload = Upload(rel, self.local(rel), fd, State.SENDING, info.st_size,
                            placed=(info.st_dev, info.st_ino))
            self._writers.sending.add(upload)
        try:
            return Closing(self, upload, self.ingester.examine(fd)).send()
        finally:
            os.close(fd)

    # --- other changes ------------------------------------------------------------------

    def mkdir(self, parent: Node, name: str, mode: int = 0o755) -> Node:
        rel = self._new_name(parent, name)
        with self._lock:
            if self._writers.writing(rel):
                raise AlreadyExists(f"uploads/{rel}")
            try:
                os.mkdir(self.local(rel), stat.S_IMODE(mode) | 0o700)
            except FileExistsError:
                raise AlreadyExists(f"uploads/{rel}") from None
        return self.node(rel)

    def unlink(self, parent: Node, name: str) -> None:
        """Remove a file: what stands at the name, and uploads still being written to it (cancelled)."""
        rel = _join(parent.ident, name)
        if not parent.ident and name == REPORT_NAME:
            self.ledger.clear_notes()  # what can be cleared; kept files are cleared by removing them
            if self.ledger.has_kept():
                raise InvalidName("the report goes away with the files it describes")
            return
        with self._lock:
            writing = self._writers.writing(rel)
            for upload in writing:
                upload.cancelled = True
            try:
                _local_call(os.unlink, self.local(rel), rel)
            except NotFound:
                if not writing:
                    raise
            self.ledger.forget(rel, below=False)
        self.receipts.forget(rel)

    def rmdir(self, parent: Node, name: str) -> None:
        rel = _join(parent.ident, name)
        with self._lock:
            if any(h.changed for h in self._writers.below(rel)):
                raise NotEmpty(f"uploads/{rel}")
            _local_call(os.rmdir, self.local(rel), rel)
            self.ledger.forget(rel)

    def rename(self, old_parent: Node, old_name: str, new_parent: Node, new_name: str, replace: bool) -> None:
        old, new = _join(old_parent.ident, old_name), self._new_name(new_parent, new_name)
        if old == new:  # rename(2) onto itself does nothing (and must not lose the file's reason)
            self.node(old)
            return
        with self._lock:
            visible = os.path.lexists(self.local(old))
            if not visible and not self._writers.writing(old):
                raise NotFound(f"uploads/{old}")
            if not replace and (os.path.lexists(self.local(new)) or self._writers.writing(new)):
                raise AlreadyExists(f"uploads/{new}")
            if visible:
                _local_call(os.rename, self.local(old), old, self.local(new))
            else:  # only a writer stands for `old`: its close will put it at `new`
                with contextlib.suppress(NotFound, IsADirectory):
                    _local_call(os.unlink, self.local(new), new)
            self._writers.renamed(old, new)
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
        self.receipts.forget(new)
        final = not is_temporary(new.rsplit("/", 1)[-1])
        if is_temporary(old.rsplit("/", 1)[-1]) and final and os.path.isfile(self.local(new)):
            with self._lock:
                if self._writers.writing(new):
                    return  # its writer sends it when it closes
            with contextlib.suppress(OrthancFSError):
                self.resend(new)

    def copy(self, node: Node, new_parent: Node, new_name: str) -> None:
        """A copy of a file at a new name, as WebDAV's COPY makes it (kept, or sent if it leaves a
        temporary name for a final one)."""
        new = self._new_name(new_parent, new_name)
        source = self._open_current(node.ident)
        try:
            info = os.fstat(source)
            self.budget.claim(info.st_size)
            path, fd = self.staging.new(new, stat.S_IMODE(info.st_mode))
            try:
                copy_content(source, fd, info.st_size)
            except OSError:
                self.staging.discard(path)
                raise
            finally:
                os.close(fd)
            with self._lock:
                os.rename(path, self.local(new))
                self.staging.forget(path)
        finally:
            os.close(source)
        self.moved(node.ident, new, copied=True)

    def _open_current(self, rel: str) -> int:
        """A read-only descriptor of what `rel` shows: the newest upload being written, else the file."""
        with self._lock:
            writing = self._writers.writing(rel)
            try:
                return os.open(writing[-1].path if writing else self.local(rel), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise NotFound(f"uploads/{rel}") from None

    def truncate_path(self, node: Node, size: int) -> None:
        """truncate(2) by path: the file in place (a change nobody closes, so nothing is sent)."""
        with self._lock:
            writing = self._writers.writing(node.ident)
            if writing:
                self.truncate(writing[-1], size)
                return
        _local_call(os.truncate, self.local(node.ident), node.ident, size)

    def set_times(self, node: Node, atime_ns: int | None, mtime_ns: int | None) -> bool:
        """utime; on a kept file this is also `touch` to retry: True if the file then left uploads/."""
        current = self.node(node.ident)
        times = (atime_ns if atime_ns is not None else current.mtime_ns,
                 mtime_ns if mtime_ns is not None else current.mtime_ns)
        with self._lock:
            writing = self._writers.writing(node.ident)
            if writing:
                os.utime(writing[-1].fd, ns=times)
                return False
        _local_call(os.utime, self.local(node.ident), node.ident, ns=times)
        if node.kind is Kind.UPLOAD and self.ledger.get(node.ident) is not None:
            return self.resend(node.ident)  # say how the retry went
        return False

    def set_mode(self, node: Node, mode: int) -> None:
        bits = stat.S_IMODE(mode) | stat.S_IRUSR | stat.S_IWUSR
        with self._lock:
            for upload in self._writers.writing(node.ident):
                os.fchmod(upload.fd, bits)
            if os.path.lexists(self.local(node.ident)):
                _local_call(os.chmod, self.local(node.ident), node.ident, bits)

    # --- what is pending ------------------------------------------------------------------

    def pending(self) -> tuple[list[str], list[str]]:
        """The names open for writing, and those being sent (what an unmount must wait for)."""
        with self._lock:
            writing = sorted(rel for rel, handles in self._writers.by_rel.items() if any(h.changed for h in handles))
            sending = sorted(upload.rel for upload in self._writers.sending)
        return writing, sending

    # --- the sweep of emptied folders ----------------------------------------------------

    def _sweep_emptied(self) -> None:
        """Remove folders that ingestion emptied, once nobody has touched them for a moment.

        The moment matters: `cp -r` creates the next file in a folder right after
        the previous one was taken.
        """
        with self._lock:
            candidates, self._emptied = self._emptied, set()
        later = set()
        for rel in candidates:
            try:
                if os.listdir(self.local(rel)) or self._busy(rel):
                    continue  # in use again
                if time.time() - os.stat(self.local(rel)).st_mtime < EMPTY_FOLDER_GRACE:
                    later.add(rel)
                    continue
                self._remove_empty_chain(rel)
            except OSError:
                continue
        with self._lock:
            self._emptied |= later

    def _busy(self, rel: str) -> bool:
        with self._lock:
            return bool(self._writers.below(rel)) or any(_within(u.rel, rel) for u in self._writers.sending)

    def _remove_empty_chain(self, rel: str) -> None:
        """rmdir `rel`, then each parent that this leaves empty (never uploads/ itself)."""
        while rel:
            try:
                os.rmdir(self.local(rel))
            except OSError:
                return
            self.ledger.forget(rel)
            self.events.publish(FolderRemoved(rel))
            rel = rel.rsplit("/", 1)[0] if "/" in rel else ""

    # --- reasons ------------------------------------------------------------------------

    def status(self, node: Node) -> str | None:
        """Why a file is in uploads/, in one line (None: nothing to say)."""
        with self._lock:
            if self._writers.writing(node.ident):
                return "being written: sent to Orthanc when closed"
            if any(u.rel == node.ident for u in self._writers.sending):
                return "being sent to Orthanc"
        record = self.ledger.get(node.ident)
        if record is not None:
            return one_line(record["reason"])
        if node.kind is Kind.UPLOAD and is_temporary(node.name):
            return HELD_REASON
        return None

    def report(self) -> bytes:
        lines = ["Files kept in uploads/ and why (remove a file to clear its line; touch it to retry).", ""]
        for rel, record in self.ledger.items():
            lines.append(f"{one_line(rel)}\n    {record['time']}  {one_line(record['reason'])}")
            lines.extend(f"    - {one_line(name)}: {one_line(reason)}" for name, reason in record.get("entries", []))
        notes = self.ledger.notes()
        if notes:
            lines += ["", "Archives that left uploads/, with entries that were not sent (remove this report "
                          "to clear these lines):", ""]
        for note in notes:
            lines.append(f"{one_line(note['name'])}\n    {note['time']}  {one_line(note['reason'])}")
            lines.extend(f"    - {one_line(name)}: {one_line(reason)}" for name, reason in note.get("entries", []))
        return ("\n".join(lines) + "\n").encode("utf-8")

    # --- start-up ------------------------------------------------------------------------

    def _adopt_leftovers(self) -> None:
        """After a crash or a stop with files open: show every file again, and say why it is there."""
        for path, rel in self.staging.leftovers():
            target = self._free_name(rel) if os.path.lexists(self.local(rel)) else rel
            os.makedirs(os.path.dirname(self.local(target)), mode=0o700, exist_ok=True)
            os.rename(path, self.local(target))
            self.staging.forget(path)
            self.ledger.record(target, "interrupted while it was written (orthancfs stopped): incomplete, never "
                                       "sent; copy the whole file again", incomplete=True)
        existing = {str(p.relative_to(self.files)) for p in self.files.rglob("*") if p.is_file()}
        self.ledger.keep_only(existing)
        for rel in sorted(existing - {rel for rel, _ in self.ledger.items()}):
            self.ledger.record(rel, "found at start-up, never sent (interrupted); touch it to send it")

    def _free_name(self, rel: str) -> str:
        folder, slash, name = rel.rpartition("/")
        stem, dot, extension = name.rpartition(".") if "." in name else (name, "", "")
        number = 1
        while os.path.lexists(self.local(free := folder + slash + numbered(stem, number, dot + extension))):
            number += 1
        return free

    def _new_name(self, parent: Node, name: str) -> str:
        """Checked here for every frontend: the local file system would refuse it later, as a raw OSError."""
        if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise NameTooLong(f"a name over {MAX_NAME_BYTES} bytes")
        if name in ("", ".", "..") or "/" in name or "\0" in name:
            raise InvalidName(f"not a file name: {name!r}")
        if not parent.ident and name == REPORT_NAME:
            raise InvalidName(f"{REPORT_NAME} is reserved for the report")
        if parent.kind is not Kind.DIRECTORY:
            raise NotADirectory(parent.name)
        return _join(parent.ident, name)


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _within(rel: str, folder: str) -> bool:
    return rel == folder or rel.startswith(folder + "/")


def _write_all(fd: int, data: bytes, offset: int) -> None:
    """pwrite until every byte is written: a short write is a failure, not a partial success."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view, offset = view[written:], offset + written


def _lock_exclusively(state_dir: Path) -> int:
    """Hold the uploads folder of this server for this process: two processes serving it would
    adopt each other's files being written, and overwrite each other's ledger."""
    fd = os.open(state_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StartupError(f"{state_dir} is used by another orthancfs process for the same server; give this "
                           "one its own --cache-dir") from None
    return fd


def _local_call(function: Callable[..., object], path: str, rel: str, *args: object, **kwargs: object) -> None:
    """Run a local file operation, with its failure in the model's words."""
    try:
        function(path, *args, **kwargs)
    except FileNotFoundError:
        raise NotFound(f"uploads/{rel}") from None
    except FileExistsError:
        raise AlreadyExists(f"uploads/{rel}") from None
    except IsADirectoryError:
        raise IsADirectory(f"uploads/{rel}") from None
    except NotADirectoryError:
        raise NotADirectory(f"uploads/{rel}") from None
    except OSError as exc:
        if exc.errno == errno.ENOTEMPTY:
            raise NotEmpty(f"uploads/{rel}") from None
        raise
