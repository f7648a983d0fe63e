"""Running the FUSE file system: mount, serve until unmounted or signalled, unmount."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable

import pyfuse3
import trio

from .errors import StartupError
from .fuse.operations import OrthancOperations

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def check_mountpoint(mountpoint: str) -> str:
    """The absolute mountpoint, or StartupError saying why it cannot be used."""
    path = os.path.abspath(mountpoint)
    if not os.path.exists(path):
        raise StartupError(f"mountpoint {path} does not exist")
    if not os.path.isdir(path):
        raise StartupError(f"mountpoint {path} is not a directory")
    if os.path.ismount(path):
        raise StartupError(f"mountpoint {path} is busy: something is already mounted there")
    return path


def check_fuse_device(device: str = "/dev/fuse") -> None:
    if not os.path.exists(device):
        raise StartupError(f"FUSE is not available: {device} is missing (load the fuse module, install fuse3)")


def serve(ops: OrthancOperations, mountpoint: str, source: str, on_ready: Callable[[], None] | None = None,
          read_only: bool = False) -> None:
    """Mount `ops` at `mountpoint` and serve requests until unmounted, SIGINT or SIGTERM."""
    options = set(pyfuse3.default_options) | {f"fsname={source.replace(',', '%2C')}", "subtype=orthancfs"}
    if read_only:
        options.add("ro")  # the kernel then refuses changes itself, and `mount` shows it
    try:
        pyfuse3.init(ops, mountpoint, options)
    except RuntimeError as exc:
        raise StartupError(f"cannot mount at {mountpoint}: {exc}") from None
    log.info("mounted %s at %s", source, mountpoint)
    try:
        trio.run(_serve, on_ready)
    finally:
        pyfuse3.close(unmount=True)
        log.info("unmounted %s", mountpoint)


async def _serve(on_ready: Callable[[], None] | None) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_terminate_on_signal)
        if on_ready is not None:
            nursery.start_soon(trio.to_thread.run_sync, on_ready)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for signum in signals:
            log.info("%s received: unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return
