"""Soak: writers and readers on one mount for minutes; every file accounted for, nothing held.

Starts a private Orthanc with instances for the readers, mounts it with orthancfs, then for
`--seconds` (default 180) runs `--writers` threads (default 4) that each `cp` newly generated
DICOM files into uploads/ one after another, and `--readers` threads (default 16) that read
random instances through by-uids/ and compare them with what was stored.  Meanwhile it samples
the mount process's open descriptors and resident memory every second.

At the end every file a `cp` reported written must be in Orthanc byte for byte, every `cp` that
failed must have its file in uploads/ with a reason, no read may have returned wrong bytes, and
the descriptors and memory of the last minute must be those of the first (flat): it prints the
figures and exits non-zero otherwise.  `--output FILE` replaces the soak section of that file.

    python bench/soak.py [--seconds 180] [--writers 4] [--readers 16] [--output bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pydicom.uid import generate_uid  # noqa: E402
from sections import write_section  # noqa: E402

from orthancfs.demo.samples import Spec, make_dicom  # noqa: E402
from orthancfs.demo.server import OrthancServer  # noqa: E402


@dataclass
class Tally:
    written: list[bytes] = field(default_factory=list)  # cp succeeded
    failed: list[tuple[str, bytes, str]] = field(default_factory=list)  # (name, content, cp's words)
    reads: int = 0
    wrong_reads: int = 0
    read_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def write_loop(mnt: Path, source_dir: Path, number: int, until: float, tally: Tally) -> None:
    n = 0
    while time.monotonic() < until:
        n += 1
        content = make_dicom(Spec(f"SOAK{number}", f"Soak^Writer{number}", generate_uid(), generate_uid(),
                                  rows=random.choice((32, 128, 512)), columns=256))
        source = source_dir / f"w{number}-{n}.dcm"
        source.write_bytes(content)
        target = mnt / "uploads" / f"w{number}" / f"{n}.dcm"
        target.parent.mkdir(exist_ok=True)
        done = subprocess.run(["cp", str(source), str(target)], capture_output=True, text=True)
        source.unlink()
        with tally.lock:
            if done.returncode == 0:
                tally.written.append(content)
            else:
                tally.failed.append((f"w{number}/{n}.dcm", content, done.stderr.strip()))


def read_loop(paths: list[tuple[Path, bytes]], until: float, tally: Tally) -> None:
    while time.monotonic() < until:
        path, expected = random.choice(paths)
        try:
            same = path.read_bytes() == expected
        except OSError as exc:
            with tally.lock:
                tally.read_errors.append(str(exc))
            continue
        with tally.lock:
            tally.reads += 1
            tally.wrong_reads += not same


def sample(pid: int) -> tuple[int, float]:
    """(open descriptors, resident MiB) of process `pid`."""
    descriptors = len(os.listdir(f"/proc/{pid}/fd"))
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return descriptors, int(line.split()[1]) / 1024
    return descriptors, 0.0


def by_uids_paths(client, mnt: Path) -> list[tuple[Path, bytes]]:  # noqa: ANN001 - an OrthancClient
    found = []
    for item in client.get_json("/instances", params={"expand": ""}):
        series = client.get_json(f"/series/{item['ParentSeries']}")
        study = client.get_json(f"/studies/{series['ParentStudy']}")
        path = mnt / "by-uids" / study["MainDicomTags"]["StudyInstanceUID"] / \
            series["MainDicomTags"]["SeriesInstanceUID"] / f"{item['MainDicomTags']['SOPInstanceUID']}.dcm"
        found.append((path, client.get_bytes(f"/instances/{item['ID']}/file")))
    return found


def run(args: argparse.Namespace) -> tuple[str, bool]:
    work = Path(tempfile.mkdtemp(prefix="orthancfs-soak-"))
    with OrthancServer(work / "orthanc") as server, server.client() as client:
        for n in range(args.instances):
            client.upload(make_dicom(Spec("READ", "Soak^Reader", generate_uid(), generate_uid(),
                                          rows=random.choice((32, 256, 512)), columns=512, instance_number=n)))
        mnt = work / "mnt"
        mnt.mkdir()
        mount = subprocess.Popen([sys.executable, "-m", "orthancfs", "mount", "--url", server.url, "--cache-dir",
                                  str(work / "cache"), "--log-file", str(work / "mount.log"), str(mnt)])
        deadline = time.monotonic() + 60
        while not os.path.ismount(mnt):
            if time.monotonic() > deadline or mount.poll() is not None:
                raise SystemExit("the mount did not come up")
            time.sleep(0.05)
        try:
            paths = by_uids_paths(client, mnt)
            tally, samples = Tally(), []
            until = time.monotonic() + args.seconds
            threads = [threading.Thread(target=write_loop, args=(mnt, work, n, until, tally)) for n in
                       range(args.writers)]
            threads += [threading.Thread(target=read_loop, args=(paths, until, tally)) for _ in range(args.readers)]
            for thread in threads:
                thread.start()
            while time.monotonic() < until:
                samples.append(sample(mount.pid))
                time.sleep(1)
            for thread in threads:
                thread.join()
            samples.append(sample(mount.pid))
            kept = {str(p.relative_to(mnt / "uploads")): p.read_bytes() for p in (mnt / "uploads").rglob("*.dcm")}
            reasons = {name: os.getxattr(mnt / "uploads" / name, "user.orthancfs.status").decode() for name in kept}
            stored = {bytes(client.get_bytes(f"/instances/{i}/file")) for i in client.get_json("/instances")}
        finally:
            mount.terminate()
            mount.wait(60)
        return verdict(args, tally, samples, kept, reasons, stored)


def verdict(args: argparse.Namespace, tally: Tally, samples: list[tuple[int, float]], kept: dict[str, bytes],
            reasons: dict[str, str], stored: set[bytes]) -> tuple[str, bool]:
    missing = [c for c in tally.written if c not in stored]
    unaccounted = [name for name, content, _ in tally.failed if kept.get(name) != content or not reasons.get(name)]
    minute = max(1, min(60, len(samples) // 3))
    first, last = samples[:minute], samples[-minute:]
    fds_first, fds_last = statistics.median(s[0] for s in first), statistics.median(s[0] for s in last)
    rss_first, rss_last = statistics.median(s[1] for s in first), statistics.median(s[1] for s in last)
    flat = fds_last <= fds_first + 4 and rss_last <= rss_first * 1.15 + 8
    ok = not missing and not unaccounted and tally.wrong_reads == 0 and not tally.read_errors and flat
    lines = [
        f"### Soak: {args.writers} writers and {args.readers} readers for {args.seconds} s "
        f"({time.strftime('%Y-%m-%d')}, `python bench/soak.py`)",
        "",
        "| what | figure |",
        "|---|---|",
        f"| files written (`cp` succeeded) | {len(tally.written)}, all in Orthanc byte for byte: "
        f"{'yes' if not missing else f'**no, {len(missing)} missing**'} |",
        f"| `cp` that failed | {len(tally.failed)}, each kept in uploads/ with its reason: "
        f"{'yes' if not unaccounted else f'**no: {unaccounted[:3]}**'} |",
        f"| reads (whole files through by-uids/) | {tally.reads}, wrong bytes: {tally.wrong_reads}, "
        f"errors: {len(tally.read_errors)} |",
        f"| open descriptors of the mount, first / last minute (median) | {fds_first:.0f} / {fds_last:.0f} |",
        f"| resident memory, first / last minute (median) | {rss_first:.0f} / {rss_last:.0f} MiB |",
        f"| verdict | {'every file accounted for, nothing held' if ok else '**FAILED**'} |",
    ]
    return "\n".join(lines), ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=180)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--instances", type=int, default=200, help="instances for the readers")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    section, ok = run(args)
    print(section)
    if args.output:
        write_section(args.output, "soak", section)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
