"""A real `orthancfs mount` of a real Orthanc, used with real system calls and tools."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import signal
import stat
import subprocess
import threading
import unicodedata
from pathlib import Path

import pytest

from orthancfs.fuse.readahead import READ_AHEAD_KIB
from orthancfs.tree.staging import SpaceBudget

from . import dataset
from .conftest import LoadedOrthanc, mounted
from .helpers import wait_for

VIEWS = ["by-dates", "by-patients", "by-studies", "by-uids", "uploads"]  # (by-labels too, on 1.12)


def find_files(root: Path) -> list[str]:
    out = subprocess.run(["find", str(root), "-type", "f"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def test_root_and_views(mount: Path, orthanc: LoadedOrthanc) -> None:
    assert sorted(os.listdir(mount)) == dataset.root_views(orthanc.client)
    patients = set(os.listdir(mount / "by-patients"))
    assert patients >= dataset.EXPECTED_PATIENT_FOLDERS
    assert len(patients) == len(orthanc.client.get_json("/patients"))
    assert len(os.listdir(mount / "by-studies")) == len(orthanc.client.get_json("/studies"))
    assert os.listdir(mount / "uploads") == []


def test_find_sees_every_instance_in_every_view(mount: Path, orthanc: LoadedOrthanc) -> None:
    instances = len(orthanc.client.get_json("/instances"))
    series = len(orthanc.client.get_json("/series"))
    studies = len(orthanc.client.get_json("/studies"))
    for view in VIEWS[:3]:
        assert len(find_files(mount / view)) == instances, view
    assert len(find_files(mount / "by-uids")) == instances + series + studies  # + series.json, study.json


def test_attributes_come_from_orthanc_without_downloading(mount: Path, orthanc: LoadedOrthanc) -> None:
    sizes = {i["ID"]: i["FileSize"] for i in orthanc.client.get_json("/instances", params={"expand": ""})}
    before = orthanc.client.get_json("/statistics")
    for path in find_files(mount / "by-patients"):
        info = os.stat(path)
        assert info.st_size == sizes[Path(path).stem]
        assert stat.S_IMODE(info.st_mode) == 0o444 and stat.S_ISREG(info.st_mode)
        assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())
        assert info.st_mtime > 1_600_000_000
    folder = os.stat(mount / "by-patients" / "P-LI - 李^小龍")
    assert stat.S_IMODE(folder.st_mode) == 0o555 and stat.S_ISDIR(folder.st_mode)
    assert orthanc.client.get_json("/statistics") == before


def test_json_files_read_whole_and_parse(mount: Path) -> None:
    import json

    documents = [p for p in find_files(mount / "by-uids") if p.endswith(".json")]
    assert documents
    for path in documents:
        data = Path(path).read_bytes()
        assert json.loads(data)["Type"] in ("Study", "Series")
        assert len(data) == os.stat(path).st_size


def test_every_file_is_byte_identical_to_rest(mount: Path, orthanc: LoadedOrthanc) -> None:
    for path in find_files(mount / "by-studies"):
        expected = orthanc.client.get_bytes(f"/instances/{Path(path).stem}/file")
        assert Path(path).read_bytes() == expected, path


def big_file(mount: Path, orthanc: LoadedOrthanc) -> Path:
    [path] = [p for p in find_files(mount / "by-patients") if Path(p).stem == orthanc.big_instance_id]
    return Path(path)


def test_cmp_and_dcmdump_on_the_big_multiframe_file(mount: Path, orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    reference = tmp_path / "reference.dcm"
    reference.write_bytes(orthanc.client.get_bytes(f"/instances/{orthanc.big_instance_id}/file"))
    path = big_file(mount, orthanc)
    subprocess.run(["cmp", str(reference), str(path)], check=True)
    dump = subprocess.run(["dcmdump", str(path)], capture_output=True, text=True, check=True).stdout
    assert "Παπαδόπουλος^Νίκος" in dump and "NumberOfFrames" in dump


def test_the_kernel_reads_ahead_a_mebibyte(mount: Path) -> None:
    """Large files are read in 1 MiB requests instead of the kernel's 128 KiB window (readahead.py)."""
    if os.geteuid() != 0:
        pytest.skip("only root may change a mount's readahead")
    device = os.stat(mount).st_dev
    setting = Path("/sys/class/bdi", f"{os.major(device)}:{os.minor(device)}", "read_ahead_kb")
    # Raised just after the mount appears (once the kernel has our INIT answer): the fixture
    # waits for the mount only, as a user could; READY=1 for mount(8) and systemd comes after it.
    wait_for(lambda: int(setting.read_text()) == READ_AHEAD_KIB, 10, "the readahead to be raised")


def test_random_and_concurrent_reads(mount: Path, orthanc: LoadedOrthanc) -> None:
    expected = orthanc.client.get_bytes(f"/instances/{orthanc.big_instance_id}/file")
    path = big_file(mount, orthanc)
    small = find_files(mount / "by-uids")[:6]
    errors: list[str] = []

    def random_reader(seed: int) -> None:
        rng = random.Random(seed)
        with open(path, "rb", buffering=0) as file:
            for _ in range(200):
                offset, size = rng.randrange(len(expected) + 100), rng.choice([1, 511, 4096, 131072, 1 << 20])
                if os.pread(file.fileno(), size, offset) != expected[offset:offset + size]:
                    errors.append(f"{path} at {offset}+{size}")

    def whole_reader(name: str) -> None:
        if Path(name).read_bytes() != Path(name).read_bytes():
            errors.append(name)

    threads = [threading.Thread(target=random_reader, args=(seed,)) for seed in range(4)]
    threads += [threading.Thread(target=whole_reader, args=(name,)) for name in small]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(expected).digest()


@pytest.mark.parametrize("relative", [
    "nope", "by-patients/nope", "by-patients/P-LI - 李^小龍/nope", "by-dates/1998", "by-dates/2020/2020-02",
    "by-uids/1.2.3", "uploads/nope", "by-patients/P-LI - 李^小龍/19991231 - MR 脑/MR - T2/nope.dcm",
])
def test_missing_paths_are_enoent(mount: Path, relative: str) -> None:
    with pytest.raises(FileNotFoundError):
        os.listdir(mount / relative)
    with pytest.raises(FileNotFoundError):
        os.stat(mount / relative)


def test_a_file_is_not_a_directory(mount: Path) -> None:
    first = find_files(mount / "by-patients")[0]
    with pytest.raises(NotADirectoryError):
        os.listdir(first)
    with pytest.raises(OSError) as caught:
        os.stat(Path(first) / "x")
    assert caught.value.errno == errno.ENOTDIR


def test_the_views_refuse_changes(mount: Path) -> None:
    """Outside uploads/ nothing can be created, written, renamed or changed (and deletes are off)."""
    some_file = Path(find_files(mount / "by-patients")[0])
    attempts = [
        (lambda: (mount / "by-patients" / "new").mkdir(), errno.EACCES),
        (lambda: (mount / "by-patients" / "new.dcm").write_bytes(b"x"), errno.EACCES),
        (lambda: os.open(some_file, os.O_RDWR), errno.EACCES),
        (lambda: some_file.unlink(), errno.EACCES),
        (lambda: os.rmdir(some_file.parent), errno.EACCES),
        (lambda: some_file.rename(some_file.with_name("renamed.dcm")), errno.EPERM),
        (lambda: some_file.rename(mount / "uploads" / "moved.dcm"), errno.EXDEV),
        (lambda: os.utime(some_file), errno.EPERM),
        (lambda: os.chmod(some_file, 0o600), errno.EPERM),
        (lambda: os.rmdir(mount / "by-dates"), errno.EACCES),
        (lambda: os.symlink("x", mount / "uploads" / "link"), errno.EPERM),
    ]
    for attempt, expected in attempts:
        with pytest.raises(OSError) as caught:
            attempt()
        assert caught.value.errno == expected, (attempt, caught.value)


def df(path: Path, *fields: str) -> dict[str, int]:
    out = subprocess.run(["df", "-B1", f"--output={','.join(fields)}", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return dict(zip(fields, (int(value.rstrip("%")) for value in out.splitlines()[1].split()), strict=True))


def test_statfs(mount: Path, orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    assert os.statvfs(mount).f_namemax == 255
    assert orthanc.url in subprocess.run(["df", "-h", str(mount)], capture_output=True, text=True,
                                         check=True).stdout  # the source column names the server
    blocks = df(mount, "size", "used", "avail")
    orthanc_bytes = int(orthanc.client.get_json("/statistics")["TotalDiskSize"])  # a string
    assert blocks["size"] == blocks["used"] + blocks["avail"]  # Used was negative: free > total
    assert orthanc_bytes <= blocks["used"] < orthanc_bytes + 4096
    staging = df(tmp_path / "cache", "avail")["avail"]  # where uploads are staged, less what stays for reads
    reserve = SpaceBudget.for_disk(str(tmp_path / "cache"), 1 << 30).reserve
    assert abs(blocks["avail"] - (staging - reserve)) < 256 << 20  # (others write to that disk meanwhile)
    inodes = df(mount, "itotal", "iused", "iavail", "ipcent")
    assert inodes["iused"] == len(orthanc.client.get_json("/instances"))
    assert inodes["iavail"] > 0 and inodes["ipcent"] < 100  # 100% reads as a full disk
    # What GNOME Files checks before it copies.
    info = subprocess.run(["gio", "info", "-f", str(mount / "uploads")], capture_output=True, text=True,
                          check=True).stdout
    gio = dict(line.strip().split(": ", 1) for line in info.splitlines() if line.startswith("  filesystem::"))
    assert 0 < int(gio["filesystem::free"]) <= int(gio["filesystem::size"])
    assert int(gio["filesystem::used"]) == blocks["used"]


def test_owner_can_be_chosen(orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    with mounted(orthanc.url, tmp_path, "--uid", "1234", "--gid", "5678") as mountpoint:
        info = os.stat(mountpoint / "by-patients")
        assert (info.st_uid, info.st_gid) == (1234, 5678)


def test_names_and_inodes_are_stable_across_listings(mount: Path) -> None:
    first = {p: os.stat(p).st_ino for p in find_files(mount / "by-uids")}
    second = {p: os.stat(p).st_ino for p in find_files(mount / "by-uids")}
    assert first == second


def test_lookups_are_forgotten_when_the_kernel_drops_them(mount: Path) -> None:
    """Dropping the dentry cache makes the kernel send FORGET; later lookups still work."""
    before = find_files(mount)
    Path("/proc/sys/vm/drop_caches").write_text("2")
    assert find_files(mount) == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_unmount_cleanly(orthanc: LoadedOrthanc, tmp_path: Path, sig: int) -> None:
    context = mounted(orthanc.url, tmp_path)
    mountpoint = context.__enter__()
    os.listdir(mountpoint / "by-patients")
    assert context.process.stop(sig) == 0
    assert not os.path.ismount(mountpoint)
    assert "Traceback" not in context.process.log()


def test_getfattr_says_why_a_file_stays_in_uploads(mount: Path) -> None:
    """The README's way to ask (getfattr comes with `make`: Debian's attr)."""
    (mount / "uploads" / "notes.txt").write_text("not DICOM")
    shown = subprocess.run(["getfattr", "-n", "user.orthancfs.status", str(mount / "uploads" / "notes.txt")],
                           capture_output=True, text=True, check=True).stdout
    assert 'user.orthancfs.status="' in shown and "not DICOM" in shown, shown
    (mount / "uploads" / "notes.txt").unlink()


def test_no_name_hides_or_disguises_itself(mount: Path) -> None:
    """A leading dot would hide a patient from ls and file managers; format characters (bidi
    overrides, zero-width ones) make a name display reversed or empty."""
    shown = subprocess.run(["ls", str(mount / "by-patients")], capture_output=True, text=True, check=True).stdout
    assert "_HIDDEN - Evil_mcd.exe" in shown.splitlines()
    names = [name for _, folders, files in os.walk(mount) for name in folders + files]
    assert not [n for n in names if n.startswith(".")]
    assert not [n for n in names if any(unicodedata.category(c) in ("Cc", "Cf") for c in n)]
    study = os.listdir(mount / "by-patients" / "_HIDDEN - Evil_mcd.exe")
    assert study == ["20200101 - _"]  # the description was one RIGHT-TO-LEFT MARK: looked like "20200101 - "


def test_a_read_far_ahead_fetches_only_its_bytes_where_orthanc_takes_ranges(orthanc: LoadedOrthanc,
                                                                            tmp_path: Path) -> None:
    """Version-dependent: Orthanc 1.12.5 answers Range requests on an instance's attachment, so the last
    4 KiB of a cold 31 MB file come alone; 1.10 has none, and the whole file is downloaded first."""
    expected = orthanc.client.get_bytes(f"/instances/{orthanc.big_instance_id}/file")
    ranges = orthanc.client.capabilities.attachment_range
    with mounted(orthanc.url, tmp_path, "--debug") as mountpoint:
        [path] = [p for p in find_files(mountpoint / "by-patients") if Path(p).stem == orthanc.big_instance_id]
        with open(path, "rb") as file:
            file.seek(len(expected) - 4096)
            assert file.read() == expected[-4096:]
            log = (tmp_path / "mount-mnt.log").read_text()
            whole = f"GET /instances/{orthanc.big_instance_id}/file" in log
            assert ("attachments/dicom/data" in log, whole) == ((True, False) if ranges else (False, True)), log[-2000:]
            file.seek(0)
            assert file.read() == expected  # and then the whole file, as usual
