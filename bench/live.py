"""Live view: how soon what other clients add or delete shows in a mount, and what following costs.

Starts a private Orthanc (DICOM port open for dcmtk's storescu), loads the bench data set, and
measures on orthancfs mounts with today's defaults (following /changes) against the defaults
before it (`--no-follow --metadata-ttl 10`), in the same run:

- arrivals: a new study sent by REST (POST /instances) or by C-STORE (storescu), until it is
  listed in by-patients/, by-studies/, by-dates/ and by-uids/ (p50 and p99);
- deletions: DELETE /studies/{id} by another client, until the study is gone from by-studies/
  and by-patients/ and a file of it, opened before, gives ENOENT;
- a warm `find by-patients -type f` 60 s after the cold one, against rclone's, same wait;
- the follower's own load: requests per second and CPU of the mount process on an idle Orthanc,
  and while 1,000 instances a minute arrive.

    python bench/live.py [--arrivals 50] [--output bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import urllib3
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Mount, drop_caches, generate, post_one, timed  # noqa: E402
from sections import write_section  # noqa: E402

from orthancfs.demo.samples import Spec, make_dicom  # noqa: E402
from orthancfs.demo.server import OrthancServer, free_port  # noqa: E402

OLD_DEFAULTS = ("--no-follow", "--metadata-ttl", "10")
NEW_DATE, NEW_MONTH = "20240501", "by-dates/2024/2024-05"
POLL = 0.01  # how often the reader looks (a reader polling with ls: the measurement, not a wait)
TIMEOUT = 60.0


class Sender:
    """Another client: a script POSTing, a modality C-STOREing, a script DELETEing."""

    def __init__(self, server: OrthancServer, work: Path):
        self.server, self.work = server, work
        self.pool = urllib3.PoolManager()
        self.dicom_port = server.extra_config["DicomPort"]
        self.count = 0

    def new_study(self, how: str) -> tuple[str, str]:
        """Send one new patient's one-instance study; (PatientID, StudyInstanceUID)."""
        self.count += 1
        patient, study = f"LIVE{self.count:04d}", generate_uid()
        data = make_dicom(Spec(patient, f"Live^{self.count}", study, generate_uid(), study_date=NEW_DATE,
                               study_description="Arrival"))
        if how == "REST":
            if post_one(self.pool, self.server.url, data) >= 400:
                raise RuntimeError("POST failed")
        else:
            path = self.work / f"{patient}.dcm"
            path.write_bytes(data)
            subprocess.run(["storescu", "-aec", "ORTHANC", "127.0.0.1", str(self.dicom_port), str(path)],
                           check=True, capture_output=True)
        return patient, study

    def get(self, path: str) -> object:
        answer = self.pool.request("GET", f"{self.server.url}{path}")
        return json.loads(answer.data)

    def delete_study(self, study_id: str) -> None:
        answer = self.pool.request("DELETE", f"{self.server.url}/studies/{study_id}")
        if answer.status >= 400:
            raise RuntimeError(f"DELETE: HTTP {answer.status}")


def listed(folder: Path, prefix: str) -> bool:
    try:
        return any(name.startswith(prefix) for name in os.listdir(folder))
    except FileNotFoundError:
        return False


def shows_everywhere(mnt: Path, patient: str, study_uid: str) -> bool:
    return (listed(mnt / "by-patients", patient) and listed(mnt / "by-studies", patient)
            and listed(mnt / NEW_MONTH, patient) and listed(mnt / "by-uids", study_uid))


def until(condition: Callable[[], bool]) -> float:
    """Seconds until `condition` holds (polled every POLL)."""
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > TIMEOUT:
            raise RuntimeError("not within a minute")
        time.sleep(POLL)
    return time.perf_counter() - started


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def arrivals(server: OrthancServer, work: Path, sender: Sender, options: tuple[str, ...], count: int,
             how: str) -> list[float]:
    mount = Mount("orthancfs", server.url, work, options)
    try:
        mnt = Path(mount.target)
        for view in ("by-patients", "by-studies", "by-uids", "by-dates"):
            os.listdir(mnt / view)  # listed (cached) before anything arrives
        found = []
        for _ in range(count):
            time.sleep(random.uniform(0, 1))  # arrivals at random moments, not in step with the polls
            patient, study = sender.new_study(how)
            found.append(until(lambda patient=patient, study=study: shows_everywhere(mnt, patient, study)))
        return found
    finally:
        mount.close()


def deletions(server: OrthancServer, work: Path, sender: Sender, options: tuple[str, ...],
              count: int) -> list[float]:
    """Each time: a study of the data set, listed and one of its files read through the mount,
    deleted by another client; until by-studies/ lists one folder fewer, its by-uids/ folder is
    gone and opening the file read before fails with ENOENT."""
    mount = Mount("orthancfs", server.url, work, options)
    studies = [s for s in sender.get("/studies?expand") if s["PatientMainDicomTags"]["PatientID"].startswith("BP")]
    try:
        mnt = Path(mount.target)
        found = []
        for study in studies[:count]:
            uid = study["MainDicomTags"]["StudyInstanceUID"]
            listed_before = len(os.listdir(mnt / "by-studies"))
            some_file = next((mnt / "by-uids" / uid).rglob("*.dcm"))
            some_file.read_bytes()
            time.sleep(random.uniform(0, 2))  # at a random moment between two counts
            sender.delete_study(study["ID"])
            found.append(until(lambda n=listed_before - 1, uid=uid, some_file=some_file: len(
                os.listdir(mnt / "by-studies")) == n and not (mnt / "by-uids" / uid).exists() and gone(some_file)))
        return found
    finally:
        mount.close()


def gone(path: Path) -> bool:
    try:
        with open(path, "rb"):
            return False
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
        return True


def warm_walk_after(server: OrthancServer, work: Path, kind: str, options: tuple[str, ...], wait: float) -> float:
    """`find by-patients -type f` on a fresh mount, then again `wait` seconds later: the second."""
    drop_caches()
    mount = Mount(kind, server.url, work, options)
    try:
        find = ["find", str(Path(mount.target) / "by-patients"), "-type", "f"]
        timed(find)
        time.sleep(wait)  # the situation measured: a user comes back to the mount a minute later
        return timed(find)
    finally:
        mount.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(server: OrthancServer, work: Path, sender: Sender, seconds: float, per_minute: int) -> tuple[float, float]:
    """(requests per second, CPU share) of a mount nobody uses, over `seconds`, while `per_minute`
    instances arrive from another client (0: an idle Orthanc)."""
    mount = Mount("orthancfs", server.url, work)
    try:
        os.listdir(Path(mount.target) / "by-studies")
        time.sleep(3)  # past the start-up requests
        requests_before, cpu_before = mount.requests_so_far(), cpu_seconds(mount.process.pid)
        stop = threading.Event()
        feeder = threading.Thread(target=feed, args=(sender, per_minute, stop)) if per_minute else None
        if feeder:
            feeder.start()
        time.sleep(seconds)
        stop.set()
        if feeder:
            feeder.join()
        sent = mount.requests_so_far() - requests_before
        return sent / seconds, (cpu_seconds(mount.process.pid) - cpu_before) / seconds
    finally:
        mount.close()


def feed(sender: Sender, per_minute: int, stop: threading.Event) -> None:
    """Instances of new series of one study, at `per_minute`, until stopped."""
    study, series_uid, number = generate_uid(), generate_uid(), 0
    interval = 60.0 / per_minute
    next_at = time.monotonic()
    while not stop.is_set():
        number += 1
        if number % 100 == 0:
            series_uid = generate_uid()
        data = make_dicom(Spec("BUSY", "Busy^Modality", study, series_uid, study_date=NEW_DATE,
                               instance_number=number))
        post_one(sender.pool, sender.server.url, data)
        next_at += interval
        stop.wait(max(0.0, next_at - time.monotonic()))


def summary(values: list[float]) -> str:
    return f"p50 {percentile(values, 0.5):.2f} s, p99 {percentile(values, 0.99):.2f} s (n={len(values)})"


def run(args: argparse.Namespace) -> str:
    work = Path(tempfile.mkdtemp(prefix="orthancfs-live-"))
    dicom = {"DicomServerEnabled": True, "DicomPort": free_port(), "DicomAet": "ORTHANC"}
    with OrthancServer(work / "orthanc", config=dicom) as server:
        generate(server, args.patients, 3, 4, 10, 0)
        sender = Sender(server, work)
        rows = []
        for how in ("REST", "C-STORE"):
            ours = arrivals(server, work, sender, (), args.arrivals, how)
            before = arrivals(server, work, sender, OLD_DEFAULTS, args.baseline_arrivals, how)
            rows.append((f"a study sent by {how} listed in all four views", summary(ours), summary(before),
                         "p50 and p99 ≤ 2 s"))
            print(rows[-1], flush=True)
        ours = deletions(server, work, sender, (), args.deletions)
        before = deletions(server, work, sender, OLD_DEFAULTS, args.deletions)
        rows.append(("a study deleted elsewhere gone (listing, by-uids/, open: ENOENT)", summary(ours),
                     summary(before), "≤ 10 s"))
        print(rows[-1], flush=True)
        walks = {label: warm_walk_after(server, work, kind, options, args.wait)
                 for label, kind, options in (("ours", "orthancfs", ()), ("before", "orthancfs", OLD_DEFAULTS),
                                              ("rclone", "rclone", ()))}
        rows.append((f"warm `find by-patients -type f` {args.wait:.0f} s after the cold one",
                     f"{walks['ours']:.3f} s ({walks['rclone'] / walks['ours']:.1f}x rclone's {walks['rclone']:.3f} s)",
                     f"{walks['before']:.3f} s ({walks['rclone'] / walks['before']:.1f}x rclone's)", "≥ 2x rclone"))
        print(rows[-1], flush=True)
        idle = load(server, work, sender, args.load_seconds, 0)
        busy = load(server, work, sender, args.load_seconds, 1000)
        rows.append(("the follower's load, idle Orthanc", f"{idle[0]:.1f} requests/s, {idle[1] * 100:.1f}% of a core",
                     "0 requests/s", "a few small requests/s"))
        rows.append(("... while 1,000 instances a minute arrive", f"{busy[0]:.1f} requests/s, "
                     f"{busy[1] * 100:.1f}% of a core", "-", "bounded CPU"))
        print(rows[-2:], flush=True)
        orthanc_version = version(server)
    lines = ["## Live view (bench/live.py)", "",
             f"{args.patients} patients x 3 studies x 4 series x 10 instances, Orthanc {orthanc_version}; "
             f"today's defaults against the defaults before following (`{' '.join(OLD_DEFAULTS)}`), same run.", "",
             "| what | orthancfs | before (no follower, 10 s TTL) | target |", "|---|---|---|---|"]
    lines += [f"| {what} | {ours} | {before} | {target} |" for what, ours, before, target in rows]
    return "\n".join(lines)


def version(server: OrthancServer) -> str:
    with server.client() as client:
        return client.capabilities.version_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=101)
    parser.add_argument("--arrivals", type=int, default=50, help="per way of sending")
    parser.add_argument("--baseline-arrivals", type=int, default=10, help="per way, with the old defaults")
    parser.add_argument("--deletions", type=int, default=10)
    parser.add_argument("--wait", type=float, default=60.0, help="between the cold and the warm walk")
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    section = run(args)
    print(section)
    if args.output:
        write_section(args.output, "live", section)


if __name__ == "__main__":
    main()
