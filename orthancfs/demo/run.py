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
        mount_from_settings(resolve([Layer(given), Layer(demo)]), on_ready=lambda: _show(mountpoint))
    return 0


def _show(mountpoint: Path) -> None:
    """Print what the mount shows, read through the mount itself."""
    patients = mountpoint / "by-patients"
    print(f"\northancfs demo mounted at {mountpoint}\n\n$ ls {patients}", flush=True)
    for name in sorted(os.listdir(patients)):
        print(f"  {name}", flush=True)
    print(f"\nTry: find {mountpoint} -type f | head;  ls {mountpoint}/by-dates\n"
          f"Stop with Ctrl-C (or: fusermount3 -u {mountpoint}).\n", flush=True)
