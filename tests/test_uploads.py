"""uploads/ through a real mount: cp, cp -r, ZIPs, refusals kept with reasons, renames, parallel copies."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from orthancfs.demo.server import OrthancServer
from orthancfs.errors import UploadRejected
from orthancfs.orthanc import OrthancClient
from orthancfs.tree.ingest import HEAD_BYTES, FileType, Ingester, ZipLimits, classify, media_storage_sop_class
from orthancfs.tree.ledger import Ledger

from . import uploads_data as data
from .conftest import mounted
from .helpers import wait_for

STATUS = "user.orthancfs.status"
REPORT = "ORTHANCFS-REPORT.txt"


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


def count(client: OrthancClient, level: str = "instances") -> int:
    return len(client.get_json(f"/{level}"))


def uploads_empty(mnt: Path) -> bool:
    return os.listdir(mnt / "uploads") == []


def test_a_copied_file_is_ingested_and_visible_at_once(server: OrthancServer, orthanc: OrthancClient,
                                                       tmp_path: Path) -> None:
    [first, second] = data.instances(2, "UP1")
    (tmp_path / "a.dcm").write_bytes(first)
    (tmp_path / "b.dcm").write_bytes(second)
    with mounted(server.url, tmp_path) as mnt:  # default --metadata-ttl: caches must be invalidated
        assert os.listdir(mnt / "by-patients") == []
        assert cp(tmp_path / "a.dcm", mnt / "uploads").returncode == 0
        assert uploads_empty(mnt)
        assert os.listdir(mnt / "by-patients") == ["UP1 - Upload^UP1"]
        assert cp(tmp_path / "b.dcm", mnt / "uploads").returncode == 0
        found = subprocess.run(["find", mnt / "by-uids", "-name", "*.dcm"], capture_output=True, text=True).stdout
        assert len(found.split()) == 2
        for view in ("by-studies", "by-dates"):
            assert len(list((mnt / view).rglob("*.dcm"))) == 2
    assert count(orthanc) == 2


def test_a_cd_with_dicomdir_and_other_files(server: OrthancServer, orthanc: OrthancClient, tmp_path: Path) -> None:
    cd = tmp_path / "CDROM"
    cd.mkdir()
    data.write_cd(cd, 5)
    with mounted(server.url, tmp_path) as mnt:
        result = cp("-r", cd, mnt / "uploads")
        assert result.returncode == 0, result.stderr
        assert count(orthanc) == 5
        kept = sorted(str(p.relative_to(mnt / "uploads")) for p in (mnt / "uploads").rglob("*") if p.is_file())
        assert kept == ["CDROM/README.TXT", "CDROM/VIEWER/VIEWER.EXE", REPORT]
        assert (mnt / "uploads/CDROM/README.TXT").read_bytes() == (cd / "README.TXT").read_bytes()
        assert "not DICOM" in os.getxattr(mnt / "uploads/CDROM/README.TXT", STATUS).decode()
        # The emptied image folders go away once idle; folders still holding kept files stay.
        wait_for(lambda: sorted(os.listdir(mnt / "uploads/CDROM")) == ["README.TXT", "VIEWER"], 30,
                 "emptied folders to be cleaned up")
        subprocess.run(["rm", "-r", mnt / "uploads/CDROM"], check=True)
        assert uploads_empty(mnt)


def test_a_zip_of_100_instances(server: OrthancServer, orthanc: OrthancClient, tmp_path: Path) -> None:
    archive = tmp_path / "study.zip"
    archive.write_bytes(data.zip_of({f"IMG/{n:04d}.dcm": d for n, d in enumerate(data.instances(100))}))
    with mounted(server.url, tmp_path) as mnt:
        assert cp(archive, mnt / "uploads").returncode == 0
        assert uploads_empty(mnt)
        assert count(orthanc) == 100
        assert len(list((mnt / "by-patients").rglob("*.dcm"))) == 100


def test_a_text_file_is_kept_and_cp_succeeds(server: OrthancServer, orthanc: OrthancClient, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image\n")
    with mounted(server.url, tmp_path) as mnt:
        assert cp(tmp_path / "notes.txt", mnt / "uploads").returncode == 0
        kept = mnt / "uploads" / "notes.txt"
        assert kept.read_text() == "not an image\n"
        assert os.getxattr(kept, STATUS).decode() == "not DICOM: nothing was sent to Orthanc"
        report = (mnt / "uploads" / REPORT).read_text()
        assert "notes.txt" in report and "not DICOM" in report
        kept.unlink()  # rm clears it, report included
        assert uploads_empty(mnt)
    assert count(orthanc) == 0


def test_a_kept_files_attributes_stay_true_while_it_is_edited(server: OrthancServer, tmp_path: Path) -> None:
    """The kernel may cache a staged file's attributes (not its name): every change made through
    the mount must show at once, through a descriptor opened earlier (asked first: a path is
    looked up anew, which refreshes the attributes) and through its path."""
    (tmp_path / "notes.txt").write_text("not an image\n")
    with mounted(server.url, tmp_path) as mnt:
        assert cp(tmp_path / "notes.txt", mnt / "uploads").returncode == 0
        kept = mnt / "uploads" / "notes.txt"
        with open(kept, "rb") as reader:
            with open(kept, "ab") as writer:
                writer.write(b"more\n")
            assert os.fstat(reader.fileno()).st_size == os.stat(kept).st_size == 18
            os.truncate(kept, 3)
            assert os.fstat(reader.fileno()).st_size == os.stat(kept).st_size == 3
            os.utime(kept, ns=(1_000_000_000, 2_000_000_000))
            assert os.fstat(reader.fileno()).st_mtime_ns == os.stat(kept).st_mtime_ns == 2_000_000_000
            os.chmod(kept, 0o640)
            assert os.fstat(reader.fileno()).st_mode & 0o777 == os.stat(kept).st_mode & 0o777 == 0o640
            assert reader.read() == b"not"


@pytest.mark.parametrize("damage", ["truncated", "no SOPInstanceUID", "no StudyInstanceUID"])
def test_a_refused_dicom_fails_at_close_and_is_kept(server: OrthancServer, orthanc: OrthancClient, tmp_path: Path,
                                                    damage: str) -> None:
    [good] = data.instances(1)
    bad = {"truncated": good[:1000], "no SOPInstanceUID": data.without_tag(good, "SOPInstanceUID"),
           "no StudyInstanceUID": data.without_tag(good, "StudyInstanceUID")}[damage]
    source = tmp_path / "bad.dcm"
    source.write_bytes(bad)
    with mounted(server.url, tmp_path, expect_warnings=True) as mnt:
        result = cp(source, mnt / "uploads")
        assert result.returncode != 0 and "Invalid argument" in result.stderr, result
        kept = mnt / "uploads" / "bad.dcm"
        assert kept.read_bytes() == bad
        reason = os.getxattr(kept, STATUS).decode()
        assert reason.startswith("refused by Orthanc") and "HTTP" in reason, reason
        assert "bad.dcm" in (mnt / "uploads" / REPORT).read_text()
    assert count(orthanc) == 0


def test_a_zip_with_one_bad_entry(server: OrthancServer, orthanc: OrthancClient, tmp_path: Path) -> None:
    good = data.instances(3)
    entries = {"a.dcm": good[0], "b.dcm": good[1], "broken.dcm": good[2][:700], "readme.txt": b"hello"}
    (tmp_path / "mixed.zip").write_bytes(data.zip_of(entries))
    with mounted(server.url, tmp_path, expect_warnings=True) as mnt:
        result = cp(tmp_path / "mixed.zip", mnt / "uploads")
        assert result.returncode != 0, result  # one entry was refused: the writer hears it
        assert count(orthanc) == 2
        assert os.path.exists(mnt / "uploads" / "mixed.zip")
        assert "2 of 4 entries stored" in os.getxattr(mnt / "uploads" / "mixed.zip", STATUS).decode()
        report = (mnt / "uploads" / REPORT).read_text()
        assert "broken.dcm: refused by Orthanc" in report and "readme.txt: not DICOM" in report
        assert "a.dcm: stored as instance" in report


def test_zip_bomb_is_refused(server: OrthancServer, tmp_path: Path) -> None:
    (tmp_path / "bomb.zip").write_bytes(data.zip_of({"zeros.dcm": bytes(300 << 20)}))
    with mounted(server.url, tmp_path, expect_warnings=True) as mnt:
        result = cp(tmp_path / "bomb.zip", mnt / "uploads")
        assert result.returncode != 0
        assert "ZIP bomb" in os.getxattr(mnt / "uploads" / "bomb.zip", STATUS).decode()


def test_orthanc_down_during_upload_then_retry(server: OrthancServer, tmp_path: Path) -> None:
    [good] = data.instances(1)
    (tmp_path / "x.dcm").write_bytes(good)
    with mounted(server.url, tmp_path, "--timeout", "3", expect_warnings=True) as mnt:
        server.stop()
        result = cp(tmp_path / "x.dcm", mnt / "uploads")
        assert result.returncode != 0 and "Input/output error" in result.stderr, result
        kept = mnt / "uploads" / "x.dcm"
        assert kept.read_bytes() == good
        assert "unavailable" in os.getxattr(kept, STATUS).decode()
        server.start()

        def retried() -> bool:  # touch retries (and fails fast while the outage window lasts)
            return subprocess.run(["touch", kept], capture_output=True).returncode == 0

        wait_for(retried, 30, "touch to send the kept file")
        assert uploads_empty(mnt)
        with server.client() as client:
            assert count(client) == 1


def test_kept_files_survive_a_remount(server: OrthancServer, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    with mounted(server.url, tmp_path) as mnt:
        cp(tmp_path / "keep.txt", mnt / "uploads")
    with mounted(server.url, tmp_path) as mnt:
        assert (mnt / "uploads" / "keep.txt").read_text() == "x"
        assert "not DICOM" in os.getxattr(mnt / "uploads" / "keep.txt", STATUS).decode()


def test_write_to_a_temporary_name_then_rename(server: OrthancServer, orthanc: OrthancClient, tmp_path: Path) -> None:
    """What GNOME Files and editors do: write `.goutputstream-XXXX`, close it, rename it."""
    [good] = data.instances(1)
    with mounted(server.url, tmp_path) as mnt:
        temporary = mnt / "uploads" / ".goutputstream-AB12CD"
        temporary.write_bytes(good)
        assert count(orthanc) == 0 and temporary.read_bytes() == good
        assert "renamed" in os.getxattr(temporary, STATUS).decode()
        temporary.rename(mnt / "uploads" / "final.dcm")
        assert count(orthanc) == 1
        assert uploads_empty(mnt)


def test_folders_and_renames_inside_uploads(server: OrthancServer, tmp_path: Path) -> None:
    with mounted(server.url, tmp_path) as mnt:
        folder = mnt / "uploads" / "a" / "b"
        folder.mkdir(parents=True)
        (folder / "note.txt").write_text("hello")
        (mnt / "uploads" / "a").rename(mnt / "uploads" / "c")
        moved = mnt / "uploads" / "c" / "b" / "note.txt"
        assert moved.read_text() == "hello"
        assert "not DICOM" in os.getxattr(moved, STATUS).decode()  # the reason follows the file
        with pytest.raises(OSError) as caught:
            os.rmdir(mnt / "uploads" / "c")
        assert caught.value.errno == errno.ENOTEMPTY
        os.chmod(moved, 0o600)
        assert (os.stat(moved).st_mode & 0o777) == 0o600


def test_names_that_cannot_be(server: OrthancServer, tmp_path: Path) -> None:
    with mounted(server.url, tmp_path) as mnt:
        uploads = os.fsencode(mnt / "uploads")
        with pytest.raises(OSError) as caught:
            os.open(uploads + b"/bad\xff.dcm", os.O_CREAT | os.O_WRONLY)
        assert caught.value.errno == errno.EINVAL
        with pytest.raises(OSError) as caught:
            os.open(uploads + b"/" + b"x" * 256, os.O_CREAT | os.O_WRONLY)
        assert caught.value.errno == errno.ENAMETOOLONG
        with pytest.raises(OSError) as caught:
            (mnt / "uploads" / REPORT).write_text("mine")
        assert caught.value.errno == errno.EINVAL


def test_parallel_copies_of_500_files(server: OrthancServer, orthanc: OrthancClient, tmp_path: Path) -> None:
    sources = []
    for batch in range(4):
        folder = tmp_path / f"batch{batch}"
        folder.mkdir()
        for n, content in enumerate(data.instances(125, f"PAR{batch}")):
            (folder / f"{n:03d}.dcm").write_bytes(content)
        sources.append(folder)
    with mounted(server.url, tmp_path) as mnt:
        copies = [subprocess.Popen(["cp", "-r", folder, mnt / "uploads"]) for folder in sources]
        assert [copy.wait(300) for copy in copies] == [0, 0, 0, 0]
        assert count(orthanc) == 500
        wait_for(lambda: uploads_empty(mnt), 30, "uploads/ to empty")


def test_uploads_do_not_block_reads(server: OrthancServer, orthanc: OrthancClient, tmp_path: Path) -> None:
    [big] = data.instances(1, "BIG", frames=40, rows=512, columns=512)
    orthanc.upload(big)
    folder = tmp_path / "many"
    folder.mkdir()
    for n, content in enumerate(data.instances(200, "MANY")):
        (folder / f"{n}.dcm").write_bytes(content)
    with mounted(server.url, tmp_path) as mnt:
        [big_path] = list((mnt / "by-patients").rglob("*.dcm"))
        copy = subprocess.Popen(["cp", "-r", folder, mnt / "uploads"])
        reads = []
        while copy.poll() is None:
            reads.append(big_path.read_bytes() == big)
        assert copy.wait() == 0 and reads and all(reads)
        assert count(orthanc) == 201


def test_threads_writing_the_same_folder(server: OrthancServer, orthanc: OrthancClient, tmp_path: Path) -> None:
    payloads = data.instances(20, "THR")
    with mounted(server.url, tmp_path) as mnt:
        folder = mnt / "uploads" / "shared"
        folder.mkdir()

        def write(n: int) -> None:
            (folder / f"{n}.dcm").write_bytes(payloads[n])

        threads = [threading.Thread(target=write, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert count(orthanc) == 20


def test_archives_with_absurd_entry_counts_are_refused_unopened(orthanc: OrthancClient, tmp_path: Path) -> None:
    archive = tmp_path / "many.zip"
    archive.write_bytes(data.zip_of({f"{n}.txt": b"x" for n in range(11)}))
    ingester = Ingester(orthanc, str(tmp_path), ZipLimits(max_entries=10))
    with open(archive, "rb") as file:
        outcome = ingester.send(file.fileno(), ingester.examine(file.fileno()))
    assert not outcome.consumed and "11 entries, more than the 10 allowed" in outcome.reason
    assert isinstance(outcome.error, UploadRejected) and outcome.entries == []


def test_the_meta_header_is_read_as_pydicom_reads_it(tmp_path: Path) -> None:
    """Our quick (0002,0002) reader agrees with pydicom, and gives up (None) on a cut-off header."""
    data.write_cd(tmp_path / "cd", 2)
    files = [p for p in (tmp_path / "cd").rglob("*") if p.is_file() and p.read_bytes()[128:132] == b"DICM"]
    assert {p.name for p in files} >= {"DICOMDIR"} and len(files) == 3
    for path in files:
        head = path.read_bytes()[:HEAD_BYTES]
        assert media_storage_sop_class(head) == str(dcmread(path).file_meta.MediaStorageSOPClassUID)
        with open(path, "rb") as file:
            kind = classify(head, file.fileno())
        assert kind is (FileType.DICOMDIR if path.name == "DICOMDIR" else FileType.DICOM)
        assert media_storage_sop_class(head[:150]) is None


def test_a_swept_folder_is_gone_for_the_kernel_too(server: OrthancServer, orthanc: OrthancClient,
                                                   tmp_path: Path) -> None:
    """Folders of uploads/ are cached by the kernel; when the sweep removes one, its name is taken back at once."""
    folder = tmp_path / "series"
    folder.mkdir()
    for n, instance in enumerate(data.instances(3, "SW1")):
        (folder / f"{n}.dcm").write_bytes(instance)
    with mounted(server.url, tmp_path) as mnt:  # names cached for 10 s by default
        assert cp("-r", folder, mnt / "uploads").returncode == 0
        assert (mnt / "uploads/series").is_dir()  # the kernel now holds the name
        wait_for(lambda: uploads_empty(mnt), 30, "the emptied folder to be swept")
        wait_for(lambda: not (mnt / "uploads/series").exists(), 1.0, "the kernel to forget the swept folder")
        assert cp("-r", folder, mnt / "uploads").returncode == 0  # the same copy again, at once
    assert count(orthanc) == 3


class CountingLedger(Ledger):
    saves = 0

    def _save(self) -> None:
        self.saves += 1
        super()._save()


def test_the_ledger_writes_a_burst_of_changes_together_and_everything_by_close(tmp_path: Path) -> None:
    """A drop of many files that stay (not DICOM, refused) wrote the whole ledger once per file."""
    path = tmp_path / "ledger.json"
    ledger = CountingLedger(path)
    for n in range(1000):
        ledger.forget(f"f{n}", below=False)  # as each new upload does
        ledger.record(f"f{n}", "not a DICOM file")
    wait_for(lambda: path.exists() and len(json.loads(path.read_text())["kept"]) == 1000, 30, "the burst on disk")
    assert ledger.saves <= 5
    ledger.forget("f1", below=False)
    ledger.move("f2", "renamed")
    ledger.close()  # writes what is pending at once
    assert set(json.loads(path.read_text())["kept"]) == {f"f{n}" for n in range(1000)} - {"f1", "f2"} | {"renamed"}
    ledger.record("late", "kept after close")  # written at once
    assert "late" in json.loads(path.read_text())["kept"]
    assert Ledger(path).get("renamed")["reason"] == "not a DICOM file"


@pytest.mark.allow_warnings
def test_a_ledger_that_cannot_be_written_says_so_and_keeps_its_records(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "not-a-folder").write_text("")
    ledger = Ledger(tmp_path / "not-a-folder" / "ledger.json")  # writing it fails (ENOTDIR, even as root)
    ledger.record("kept.txt", "not a DICOM file")
    wait_for(lambda: any("cannot write" in r.getMessage() for r in caplog.records), 30, "the warning")
    assert ledger.get("kept.txt")["reason"] == "not a DICOM file"  # still shown (xattr, report)
