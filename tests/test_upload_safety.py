"""uploads/ under real faults, through a real mount: a full disk, two writers, a frozen Orthanc,
lost answers, forked writers, a crash, hostile names.  Nothing may be lost or stored broken."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from orthancfs.demo.samples import Spec, make_dicom
from orthancfs.demo.server import OrthancServer
from orthancfs.orthanc import OrthancClient
from orthancfs.tree.ingest import _instance_id

from . import uploads_data as data
from .conftest import mounted
from .dataset import LONG_ID
from .helpers import MountProcess, free_bytes, small_disk, wait_for
from .proxy import Proxy

STATUS = "user.orthancfs.status"
REPORT = "ORTHANCFS-REPORT.txt"
MIB = 1 << 20


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OrthancServer]:
    with OrthancServer(tmp_path / "orthanc") as server:
        yield server


@pytest.fixture
def orthanc(server: OrthancServer) -> Iterator[OrthancClient]:
    with server.client() as client:
        yield client


def cp(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(["cp", *map(str, args)], capture_output=True, text=True, timeout=300)


def stored_files(client: OrthancClient) -> list[bytes]:
    """Every file Orthanc holds, as bytes."""
    return [client.get_bytes(f"/instances/{i}/file") for i in client.get_json("/instances")]


def status(path: Path) -> str:
    return os.getxattr(path, STATUS).decode()


@pytest.mark.allow_warnings
def test_a_copy_that_does_not_fit_is_never_sent_and_reads_go_on(server: OrthancServer, orthanc: OrthancClient,
                                                                tmp_path: Path) -> None:
    """cp of a file larger than the room uploads may take: cp fails, nothing is stored (not even the
    prefix that fitted, which Orthanc would take), the partial file is kept and cannot be retried,
    reads still work (downloads keep their share), and removing the file frees the disk."""
    [small] = data.instances(1, "READ")
    orthanc.upload(small)
    [big] = data.instances(1, "BIG", frames=80, rows=512, columns=512)  # 40 MiB
    (tmp_path / "big.dcm").write_bytes(big)
    with small_disk(tmp_path / "cache", "32m") as cache, \
            mounted(server.url, tmp_path, "--cache-dir", str(cache), expect_warnings=True) as mnt:
        result = cp(tmp_path / "big.dcm", mnt / "uploads")
        assert result.returncode != 0 and "No space left on device" in result.stderr, result
        assert stored_files(orthanc) == [small]
        kept = mnt / "uploads" / "big.dcm"
        assert status(kept).startswith("write failed, not sent"), status(kept)
        assert 0 < kept.stat().st_size < len(big)
        touched = subprocess.run(["touch", kept], capture_output=True, text=True)
        assert touched.returncode != 0 and stored_files(orthanc) == [small]  # an incomplete file is never sent
        [path] = (mnt / "by-patients").rglob("*.dcm")
        assert path.read_bytes() == small  # a download still finds room
        before = free_bytes(cache)
        kept.unlink()
        assert free_bytes(cache) > before + 16 * MIB  # the space is back: nothing holds the deleted file
        [fits] = data.instances(1, "FITS")
        (tmp_path / "fits.dcm").write_bytes(fits)
        assert cp(tmp_path / "fits.dcm", mnt / "uploads").returncode == 0
        assert sorted(stored_files(orthanc)) == sorted([small, fits])
        assert os.listdir(mnt / "uploads") == [REPORT] or os.listdir(mnt / "uploads") == []


def test_two_writers_of_one_name_are_two_uploads(server: OrthancServer, orthanc: OrthancClient,
                                                 tmp_path: Path) -> None:
    """Writers that open one name at once (open(2) without O_EXCL) each send what they wrote."""
    rounds = 15
    payloads = data.instances(2 * rounds, "TWO")
    with mounted(server.url, tmp_path) as mnt:
        target = mnt / "uploads" / "x.dcm"
        for round_ in range(rounds):
            pair = payloads[2 * round_: 2 * round_ + 2]
            start = threading.Barrier(2)
            threads = [threading.Thread(target=_write_in_two, args=(target, p, start)) for p in pair]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        wait_for(lambda: os.listdir(mnt / "uploads") == [], 30, "uploads/ to empty")
    assert sorted(stored_files(orthanc)) == sorted(payloads)


def _write_in_two(target: Path, payload: bytes, start: threading.Barrier) -> None:
    """Open `target`, wait for the other writer to have it open too, write in two pieces, close."""
    with open(target, "wb") as file:
        start.wait()
        file.write(payload[: len(payload) // 2])
        file.flush()
        file.write(payload[len(payload) // 2:])


def test_concurrent_cp_of_one_name_never_loses_a_file(server: OrthancServer, orthanc: OrthancClient,
                                                      tmp_path: Path) -> None:
    """Two `cp` into one new name at once: cp creates exclusively (O_EXCL), so one of them may be told
    "File exists", as on any file system; but a cp that succeeds always has its file in Orthanc."""
    rounds = 25
    payloads = data.instances(2 * rounds, "CP2")
    sources = []
    for n, payload in enumerate(payloads):
        sources.append(tmp_path / f"s{n}.dcm")
        sources[-1].write_bytes(payload)
    succeeded = []
    with mounted(server.url, tmp_path) as mnt:
        for round_ in range(rounds):
            pair = sources[2 * round_: 2 * round_ + 2]
            copies = [subprocess.Popen(["cp", s, mnt / "uploads" / f"r{round_}.dcm"], stderr=subprocess.PIPE,
                                       text=True) for s in pair]
            for source, copy in zip(pair, copies, strict=True):
                _, error = copy.communicate(timeout=60)
                if copy.returncode == 0:
                    succeeded.append(source.read_bytes())
                else:
                    assert "File exists" in error, error
        wait_for(lambda: os.listdir(mnt / "uploads") == [], 30, "uploads/ to empty")
    assert len(succeeded) >= rounds
    stored = stored_files(orthanc)
    assert all(payload in stored for payload in succeeded)
    assert all(payload in payloads for payload in stored)


@pytest.mark.allow_warnings
def test_a_frozen_orthanc_is_asked_afterwards_not_guessed(server: OrthancServer, orthanc: OrthancClient,
                                                          tmp_path: Path) -> None:
    """Orthanc frozen (SIGSTOP) while a file is sent: the writer gets EIO within the timeout, the file
    stays "not confirmed"; once Orthanc runs again (and stored it), touch finds it there."""
    [payload] = data.instances(1, "FRZ")
    (tmp_path / "x.dcm").write_bytes(payload)
    with mounted(server.url, tmp_path, "--timeout", "2", expect_warnings=True) as mnt:
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            result = cp(tmp_path / "x.dcm", mnt / "uploads")
            took = time.monotonic() - started
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert result.returncode != 0 and "Input/output error" in result.stderr, result
        assert took < 10, took  # the send's timeout, plus the short question that follows
        kept = mnt / "uploads" / "x.dcm"
        assert status(kept).startswith("not confirmed"), status(kept)
        wait_for(lambda: len(orthanc.get_json("/instances")) == 1, 30, "Orthanc to store what it had received")
        wait_for(lambda: subprocess.run(["touch", kept]).returncode == 0, 30, "touch to confirm the upload")
        assert os.listdir(mnt / "uploads") == []
    assert stored_files(orthanc) == [payload]


@pytest.mark.parametrize("size", ["small", "big"])  # sent from the loop; sent from a thread
@pytest.mark.parametrize("losses", ["once", "always"])
def test_a_lost_answer_is_resolved_by_asking(server: OrthancServer, orthanc: OrthancClient, tmp_path: Path,
                                             size: str, losses: str) -> None:
    """A proxy forwards every POST /instances to Orthanc, which stores the file, but drops the answer:
    once (the retry hears AlreadyStored, and the file is checked to be the same), or always (Orthanc
    is asked for the instance the file's UIDs name).  Either way cp succeeds and the file is stored once."""
    [payload] = data.instances(1, "LOST", **({"frames": 20, "rows": 512, "columns": 512} if size == "big" else {}))
    (tmp_path / "x.dcm").write_bytes(payload)
    proxy = Proxy(server.port)
    proxy.drop_answers_to = b"POST /instances"
    try:
        with mounted(proxy.url, tmp_path, expect_warnings=losses == "always") as mnt:  # "Orthanc is unavailable"
            if losses == "once":
                threading.Thread(target=_stop_dropping_after_one, args=(proxy,), daemon=True).start()
            result = cp(tmp_path / "x.dcm", mnt / "uploads")
            assert result.returncode == 0, result
            assert os.listdir(mnt / "uploads") == []
    finally:
        proxy.close()
    assert proxy.drops >= 1
    assert stored_files(orthanc) == [payload]


def _stop_dropping_after_one(proxy: Proxy) -> None:
    wait_for(lambda: proxy.drops >= 1, 30, "an answer to be dropped")
    proxy.drop_answers_to = None


def test_alreadystored_of_another_file_is_not_taken_for_success(server: OrthancServer, orthanc: OrthancClient,
                                                                tmp_path: Path) -> None:
    """Orthanc keeps the first file it got for a set of UIDs and answers AlreadyStored to any other:
    the second writer is told (EEXIST) and its file stays, instead of a silent success."""
    first, second = data.two_versions()
    orthanc.upload(first)
    (tmp_path / "x.dcm").write_bytes(second)
    with mounted(server.url, tmp_path, expect_warnings=True) as mnt:
        result = cp(tmp_path / "x.dcm", mnt / "uploads")
        assert result.returncode != 0 and "File exists" in result.stderr, result
        assert "another file with these UIDs" in status(mnt / "uploads" / "x.dcm")
        (tmp_path / "same.dcm").write_bytes(first)
        assert cp(tmp_path / "same.dcm", mnt / "uploads").returncode == 0  # the very same file: stored
    assert stored_files(orthanc) == [first]


def test_a_forked_childs_close_does_not_send_half_a_file(server: OrthancServer, orthanc: OrthancClient,
                                                         tmp_path: Path) -> None:
    """A writer that starts a program half way through: the child's copy of the descriptor is closed at
    its exec (close-on-exec), which the kernel reports as a close of the file; the half written so
    far must not be sent.  The writer's own close sends the whole file."""
    [payload] = data.instances(1, "FORK", frames=4, rows=256, columns=256)
    with mounted(server.url, tmp_path) as mnt:
        with open(mnt / "uploads" / "x.dcm", "wb", buffering=0) as file:
            file.write(payload[: len(payload) // 2])
            assert subprocess.run(["true"]).returncode == 0
            assert orthanc.get_json("/instances") == []
            file.write(payload[len(payload) // 2:])
        assert os.listdir(mnt / "uploads") == []
    assert stored_files(orthanc) == [payload]


@pytest.mark.allow_warnings
def test_files_being_written_when_the_mount_dies_are_shown_again(server: OrthancServer, orthanc: OrthancClient,
                                                                 tmp_path: Path) -> None:
    """SIGKILL while a file is half written: at the next mount it is in uploads/ under its name, marked
    incomplete, and never sent, not even by touch."""
    [payload] = data.instances(1, "CRASH")
    cache = tmp_path / "cache"
    (tmp_path / "mnt").mkdir(exist_ok=True)
    process = MountProcess(server.url, tmp_path / "mnt", "--cache-dir", str(cache), log_dir=tmp_path)
    process.wait_mounted()
    writer = os.open(tmp_path / "mnt" / "uploads" / "half.dcm", os.O_WRONLY | os.O_CREAT)
    os.write(writer, payload[:1000])
    process.process.kill()
    process.process.wait(30)
    with contextlib.suppress(OSError):  # ENOTCONN: nobody serves the mount any more
        os.close(writer)
    subprocess.run(["fusermount3", "-u", "-z", str(tmp_path / "mnt")], check=False)
    with mounted(server.url, tmp_path, "--cache-dir", str(cache), expect_warnings=True) as mnt:
        kept = mnt / "uploads" / "half.dcm"
        assert kept.read_bytes() == payload[:1000]
        assert "interrupted while it was written" in status(kept)
        assert subprocess.run(["touch", kept]).returncode != 0
    assert orthanc.get_json("/instances") == []


def test_names_and_entries_cannot_forge_report_lines(server: OrthancServer, tmp_path: Path) -> None:
    fake = "\n    2026-01-01 00:00:00  stored as instance 00000000 (Success)\nx"
    archive = tmp_path / "a.zip"
    archive.write_bytes(data.zip_of({f"entry{fake}.dcm": data.instances(1)[0][:500]}))
    with mounted(server.url, tmp_path, expect_warnings=True) as mnt:
        (mnt / "uploads" / f"note{fake}.txt").write_text("not DICOM")
        assert cp(archive, mnt / "uploads").returncode != 0
        report = (mnt / "uploads" / REPORT).read_text()
        lines = report.splitlines()
        assert not any(line.startswith("    2026-01-01") for line in lines), report
        assert sum("stored as instance 00000000" in line for line in lines) == 2  # inside the escaped names
        assert all("\n" not in status(p) for p in (mnt / "uploads").iterdir() if p.name != REPORT)
    log = (tmp_path / "mount-mnt.log").read_text()
    assert not any(line.startswith("    2026-01-01") for line in log.splitlines())


def test_a_zipped_cd_leaves_once_its_images_are_stored(server: OrthancServer, orthanc: OrthancClient,
                                                       tmp_path: Path) -> None:
    cd = tmp_path / "CD"
    cd.mkdir()
    data.write_cd(cd, 4)
    (cd / "AUTORUN.INF").write_text("[autorun]\nopen=VIEWER\\VIEWER.EXE\n")
    entries = {str(p.relative_to(cd)): p.read_bytes() for p in cd.rglob("*") if p.is_file()}
    (tmp_path / "cd.zip").write_bytes(data.zip_of(entries))
    with mounted(server.url, tmp_path) as mnt:
        assert cp(tmp_path / "cd.zip", mnt / "uploads").returncode == 0
        assert not (mnt / "uploads" / "cd.zip").exists()
        report = (mnt / "uploads" / REPORT).read_text()
        for name in ("README.TXT", "VIEWER/VIEWER.EXE", "AUTORUN.INF"):
            assert f"- {name}: not DICOM" in report, report
        assert "- DICOMDIR" not in report  # an index, not a file that was left out
        (mnt / "uploads" / REPORT).unlink()  # clears the notes
        assert os.listdir(mnt / "uploads") == []
    assert len(orthanc.get_json("/instances")) == 4
    log = (tmp_path / "mount-mnt.log").read_text()
    assert "entry README.TXT not sent" in log


def test_uploads_folder_serves_one_process_at_a_time(server: OrthancServer, tmp_path: Path) -> None:
    """Two processes on one cache directory would adopt each other's files being written."""
    with mounted(server.url, tmp_path):
        other = tmp_path / "other"
        other.mkdir()
        result = subprocess.run([sys.executable, "-m", "orthancfs", "mount", "--url", server.url, "--cache-dir",
                                 str(tmp_path / "cache"), str(other)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 1 and "used by another orthancfs process" in result.stderr, result
        assert "Traceback" not in result.stderr


def test_the_instance_a_file_names_is_the_one_orthanc_makes(tmp_path: Path) -> None:
    """What settles a lost answer: the ID computed from a file's UIDs is Orthanc's own, also for a
    PatientID with leading spaces, a backslash in it, or characters beyond ASCII."""
    odd = [Spec(pid, "Odd^Ids", generate_uid(), generate_uid()) for pid in
           ("  ODD:ID*  ", "DUP\\1", LONG_ID, "Müller", "")]
    with OrthancServer(tmp_path / "orthanc") as server, server.client() as client:
        for spec in odd:
            content = make_dicom(spec)
            path = tmp_path / "x.dcm"
            path.write_bytes(content)
            with open(path, "rb") as file:
                assert _instance_id(file.fileno()) == client.upload(content)["ID"], spec.patient_id
