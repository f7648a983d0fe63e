"""What Orthanc's own answer to a Range request costs, by attachment size and position (1.12.5+).

Issue 20 asks that reading 4 KiB at the end of a cold 64 MiB instance take at most 0.2 of a full
cold read.  This measures the floor under any client: one keep-alive connection (so neither
process start-up nor a connect is counted) asks Orthanc for 4 KiB at the start and at the end of
a 64 MiB instance and of a small one, with the page cache dropped first (cold) or not (warm).

    ORTHANC_ROOT=/var/cache/orthancfs/trixie-orthanc python bench/range_floor.py [--output bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from run import drop_caches  # noqa: E402
from sections import write_section  # noqa: E402

from orthancfs.demo.samples import Spec, make_dicom  # noqa: E402
from orthancfs.demo.server import OrthancServer  # noqa: E402

RUNS = 7


def timed_get(base: str, path: str, byte_range: str | None, cold: bool) -> float:
    if cold:
        drop_caches()
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request("GET", "/system")
        connection.getresponse().read()
        started = time.perf_counter()
        connection.request("GET", path, headers={"Range": f"bytes={byte_range}"} if byte_range else {})
        answer = connection.getresponse()
        answer.read()
        elapsed = time.perf_counter() - started
        if answer.status != (206 if byte_range else 200):
            raise RuntimeError(f"GET {path} ({byte_range}): {answer.status}")
        return elapsed
    finally:
        connection.close()


def run() -> str:
    work = Path(tempfile.mkdtemp(prefix="orthancfs-range-"))
    big = make_dicom(Spec("BIG", "Big^Files", generate_uid(), generate_uid(), modality="OT", frames=128,
                          rows=512, columns=512))
    small = make_dicom(Spec("SMALL", "Small^File", generate_uid(), generate_uid(), modality="CT"))
    with OrthancServer(work / "orthanc") as server, server.client() as client:
        version = client.get_json("/system")["Version"]
        rows = []
        for label, data in (("64 MiB", big), (f"{len(small):,} bytes", small)):
            instance = client.upload(data)["ID"]
            path = f"/instances/{instance}/attachments/dicom/data"
            size = len(data)
            cases = [("first 1 KiB", "0-1023"), ("last 1 KiB", f"{size - 1024}-{size - 1}"), ("the whole file", None)]
            for what, byte_range in cases:
                cold = statistics.median(timed_get(server.url, path, byte_range, True) for _ in range(RUNS))
                warm = statistics.median(timed_get(server.url, path, byte_range, False) for _ in range(RUNS))
                rows.append(f"| {label} | {what} | {cold:.4f} s | {warm:.4f} s |")
                print(rows[-1], flush=True)
    return "\n".join([f"### Orthanc {version}'s own answer to a Range request (`bench/range_floor.py`)", "",
                      f"Medians of {RUNS}, one keep-alive connection, the request alone timed; cold: page cache "
                      "dropped first.", "", "| attachment | bytes asked | cold | warm |", "|---|---|---|---|", *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    section = run()
    print(section)
    if args.output:
        write_section(args.output, "range-floor", section)


if __name__ == "__main__":
    main()
