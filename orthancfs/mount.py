"""Mounting: from resolved settings to a served file system, and back.

The tree comes from the composition root (compose.py), as the WebDAV server's does.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterable
from contextlib import ExitStack

import pyfuse3
import trio

from .compose import client_settings, open_tree
from .errors import StartupError
from .fuse.operations import FuseSettings, OrthancOperations
from .fuse.readahead import raise_readahead
from .orthanc import LoopUploader
from .service import notify
from .settings import Settings

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
UPLOAD_DRAIN_SECONDS = 120.0  # how long a stop waits for uploads that are being sent


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


def mount_from_settings(settings: Settings, ready_callbacks: Iterable[Callable[[], None]] = (),
                        on_ready: Callable[[], None] | None = None) -> None:
    """Connect, build the tree, mount it and serve until unmounted or stopped."""
    connection = client_settings(settings, os.environ)
    mountpoint = check_mountpoint(settings.mountpoint or "")
    check_fuse_device()
    with ExitStack() as stack:
        tree = open_tree(settings, connection, stack)
        log.info("connected to Orthanc %s at %s", tree.version, tree.source)
        fuse = FuseSettings(uid=settings.uid, gid=settings.gid, umask=settings.umask,
                            cache_timeout=settings.trusted_seconds, mountpoint=os.path.realpath(mountpoint))
        status = f"STATUS=Serving {tree.source} (Orthanc {tree.version}) at {mountpoint}"
        callbacks = [*ready_callbacks, lambda: notify(f"READY=1\n{status}")]
        options = {"ro"} if settings.read_only else set()
        options |= {"allow_other"} if settings.allow_other else set()
        operations = OrthancOperations(tree, fuse, LoopUploader(tree.client))
        serve(operations, mountpoint, tree.source, callbacks, on_ready, options)


def serve(ops: OrthancOperations, mountpoint: str, source: str, ready_callbacks: Iterable[Callable[[], None]] = (),
          on_ready: Callable[[], None] | None = None, extra_options: set[str] | None = None) -> None:
    """Mount `ops` at `mountpoint` and serve requests until unmounted, SIGINT or SIGTERM."""
    options = set(pyfuse3.default_options) | {f"fsname={source.replace(',', '%2C')}", "subtype=orthancfs"}
    options |= extra_options or set()
    try:
        pyfuse3.init(ops, mountpoint, options)
    except RuntimeError as exc:
        raise StartupError(f"cannot mount at {mountpoint}: {exc}") from None
    log.info("mounted %s at %s", source, mountpoint)
    try:
        trio.run(_serve, ops, mountpoint, list(ready_callbacks), on_ready)
    finally:
        ops.close()
        pyfuse3.close(unmount=True)
        log.info("unmounted %s", mountpoint)


async def _serve(ops: OrthancOperations, mountpoint: str, ready_callbacks: list[Callable[[], None]],
                 on_ready: Callable[[], None] | None) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, ops)
        nursery.start_soon(_announce, mountpoint, ready_callbacks, on_ready)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


async def _announce(mountpoint: str, ready_callbacks: list[Callable[[], None]],
                    on_ready: Callable[[], None] | None) -> None:
    """Once requests are being served: tell whoever waits (mount(8), systemd), then the demo's show."""
    # Abandoned if serving ends first: a stat nobody answers would otherwise hold the exit.
    await trio.to_thread.run_sync(_after_init, mountpoint, abandon_on_cancel=True)
    for callback in ready_callbacks:
        callback()
    if on_ready is not None:
        await trio.to_thread.run_sync(on_ready)


def _after_init(mountpoint: str) -> None:
    """Wait until the kernel has our answer to its INIT (a stat of the mount waits for it), then
    raise the readahead: the kernel sets it from that answer, so an earlier setting would be undone."""
    try:
        device = os.stat(mountpoint).st_dev
    except OSError as exc:
        log.info("readahead left as it is: %s", exc)
        return
    raise_readahead(device)


async def _stop_on_signal(ops: OrthancOperations) -> None:
    with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async for signum in signals:
            log.info("%s received: unmounting", signal.Signals(signum).name)
            notify("STOPPING=1")
            await _drain_uploads(ops)
            pyfuse3.terminate()
            return


async def _drain_uploads(ops: OrthancOperations) -> None:
    """Let uploads that are being sent finish; name those that cannot (files still open for writing)."""
    with trio.move_on_after(UPLOAD_DRAIN_SECONDS):
        while sending := ops.uploads_being_sent():
            log.info("waiting for %d upload(s) to finish: %s", len(sending), ", ".join(sending))
            await trio.sleep(0.2)
    for name in ops.uploads_open_for_writing():
        log.warning("uploads/%s is still open for writing: not sent; its data stays in uploads/", name)
