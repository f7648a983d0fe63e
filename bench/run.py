"""Side-by-side benchmark: orthancfs vs `rclone mount` of Orthanc's own WebDAV, vs raw REST.

Starts a private Orthanc (loopback, WebDAV on), generates the data set with
pydicom, and in the same run measures each operation on a fresh orthancfs
mount, a fresh rclone mount and (where it means something) plain REST.  Prints
one markdown table of medians with ratios, HTTP requests sent by orthancfs per
operation, and orthancfs' peak RSS; --output also writes it to a file.

    python bench/run.py [--patients 101] [--runs 3] [--large] [--output bench/RESULTS.md [--section NAME]]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree

import requests
import urllib3
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sections import write_section  # noqa: E402

from orthancfs.demo.samples import Spec, make_dicom  # noqa: E402
from orthancfs.demo.server import OrthancServer, free_port  # noqa: E402
from orthancfs.orthanc import Level  # noqa: E402
from orthancfs.tree.index import PAGE_SIZE  # noqa: E402

MIB = 1 << 20
GROUPS = ("walk", "read", "study", "uploads", "webdav", "find", "dates")  # (dates: with --large only)
# A read of one 64 MiB instance takes about 0.1 s and varies by 10-20% from run to run, so a median
# of 3 moved the cold read's ratio between 0.81x and 1.08x across runs of the same code.
READ_RUNS = 9
PROCESSES = {"orthancfs": "`orthancfs mount`", "webdav": "`orthancfs webdav`"}


def generate(server: OrthancServer, patients: int, studies: int, series: int, instances: int, big: int) -> None:
    """patients x studies x series x instances small files, plus `big` multi-frame files of 64 MiB."""
    def specs():
        for p in range(patients):
            for s in range(studies):
                study = generate_uid()
                for r in range(series):
                    series_uid = generate_uid()
                    for i in range(instances):
                        yield Spec(f"BP{p:05d}", f"Bench^Patient{p}", study, series_uid,
                                   study_date=f"2020{s % 12 + 1:02d}15", study_description=f"Study {s}",
                                   modality="CT", series_description=f"Series {r}", instance_number=i + 1)
        for b in range(big):
            yield Spec("BIG", "Big^Files", generate_uid(), generate_uid(), modality="OT",
                       series_description=f"Cine {b}", frames=128, rows=512, columns=512)
    post_all(server.url, (make_dicom(spec) for spec in specs()))


def post_all(url: str, payloads, threads: int = 8) -> float:
    """POST every payload to /instances, `threads` at a time; seconds taken.

    With urllib3 itself, the leanest client Python has: requests would cost 0.25 ms of CPU more per
    POST, and the baseline would look slower than a direct upload can be (1.1 s instead of 0.7 s
    for 1,000 small files, measured)."""
    pool = urllib3.PoolManager(maxsize=threads)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as executor:
        for status in executor.map(lambda data: post_one(pool, url, data), payloads):
            if status >= 400:
                raise RuntimeError(f"POST /instances: HTTP {status}")
    return time.perf_counter() - started


def post_one(pool: urllib3.PoolManager, url: str, data: bytes) -> int:
    """One POST; an HTTP 500 is tried twice more (once in 100,000 POSTs, Orthanc 1.10.1 answered
    one without logging why), then reported with Orthanc's own words."""
    for _ in range(3):
        response = pool.request("POST", f"{url}/instances", body=data, headers={"Content-Type": "application/dicom"})
        if response.status != 500:
            break
    if response.status >= 400:
        print(f"POST /instances: HTTP {response.status}: {response.data[:300]!r}", file=sys.stderr)
    return response.status


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3")


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, what: str) -> None:
    """Poll `ready` while `process` runs, for at most a minute."""
    deadline = time.monotonic() + 60
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{process.args[:4]} did not {what}: {process.poll()}")
        time.sleep(0.02)


def answers(port: int) -> bool:
    """Whether a WebDAV server answers on `port` (an OPTIONS request: its app is ready, not just its socket)."""
    try:
        requests.options(f"http://127.0.0.1:{port}/", timeout=1)
        return True
    except requests.ConnectionError:
        return False


class Mount:
    """A fresh mount of one kind, unmounted on exit: orthancfs; rclone over Orthanc's WebDAV;
    memfs, the in-memory limit (bench/memfs.py); or webdav: a fresh `orthancfs webdav` server,
    no mount (`target` is its URL)."""

    def __init__(self, kind: str, url: str, work: Path, options: tuple[str, ...] = ()):
        self.kind, self.path = kind, work / f"mnt-{kind}"
        self.path.mkdir(exist_ok=True)
        self.log = work / f"{kind}.log"  # of ours: the orthancfs process (requests sent, peak RSS)
        self.server: subprocess.Popen | None = None
        cache = tempfile.mkdtemp(dir=work)  # a cold content cache for every mount
        ours = [sys.executable, "-m", "orthancfs"]
        if kind == "orthancfs":
            command = [*ours, "mount", "--url", url, "--debug", "--cache-dir", cache, *options, str(self.path)]
        elif kind == "webdav":
            port = free_port()
            with open(self.log, "w") as log:
                self.server = subprocess.Popen([*ours, "webdav", "--listen", f"127.0.0.1:{port}", "--url", url,
                                                "--debug", "--cache-dir", cache, *options],
                                               stdout=log, stderr=subprocess.STDOUT)
            wait_until(lambda: answers(port), self.server, "listen")
            self.target: Path | str = f"http://127.0.0.1:{port}"
            self.process = self.server
            return
        elif kind == "memfs":  # options: the shape file (no Orthanc involved)
            command = [sys.executable, str(Path(__file__).with_name("memfs.py")), *options, str(self.path)]
        else:
            command = ["rclone", "mount", ":webdav:", str(self.path), f"--webdav-url={url}/webdav/", "--read-only"]
        self.target = self.path
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: os.path.ismount(self.path), self.process, "mount")

    def requests_so_far(self) -> int:
        if self.kind == "rclone":
            return 0
        return sum(1 for line in self.log.read_text().splitlines() if "orthancfs.orthanc: " in line and
                   any(f": {verb} /" in line for verb in ("GET", "POST", "DELETE")))

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def close(self) -> None:
        if self.server is not None:
            self.server.terminate()
        else:
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False)
        self.process.wait(30)


def capture_shape(url: str, work: Path) -> Path:
    """The shape of by-patients/ (folders, files and sizes) as bench/memfs.py serves it."""
    mount = Mount("orthancfs", url, work)
    dirs: list[str] = []
    files: list[tuple[str, int]] = []
    try:
        for folder, _, names in os.walk(mount.path / "by-patients"):  # parents before children
            relative = os.path.relpath(folder, mount.path)
            dirs.append(relative)
            files.extend((f"{relative}/{name}", os.stat(os.path.join(folder, name)).st_size) for name in names)
    finally:
        mount.close()
    shape = work / "shape.json"
    shape.write_text(json.dumps({"dirs": dirs, "files": files}))
    return shape


def in_memory_walk(shape: Path, work: Path, walk: Callable[[Path], float]) -> float:
    """`walk` over a fresh in-memory pyfuse3 mount of `shape` (cold: the kernel knows nothing yet)."""
    mount = Mount("memfs", "", work, (str(shape),))
    try:
        return walk(mount.path)
    finally:
        mount.close()


def timed(command: list[str] | Callable[[], object]) -> float:
    started = time.perf_counter()
    if callable(command):
        command()
    else:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def first_bytes(path: Path, count: int = 128 * 1024) -> None:
    with open(path, "rb", buffering=0) as file:
        got = 0
        while got < count:
            chunk = file.read(count - got)
            if not chunk:
                break
            got += len(chunk)


def last_bytes(path: Path, size: int, count: int = 4096) -> None:
    with open(path, "rb") as file:
        file.seek(size - count)
        if len(file.read(count)) != count:
            raise RuntimeError(f"short read at the end of {path}")


def raw_first_bytes(url: str, count: int = 128 * 1024) -> None:
    with requests.get(url, stream=True, headers={"Accept-Encoding": "identity"}) as response:
        got = 0
        for chunk in response.iter_content(16 * 1024):
            got += len(chunk)
            if got >= count:
                break


class Bench:
    def __init__(self, server: OrthancServer, work: Path, runs: int):
        self.server, self.work, self.runs = server, work, runs
        self.rows: list[tuple[str, str, list[float], list[float], list[int]]] = []
        self.peak_rss: dict[str, float] = {}  # of our process, by kind

    def measure(self, name: str, baseline_name: str, operation: Callable[[Path], float | None],
                baseline: Callable[[], float] | None, warm: bool = False, options: tuple[str, ...] = (),
                baseline_of: str | None = None, mine: str = "orthancfs", runs: int | None = None) -> None:
        """Median over runs of `operation` on a fresh mount of `mine` and, unless there is another
        baseline, of rclone over Orthanc's WebDAV (warm: after one unmeasured run); `runs`: more
        than the bench's own number, for operations short enough to vary a lot from run to run.

        `options`: for our process; `baseline_of`: compare with the baseline runs of that earlier
        row (same baseline name) if it was measured, instead of measuring them again."""
        earlier = next((row[3] for row in self.rows if (row[0], row[1]) == (baseline_of, baseline_name)), None)
        kinds = (mine,) if earlier is not None or baseline else (mine, "rclone")
        results: dict[str, list[float]] = {kind: [] for kind in kinds}
        requests_sent: list[int] = []
        base: list[float] = []
        runs = max(runs or 0, self.runs)
        for _ in range(runs):
            if earlier is None and baseline:
                # Alternating with ours, run for run: the machine drifts (the same cold read took
                # 0.092 and 0.107 s medians in two rows of one run), and drift must hit both sides.
                base.append(self._baseline(baseline, warm))
            for kind in kinds:
                drop_caches()
                mount = Mount(kind, self.server.url, self.work, options if kind == mine else ())
                try:
                    if warm:
                        operation(mount.target)
                    before = mount.requests_so_far()
                    results[kind].append(operation(mount.target))
                    if kind == mine:
                        requests_sent.append(mount.requests_so_far() - before)
                        self.peak_rss[kind] = max(self.peak_rss.get(kind, 0.0), mount.peak_rss_mib())
                finally:
                    mount.close()
        if earlier is not None:
            base = earlier
        elif not baseline:
            base = results["rclone"]
        self.rows.append((name, baseline_name, results[mine], base, requests_sent))
        print(f"  {name}: {mine} {statistics.median(results[mine]):.3f}s, "
              f"{baseline_name} {statistics.median(base):.3f}s" if base else "", flush=True)

    @staticmethod
    def _baseline(baseline: Callable[[], float], warm: bool) -> float:
        """A baseline run under the same conditions as ours: cold (Orthanc's storage out of the page
        cache too), or warm (after one unmeasured run)."""
        drop_caches()
        if warm:
            baseline()
        return baseline()

    def table(self) -> str:
        lines = ["| operation | orthancfs | baseline | baseline time | ratio (baseline / orthancfs) | "
                 "requests (orthancfs) |", "|---|---|---|---|---|---|"]
        for name, baseline_name, ours, base, sent in self.rows:
            mine, theirs = statistics.median(ours), statistics.median(base)
            lines.append(f"| {name} | {mine:.3f} s | {baseline_name} | {theirs:.3f} s | "
                         f"**{theirs / mine:.2f}x** | {int(statistics.median(sent)) if sent else '-'} |")
        peaks = ", ".join(f"{PROCESSES[kind]} {peak:.0f} MiB" for kind, peak in self.peak_rss.items())
        lines.append(f"\nPeak RSS over all runs: {peaks}.")
        return "\n".join(lines)


class DavClient:
    """One keep-alive connection browsing as file managers do (gvfs, Finder, Explorer: native code,
    whose own cost per request is small).  http.client, not requests: through requests the client's
    own CPU was 1.76 s of a 2.5 s walk, which hid most of any difference between the servers."""

    def __init__(self, base: str):
        parts = urlsplit(base)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.prefix = parts.path.rstrip("/")

    def propfind(self, path: str) -> bytes:
        self.connection.request("PROPFIND", self.prefix + path, headers={"Depth": "1"})
        answer = self.connection.getresponse()
        body = answer.read()
        if answer.status != 207:
            raise RuntimeError(f"PROPFIND {path}: {answer.status} {answer.reason}")
        return body

    def close(self) -> None:
        self.connection.close()


def dav_walk(base: str, path: str, client: DavClient | None = None, folders: list[str] | None = None) -> int:
    """Files below `path`, found with one PROPFIND (Depth: 1) per folder, as file managers browse;
    `folders` collects the paths of the folders asked."""
    if client is None:
        client = DavClient(base)
        try:
            return dav_walk(base, path, client, folders)
        finally:
            client.close()
    if folders is not None:
        folders.append(path)
    files = 0
    for member in ElementTree.fromstring(client.propfind(path)).findall("{DAV:}response")[1:]:
        href = unquote(urlsplit(member.findtext("{DAV:}href")).path)[len(client.prefix):]
        if member.find(".//{DAV:}collection") is not None:
            files += dav_walk(base, quote(href.rstrip("/") + "/"), client, folders)
        else:
            files += 1
    return files


def replayed_walk(base: str, path: str, work: Path) -> float:
    """A walk's PROPFINDs (Depth: 1) sent again by curl over one keep-alive connection, timed.

    The folders are found first by a Python walk, untimed.  Through the Python client the walk's
    own CPU (0.43 s of parsing per walk, bench/RESULTS.md) is counted on both sides and caps the
    ratio; file managers are native code, and so is curl, which reads each answer and drops it."""
    folders: list[str] = []
    dav_walk(base, path, folders=folders)
    config = Path(tempfile.mkstemp(dir=work, suffix=".curl")[1])
    config.write_text("".join(f'url = "{base}{folder}"\noutput = "/dev/null"\n' for folder in folders))
    started = time.perf_counter()
    sent = subprocess.run(["curl", "-s", "-X", "PROPFIND", "-H", "Depth: 1", "-w", "%{http_code} %{num_connects}\\n",
                           "-K", str(config)], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    answers = [line.split() for line in sent.stdout.splitlines()]
    if [code for code, _ in answers] != ["207"] * len(folders) or sum(int(n) for _, n in answers) != 1:
        raise RuntimeError(f"the replayed walk of {base} was not {len(folders)} answers on one connection")
    return elapsed


def study_of(mount: Path) -> Path:
    """A typical study: the first generated patient's first (the 64 MiB files live under BIG)."""
    patient = next(p for p in sorted((mount / "by-patients").iterdir()) if p.name.startswith("BP"))
    return sorted(patient.iterdir())[0]


def uid_path(client, instance_id: str) -> Path:  # noqa: ANN001 - an OrthancClient
    """An instance's path under by-uids/, known without listing anything (the same in Orthanc's WebDAV):
    reads open a known path, as a user with a list of UIDs would, so no walk is started."""
    def uid(level: str, tag: str) -> str:
        return client.get_json(f"/instances/{instance_id}/{level}")["MainDicomTags"][tag]
    sop = client.get_json(f"/instances/{instance_id}")["MainDicomTags"]["SOPInstanceUID"]
    return Path("by-uids") / uid("study", "StudyInstanceUID") / uid("series", "SeriesInstanceUID") / f"{sop}.dcm"


def run(args: argparse.Namespace) -> str:
    work = Path(tempfile.mkdtemp(prefix="orthancfs-bench-"))
    with OrthancServer(work / "orthanc") as server, server.client() as client:
        started = time.perf_counter()
        generate(server, args.patients, args.studies, args.series, args.instances, args.big)
        stats = client.get_json("/statistics")
        print(f"data: {stats['CountPatients']} patients, {stats['CountStudies']} studies, {stats['CountSeries']} "
              f"series, {stats['CountInstances']} instances, in {time.perf_counter() - started:.0f}s", flush=True)
        bench = Bench(server, work, args.runs)
        big_id = next(i["ID"] for i in client.get_json("/instances", params={"expand": ""}) if i["FileSize"] > 32 * MIB)
        file_url = f"{server.url}/instances/{big_id}/file"
        big_path = uid_path(client, big_id)
        big_file = lambda m: m / big_path  # noqa: E731
        find = lambda m: timed(["find", str(m / "by-patients"), "-type", "f"])  # noqa: E731
        find_ls = lambda m: timed(["find", str(m / "by-patients"), "-ls"])  # noqa: E731
        if "walk" in args.only:
            bench.measure("cold `find by-patients -type f`", "rclone", find, None)
            # Issue 5's limits for a cold walk, in this run: the whole index in one REST call, and the
            # same tree served from memory by a bare pyfuse3 file system (bench/memfs.py).
            whole_index = lambda: timed(lambda: client.get_json("/instances", params={"expand": ""}))  # noqa: E731
            bench.measure("cold `find by-patients -type f`", "raw REST: `GET /instances?expand`", find, whole_index)
            shape = capture_shape(server.url, work)
            for name, walk in (("cold `find by-patients -type f`", find), ("cold `find by-patients -ls`", find_ls)):
                bench.measure(name, "in-memory pyfuse3 tree (the limit)", walk,
                              lambda walk=walk: in_memory_walk(shape, work, walk))
            bench.measure("warm `find by-patients -type f`", "rclone", find, None, warm=True)
            # Databases above --bulk-limit (most real PACS) are walked folder by folder.
            bench.measure("cold `find by-patients -type f`, folder by folder (`--bulk-limit 0`)", "rclone", find,
                          None, options=("--bulk-limit", "0"), baseline_of="cold `find by-patients -type f`")
            bench.measure("cold `find by-patients -ls`", "rclone", find_ls, None)
            bench.measure("warm `find by-patients -ls`", "rclone", find_ls, None, warm=True)
            series_folder = lambda m: sorted(study_of(m).iterdir())[0]  # noqa: E731
            bench.measure("`ls -l` of a series folder", "rclone",
                          lambda m: timed(["ls", "-l", str(series_folder(m))]), None)
        # Reads: the file's path is resolved first, untimed (the raw GET knows its URL); the content
        # itself is cold (fresh mount, fresh content cache, kernel caches dropped).
        def cat(m: Path) -> float:
            path = big_file(m)
            path.stat()
            return timed(["cat", str(path)])

        def head(m: Path) -> float:
            path = big_file(m)
            path.stat()
            return timed(lambda: first_bytes(path))

        def tail(m: Path) -> float:
            path = big_file(m)
            size = path.stat().st_size
            return timed(lambda: last_bytes(path, size))

        if "read" in args.only:
            raw_get = lambda: timed(["curl", "-sf", "-o", "/dev/null", file_url])  # noqa: E731
            # Orthanc 1.12.5 answers Range requests: the end of a cold file comes alone (target: at most
            # 0.2 of a whole cold read, a ratio of 5x or more); 1.10 has to download it all first.
            bench.measure("last 4 KiB of a cold 64 MiB instance", "raw GET of the whole file", tail, raw_get,
                          runs=READ_RUNS)
            if client.capabilities.attachment_range:  # the floor: Orthanc's own answer to that range
                size = client.get_json(f"/instances/{big_id}/attachments/dicom/size")
                raw_tail = ["curl", "-sf", "-o", "/dev/null", "-r", f"{size - 4096}-{size - 1}",
                            f"{server.url}/instances/{big_id}/attachments/dicom/data"]
                def raw_range() -> float:  # the instance looked up first, untimed, as `tail` stats its path
                    client.get_json(f"/instances/{big_id}")
                    return timed(raw_tail)
                bench.measure("last 4 KiB of a cold 64 MiB instance", "raw Range GET of those 4 KiB", tail,
                              raw_range, runs=READ_RUNS)
            bench.measure("cold read of a 64 MiB instance", "raw GET", cat, raw_get, runs=READ_RUNS)
            bench.measure("cold read of a 64 MiB instance", "rclone", cat, None, runs=READ_RUNS)
            bench.measure("warm re-read of a 64 MiB instance", "raw GET", cat, raw_get, warm=True, runs=READ_RUNS)
            bench.measure("warm re-read of a 64 MiB instance", "rclone", cat, None, warm=True, runs=READ_RUNS)
            bench.measure("first 128 KiB of a 64 MiB instance", "raw GET", head,
                          lambda: timed(lambda: raw_first_bytes(file_url)), runs=READ_RUNS)
        if "study" in args.only:
            read_study = "find '{}' -type f -exec cat {{}} + > /dev/null"
            bench.measure("read every file of one study", "rclone",
                          lambda m: timed(["sh", "-c", read_study.format(study_of(m))]), None)
            bench.measure("`cp -r` of a study out of the mount", "rclone",
                          lambda m: timed(["cp", "-r", str(study_of(m)), tempfile.mkdtemp(dir=work)]), None)
        if "webdav" in args.only:
            # The same tree for WebDAV clients (Windows, macOS, file managers): `orthancfs webdav` against
            # Orthanc's own WebDAV, with the same client.  Not through rclone: it waits 10 ms between
            # two requests (its pacer), so any server looks the same through it.
            theirs = f"{server.url}/webdav"
            files_seen: set[int] = set()

            def walk(url: str) -> float:
                started = time.perf_counter()
                files_seen.add(dav_walk(url, "/by-patients/"))
                elapsed = time.perf_counter() - started
                if len(files_seen) != 1:  # both servers must show the same tree
                    raise RuntimeError(f"the WebDAV walks found different numbers of files: {files_seen}")
                return elapsed

            get = lambda url: timed(["curl", "-sf", "-o", "/dev/null", f"{url}/{big_path}"])  # noqa: E731
            bench.measure("WebDAV: cold walk of by-patients/ (PROPFIND, Depth 1)", "Orthanc's WebDAV", walk,
                          lambda: walk(theirs), mine="webdav")
            bench.measure("WebDAV: warm walk of by-patients/ (PROPFIND, Depth 1)", "Orthanc's WebDAV", walk,
                          lambda: walk(theirs), warm=True, mine="webdav")
            replay = lambda url: replayed_walk(url, "/by-patients/", work)  # noqa: E731
            bench.measure("WebDAV: warm walk of by-patients/, replayed by curl (one connection)",
                          "Orthanc's WebDAV", replay, lambda: replay(theirs), warm=True, mine="webdav")
            bench.measure("WebDAV: cold GET of a 64 MiB instance", "Orthanc's WebDAV", get, lambda: get(theirs),
                          mine="webdav")
            bench.measure("WebDAV: warm GET of a 64 MiB instance", "Orthanc's WebDAV", get, lambda: get(theirs),
                          warm=True, mine="webdav")
        if "uploads" in args.only:
            measure_uploads(bench, work, args.upload_files)
        if "find" in args.only:
            measure_response_content(bench, client)
        if args.large:
            measure_large(bench, server, work, args.only)
        return report(args, server, stats, bench)


def measure_response_content(bench: Bench, client) -> None:  # noqa: ANN001 - an OrthancClient
    """What extended find's ResponseContent (1.12.5) buys: every resource of every level, page by page
    as the index loads a level whole, through `/tools/find` asking for just what a listing shows,
    against the expanded pages of `GET /{level}?expand` on the same server, alternating run for run."""
    if not client.capabilities.extended_find:
        print("  (this Orthanc has no extended find: no ResponseContent row)", flush=True)
        return

    def listed(fetch: Callable[[Level, int, int], list]) -> float:
        started = time.perf_counter()
        for level in Level:
            since = 0
            while page := fetch(level, since, PAGE_SIZE):
                since += len(page)
        return time.perf_counter() - started

    ours, base = [], []
    for _ in range(max(bench.runs, 5)):
        base.append(listed(client.page))
        ours.append(listed(client.listed_page))
    bench.rows.append(("every resource of every level, page by page: `ResponseContent`", "expanded pages "
                       "(`GET /{level}?expand`)", ours, base, []))
    print(f"  ResponseContent: {statistics.median(ours):.3f}s, expanded {statistics.median(base):.3f}s", flush=True)


def measure_uploads(bench: Bench, work: Path, count: int) -> None:
    """`cp -r` of small files into uploads/ vs the same number of direct parallel POSTs."""
    def new_files() -> list[bytes]:
        study, series_uid = generate_uid(), generate_uid()
        return [make_dicom(Spec("UPLOAD", "Up^Load", study, series_uid, instance_number=n)) for n in range(count)]

    def folders_of_new_files(writers: int) -> list[Path]:
        folders = [Path(tempfile.mkdtemp(dir=work)) for _ in range(writers)]
        for n, data in enumerate(new_files()):
            (folders[n % writers] / f"{n}.dcm").write_bytes(data)
        return folders

    def copy_in(mount: Path, writers: int = 1) -> float:
        copies = [["cp", "-r", str(folder), str(mount / "uploads")] for folder in folders_of_new_files(writers)]
        started = time.perf_counter()
        for process in [subprocess.Popen(copy) for copy in copies]:
            if process.wait() != 0:
                raise RuntimeError("cp into uploads/ failed")
        return time.perf_counter() - started

    parallel_posts = lambda: post_all(bench.server.url, new_files())  # noqa: E731
    bench.measure(f"{count} small files, one `cp -r` into uploads/", f"{count} parallel POSTs", copy_in,
                  parallel_posts)
    # `cp` writes one file after the other, and each close() waits for Orthanc's answer (so that a
    # refusal reaches the writer): the fair ceiling for a single writer is sequential POSTs.
    bench.measure(f"{count} small files, one `cp -r` into uploads/", f"{count} sequential POSTs", copy_in,
                  lambda: post_all(bench.server.url, new_files(), threads=1))
    bench.measure(f"{count} small files, 4 `cp -r` at once into uploads/", f"{count} parallel POSTs",
                  lambda mount: copy_in(mount, writers=4), parallel_posts)


def large_identifiers(n: int) -> list[str]:
    """PatientID, PatientName, then the study, series and SOP instance UIDs of large patient `n`."""
    number = 10**9 + n  # ten digits, no leading zero (a UID rule)
    return [f"L{n:06d}", f"Large^{n:06d}", *(f"1.2.826.0.1.3680043.10.999.{kind}.{number}" for kind in (1, 2, 3))]


def large_payloads(count: int):  # noqa: ANN201 - a generator of bytes
    """`count` patients of one instance each.  One file is made with pydicom; each copy swaps its
    fixed-width identifiers (same lengths, so every element stays valid): making 100,000 files
    with pydicom took longer than Orthanc took to store them."""
    first = large_identifiers(0)
    template = make_dicom(Spec(first[0], first[1], first[2], first[3], sop_uid=first[4], study_date=large_date(0)))
    for n in range(count):
        data = template.replace(large_date(0).encode(), large_date(n).encode(), 1)  # decades of studies
        for old, new in zip(first, large_identifiers(n), strict=True):
            data = data.replace(old.encode(), new.encode())
        yield data


def large_date(n: int) -> str:
    """Study dates over 35 years (1990-2024), as a PACS holds them."""
    return f"{1990 + n % 35}{n % 12 + 1:02d}15"


def measure_large(bench: Bench, server: OrthancServer, work: Path, groups: set[str]) -> None:
    started = time.perf_counter()
    post_all(server.url, large_payloads(100_000))
    print(f"  --large: 100,000 more patients in {time.perf_counter() - started:.0f}s", flush=True)

    def raw_listing(level: str = "patients") -> float:
        """Every resource of `level`, expanded, in pages of 1000: what a script would fetch."""
        session = requests.Session()
        started, since = time.perf_counter(), 0
        while page := session.get(f"{server.url}/{level}", params={"expand": "", "since": since,
                                                                   "limit": 1000}).json():
            since += len(page)
        return time.perf_counter() - started

    with server.client() as client:
        patients = client.get_json("/statistics")["CountPatients"]

    def listing(mount: Path) -> float:
        started = time.perf_counter()
        names = subprocess.run(["ls", str(mount / "by-patients")], check=True, capture_output=True).stdout
        elapsed = time.perf_counter() - started
        listed = len(names.splitlines())
        if listed != patients:  # nothing truncated
            raise RuntimeError(f"ls listed {listed} patients of {patients}")
        return elapsed

    if "walk" in groups:
        bench.measure("`ls by-patients` with 100,000+ patients", "raw paged REST listing", listing, raw_listing)

    def dav_listing(url: str) -> float:
        started = time.perf_counter()
        answer = requests.request("PROPFIND", f"{url}/by-patients/", headers={"Depth": "1"})
        elapsed = time.perf_counter() - started
        listed = len(re.findall(rb"<(?:\w+:)?response>", answer.content)) - 1  # the folder itself answers too
        if answer.status_code != 207 or listed != patients:
            raise RuntimeError(f"PROPFIND {url}: {answer.status_code}, {listed} patients of {patients}")
        return elapsed

    if "webdav" in groups:  # (Orthanc 1.12.7's own took more than 8 minutes for this)
        bench.measure("WebDAV: PROPFIND of by-patients/ with 100,000+ patients", "Orthanc's WebDAV", dav_listing,
                      lambda: dav_listing(f"{server.url}/webdav"), mine="webdav")


    def year_listing(mount: Path) -> float:
        started = time.perf_counter()
        months = os.listdir(mount / "by-dates" / "2024")
        elapsed = time.perf_counter() - started
        if len(months) != 12:
            raise RuntimeError(f"by-dates/2024 has {len(months)} months")
        return elapsed

    # Orthanc 1.12.5 pages date-range queries to their end: by-dates/2024/ needs that year's studies
    # only (run with ORTHANC_ROOT for it; 1.10 lists every study).
    if "dates" in groups:
        bench.measure("first `ls by-dates/2024/` with 100,000+ studies", "raw paged REST listing of every study",
                      year_listing, lambda: raw_listing("studies"))  # by-dates/ before date queries: every study

    # A script opening a path it knows (UIDs from its own records) in a big database.
    *_, study_uid, series_uid, sop_uid = large_identifiers(54_321)
    known = Path("by-uids", study_uid, series_uid, f"{sop_uid}.dcm")

    def raw_open() -> float:
        started = time.perf_counter()
        with requests.Session() as session:
            [found] = session.post(f"{server.url}/tools/lookup", data=sop_uid).json()
            raw_first_bytes(f"{server.url}{found['Path']}/file", 132)
        return time.perf_counter() - started

    if "read" in groups:
        bench.measure("open a known `by-uids/` path, read 132 bytes (100,000+ studies)", "raw lookup + GET",
                      lambda m: timed(lambda: first_bytes(m / known, 132)), raw_open)


def report(args: argparse.Namespace, server: OrthancServer, stats: dict, bench: Bench) -> str:
    with server.client() as client:
        version = client.system["Version"]
    memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    rclone = subprocess.run(["rclone", "version"], capture_output=True, text=True).stdout.splitlines()[0]
    return (f"# orthancfs benchmark\n\n{time.strftime('%Y-%m-%d')}: {os.cpu_count()} cores, {memory} GiB, "
            f"{platform.platform()}, Python {platform.python_version()}, Orthanc {version} (loopback), {rclone}.\n"
            f"Data: {stats['CountPatients']} patients, {stats['CountStudies']} studies, {stats['CountSeries']} "
            f"series, {stats['CountInstances']} instances ({args.big} of 64 MiB). Medians of {args.runs} runs "
            f"({max(args.runs, READ_RUNS)} for the reads of one 64 MiB instance), each on a fresh mount after "
            f"dropping the kernel's caches (warm: after one unmeasured run on the same mount). "
            f"Baselines: `rclone mount :webdav:` of Orthanc's own WebDAV (`--read-only`, defaults), and "
            f"plain REST (curl and requests for reads and listings, urllib3 for POSTs).\n\n{bench.table()}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=101)
    parser.add_argument("--studies", type=int, default=3, help="per patient")
    parser.add_argument("--series", type=int, default=4, help="per study")
    parser.add_argument("--instances", type=int, default=10, help="per series")
    parser.add_argument("--big", type=int, default=4, help="multi-frame files of 64 MiB")
    parser.add_argument("--upload-files", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--large", action="store_true", help="also 100,000 more patients")
    parser.add_argument("--only", type=lambda text: set(text.split(",")), default=set(GROUPS),
                        help=f"comma-separated groups of measurements, of: {','.join(GROUPS)} (default: all)")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--section", default="bench",
                        help="the section of --output to write (a partial run or another Orthanc: its own)")
    args = parser.parse_args()
    text = run(args)
    print("\n" + text)
    if args.output:
        write_section(args.output, args.section, text)


if __name__ == "__main__":
    main()
