"""The upload state machine, explored by hypothesis against a real Orthanc, with real faults.

Writers open, write (in pieces), and close files of uploads/ in any order, several on one name,
through either way of sending (blocking, as WebDAV and archives do; from a trio loop, as the
mount does), while the cache disk (a real small tmpfs) fills up, Orthanc's answers are lost
(a real proxy drops them), Orthanc is unreachable or frozen (the proxy refuses or stalls), and
files are renamed or removed while they are being sent.

The invariant (issue 15): every byte sequence whose close() succeeded, if it is DICOM, is in
Orthanc exactly; nothing a writer could not write whole is ever stored; no stored file is left
in uploads/; everything kept there says why; every staging copy and descriptor is released.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule, run_state_machine_as_test
from pydicom import dcmread
from pydicom.uid import generate_uid

from orthancfs.demo.samples import Spec, make_dicom
from orthancfs.demo.server import OrthancServer
from orthancfs.errors import Cancelled, NotFound, OrthancFSError, WriteFailed
from orthancfs.orthanc import ClientSettings, LoopUploader, OrthancClient
from orthancfs.tree import Tree
from orthancfs.tree.index import orthanc_id
from orthancfs.tree.ingest import ID_TAGS, _as_orthanc_reads
from orthancfs.tree.uploads import upload_root

from .helpers import small_disk, wait_for
from .proxy import Proxy

EXAMPLES = int(os.environ.get("ORTHANCFS_STATE_EXAMPLES", "25"))
NAMES = ("a.dcm", "b.dcm", "c.dcm", ".tmp-x", "d/e.dcm")
FAULTS = ("none", "none", "none", "none", "drop-once", "drop-always", "refuse", "stall")
SIZES = {"small": (32, 32, 1), "medium": (256, 256, 4), "big": (512, 512, 18)}  # big: more than 8 MiB


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OrthancServer, Proxy, Path]]:
    work = tmp_path_factory.mktemp("states")
    with OrthancServer(work / "orthanc") as server, small_disk(work / "disk", "40m") as disk:
        proxy = Proxy(server.port)
        try:
            yield server, proxy, disk
        finally:
            proxy.close()


@dataclass
class Writer:
    """One open file and what its writer has given it."""

    handle: object
    name: str
    content: bytes  # what it means to write, whole
    written: int = 0
    failed: bool = False  # a write failed: it must never be stored
    cancelled: bool = False  # its name was removed while it was written: its close must fail


@dataclass
class Ledger:
    """What the writers were told."""

    stored: list[bytes] = field(default_factory=list)  # closes that succeeded, DICOM content
    doomed: list[bytes] = field(default_factory=list)  # contents whose writing failed
    cancelled: list[bytes] = field(default_factory=list)


class Uploads(RuleBasedStateMachine):
    server: OrthancServer
    proxy: Proxy
    disk: Path

    writers = Bundle("writers")

    def __init__(self) -> None:
        super().__init__()
        assert _free(self.disk) > 30 << 20, "an earlier run left the disk full (a file held open?)"
        self.work = self.disk / f"run-{generate_uid()[-12:]}"
        self.client = OrthancClient(ClientSettings(self.proxy.url, timeout=1.0, connect_timeout=1.0, retries=1))
        self.tree = Tree(self.client, self.work / "state", metadata_ttl=0, spool_dir=str(self.work))
        self.told = Ledger()
        self.open: list[Writer] = []
        self.filler = self.disk / f"filler-{generate_uid()[-12:]}"

    # --- writers ------------------------------------------------------------------

    @rule(target=writers, name=st.sampled_from(NAMES), size=st.sampled_from(["small"] * 6 + ["medium"] * 3 + ["big"]),
          truncate_existing=st.booleans())
    def open_for_writing(self, name: str, size: str, truncate_existing: bool) -> Writer:
        parent = self._folder_of(name)
        leaf = name.rsplit("/", 1)[-1]
        try:
            node = self.tree.lookup(parent, leaf)
        except NotFound:
            node = None
        if node is not None and truncate_existing and not node.is_dir:
            handle = self.tree.open(node, writable=True, truncate=True)
        else:
            _, handle = self.tree.create(parent, leaf)
        rows, columns, frames = SIZES[size]
        content = make_dicom(Spec("ST", "State^Machine", generate_uid(), generate_uid(), rows=rows, columns=columns,
                                  frames=frames))
        writer = Writer(handle, name, content)
        self.open.append(writer)
        return writer

    @rule(writer=writers, pieces=st.integers(1, 4))
    def write(self, writer: Writer, pieces: int) -> None:
        if writer not in self.open or writer.failed:
            return
        step = max(1, len(writer.content) // pieces)
        end = min(len(writer.content), writer.written + step)
        try:
            writer.handle.write(writer.written, writer.content[writer.written:end])
        except WriteFailed:
            writer.failed = True
            self.told.doomed.append(writer.content)
            return
        writer.written = end

    @rule(writer=consumes(writers), fault=st.sampled_from(FAULTS), loop=st.booleans(), finish_first=st.booleans())
    def close(self, writer: Writer, fault: str, loop: bool, finish_first: bool) -> None:
        if writer not in self.open:
            return
        if finish_first and not writer.failed:
            self.write(writer, 1)
        with self._fault(fault):
            self._close(writer, loop)

    @rule(writer=consumes(writers), action=st.sampled_from(["rename", "unlink"]))
    def close_while_renamed_or_removed(self, writer: Writer, action: str) -> None:
        """The file is renamed or removed while Orthanc is being sent it (the proxy holds it meanwhile)."""
        if writer not in self.open:
            return
        self.write(writer, 1)
        self.proxy.stall()
        closing = threading.Thread(target=self._close, args=(writer, False))
        closing.start()
        try:
            wait_for(lambda: writer.name in self.tree.uploads.pending()[1] or not closing.is_alive(), 10,
                     "the upload to be on its way")
            with contextlib.suppress(OrthancFSError):
                if action == "rename":
                    self.tree.rename(self._folder_of(writer.name), writer.name.rsplit("/", 1)[-1], self._root(),
                                     "renamed-while-sent.dcm")
                    self._renamed(writer.name, "renamed-while-sent.dcm")
                else:
                    self.remove(writer.name)
        finally:
            self.proxy.resume()
            closing.join(30)
        assert not closing.is_alive()

    @rule(name=st.sampled_from(NAMES))
    def remove(self, name: str) -> None:
        for writer in self.open:
            if writer.name == name and writer.handle.changed:
                writer.cancelled = True  # its close must fail now
        with contextlib.suppress(OrthancFSError):
            self.tree.unlink(self._folder_of(name), name.rsplit("/", 1)[-1])

    @rule(name=st.sampled_from(NAMES))
    def retry(self, name: str) -> None:
        """touch of a kept file: it is sent again (never if it is incomplete)."""
        with contextlib.suppress(OrthancFSError):
            node = self.tree.lookup(self._folder_of(name), name.rsplit("/", 1)[-1])
            before = _read(self.tree, node)
            if self.tree.set_attributes(node, mtime_ns=1_000_000_000) is node and before is not None:
                self.told.stored.append(before)  # it left uploads/: Orthanc took it

    def _renamed(self, old: str, new: str) -> None:
        """Writers still open on a renamed name follow it (as the model's do)."""
        for other in self.open:
            if other.name == old:
                other.name = new

    # --- the disk ---------------------------------------------------------------------

    @rule(leave=st.integers(0, 12 << 20), no_reserve=st.booleans())
    def fill_disk(self, leave: int, no_reserve: bool) -> None:
        """Another program fills the cache disk up to `leave` bytes free (with no reserve, the disk's
        own ENOSPC is met, not just the share uploads may take)."""
        if no_reserve:
            self.tree.uploads.budget.reserve = 0
        free = _free(self.disk)
        with contextlib.suppress(OSError), open(self.filler, "ab") as filler:  # (full already: so be it)
            filler.write(bytes(max(0, free - leave)))

    @rule()
    def free_disk(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    # --- what must always hold ----------------------------------------------------------

    @invariant()
    def every_kept_file_says_why(self) -> None:
        for rel, _ in _files(self.tree):
            node = self.tree.uploads.node(rel)
            assert self.tree.status(node), rel

    def teardown(self) -> None:
        try:
            self.proxy.resume()
            self.proxy.refuse, self.proxy.drop_answers_to = False, None
            for writer in list(self.open):
                self._close(writer, loop=False)
            self._check_orthanc()
            self._check_released()
        finally:
            self.tree.close()
            self.client.close()
            with contextlib.suppress(FileNotFoundError):
                self.filler.unlink()
            shutil.rmtree(self.work, ignore_errors=True)

    def _check_orthanc(self) -> None:
        with self.server.client() as direct:
            for content in self.told.stored:
                stored = direct.get_bytes(f"/instances/{_instance_of(content)}/file")
                assert stored == content, "a close that succeeded is not in Orthanc exactly"
            for content in self.told.doomed + self.told.cancelled:
                if content in self.told.stored:
                    continue
                with contextlib.suppress(NotFound):
                    stored = direct.get_bytes(f"/instances/{_instance_of(content)}/file")
                    assert stored != content[: len(stored)] or stored == content, \
                        "a part of a file its writer could not write whole was stored"
        kept = {content for _, content in _files(self.tree)}
        assert not kept & set(self.told.stored), "a stored file was left in uploads/"

    def _check_released(self) -> None:
        writing, sending = self.tree.uploads.pending()
        assert writing == [] and sending == []
        assert os.listdir(self.tree.uploads.staging.directory) == [], "a staging copy was left"
        held = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                if _readlink(f"/proc/self/fd/{fd}").startswith(str(self.work / "state"))]
        assert [h for h in held if not h.endswith("/lock")] == [], held

    # --- helpers ---------------------------------------------------------------------------

    def _close(self, writer: Writer, loop: bool) -> None:
        self.open.remove(writer)
        handle = writer.handle
        content = writer.content[: writer.written]
        try:
            closing = handle.closing()
            if closing is not None:
                _send(closing, loop, self.client)
            if writer.failed:
                raise AssertionError("a close succeeded after a failed write")
            if writer.cancelled:
                raise AssertionError("a close succeeded after its name was removed")
            if closing is not None and content[128:132] == b"DICM" and writer.name != ".tmp-x":
                self.told.stored.append(content)
        except Cancelled:
            self.told.cancelled.append(content)
        except OrthancFSError:
            pass  # reported to its writer: allowed, whatever became of the file
        finally:
            handle.close()

    @contextlib.contextmanager
    def _fault(self, fault: str) -> Iterator[None]:
        proxy = self.proxy
        if fault in ("drop-once", "drop-always"):
            proxy.drop_answers_to = b"POST /instances"
            drops = proxy.drops
            if fault == "drop-once":
                threading.Thread(target=_stop_dropping, args=(proxy, drops), daemon=True).start()
        proxy.refuse = fault == "refuse"
        if fault == "stall":
            proxy.stall()
        try:
            yield
        finally:
            proxy.resume()
            proxy.refuse, proxy.drop_answers_to = False, None

    def _root(self):  # noqa: ANN202
        return self.tree.refresh(upload_root())

    def _folder_of(self, name: str):  # noqa: ANN202
        root = self._root()
        if "/" not in name:
            return root
        folder = name.rsplit("/", 1)[0]
        with contextlib.suppress(OrthancFSError):
            self.tree.mkdir(root, folder)
        return self.tree.lookup(root, folder)


def _send(closing: object, loop: bool, client: OrthancClient) -> None:
    """As the frontends do: blocking (WebDAV, archives), or POSTed from a trio loop (the mount)."""
    if not loop or closing.body is None:
        closing.send()
        return
    uploader = LoopUploader(client)
    try:
        answer, error = trio.run(_loop_post, uploader, closing.body)
    finally:
        uploader.close()
    if closing.answered(answer, error) is None:
        closing.confirm()


async def _loop_post(uploader: LoopUploader, body: bytes) -> tuple[object, OrthancFSError | None]:
    try:
        return await uploader.upload(body), None
    except OrthancFSError as exc:
        return None, exc


def _stop_dropping(proxy: Proxy, drops: int) -> None:
    with contextlib.suppress(AssertionError):
        wait_for(lambda: proxy.drops > drops, 10, "an answer to be dropped")
    proxy.drop_answers_to = None


def _instance_of(content: bytes) -> str:
    dataset = dcmread(io.BytesIO(content), stop_before_pixels=True, force=True)
    return orthanc_id(*(_as_orthanc_reads(dataset.get(tag)) for tag in ID_TAGS))


def _files(tree: Tree) -> list[tuple[str, bytes]]:
    base = tree.uploads.files
    return [(str(p.relative_to(base)), p.read_bytes()) for p in base.rglob("*") if p.is_file()]


def _read(tree: Tree, node: object) -> bytes | None:
    try:
        handle = tree.open(node)
    except OrthancFSError:
        return None
    try:
        return handle.read(0, 1 << 30)
    finally:
        handle.close()


def _free(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


@pytest.mark.allow_warnings
def test_the_upload_state_machine_keeps_its_promises(parts: tuple[OrthancServer, Proxy, Path]) -> None:
    Uploads.server, Uploads.proxy, Uploads.disk = parts
    run_state_machine_as_test(Uploads, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=20, deadline=None, derandomize=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
