"""`orthancfs demo`: a private Orthanc with sample studies, mounted."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

from ..settings import OPTIONS, Layer, resolve
from .samples import demo_specs, make_dicom
from .server import OrthancServer

log = logging.getLogger(__name__)

POLICY = ("no_upload", "allow_delete", "read_only")  # demo flags that the printed commands repeat


def run_demo(args: argparse.Namespace) -> int:
    from ..mount import mount_from_settings

    mountpoint = Path(args.mountpoint).absolute()
    mountpoint.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="orthancfs-demo-") as workdir, OrthancServer(Path(workdir)) as server:
        with server.client() as client:
            for spec in demo_specs():
                client.upload(make_dicom(spec))
        log.info("demo Orthanc on %s (storage in %s)", server.url, workdir)
        given = {o.name: (getattr(args, o.name), o.long_flag) for o in OPTIONS if getattr(args, o.name, None)}
        demo = {"url": (server.url, "demo"), "mountpoint": (str(mountpoint), "demo"),
                "cache_dir": (str(Path(workdir) / "cache"), "demo")}  # the demo leaves nothing behind
        policy = [o.long_flag for o in OPTIONS if o.name in POLICY and getattr(args, o.name, None)]
        mount_from_settings(resolve([Layer(given), Layer(demo)]),
                            on_ready=lambda: _show(mountpoint, server.url, policy))
    return 0


NEXT_STEPS = """
Try: find {mnt} -type f | head;  ls {mnt}/by-dates

The private Orthanc, while the demo runs: {url}
  (its REST API; Orthanc Explorer at {url}/app/explorer.html)
The same data over WebDAV (on http://127.0.0.1:8080/), from another terminal:
  orthancfs webdav --url {url}{flags}
Mounted once more, elsewhere:
  orthancfs mount --url {url}{flags} MOUNTPOINT

Stop with Ctrl-C (or: fusermount3 -u {mnt}): the mount and the private Orthanc go.
"""


def _show(mountpoint: Path, url: str, policy: list[str]) -> None:
    """Print what the mount shows, read through the mount itself, and what to do with it next."""
    patients = mountpoint / "by-patients"
    print(f"\northancfs demo mounted at {mountpoint}\n\n$ ls {patients}", flush=True)
    for name in sorted(os.listdir(patients)):
        print(f"  {name}", flush=True)
    flags = "".join(f" {flag}" for flag in policy)
    print(NEXT_STEPS.format(mnt=mountpoint, url=url, flags=flags), flush=True)
