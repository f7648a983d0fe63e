"""Mounting: from resolved settings to a served file system, and back.

One ExitStack owns every lifetime (client, tree), so teardown runs in reverse
order even when start-up fails half way.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pyfuse3
import trio

from .credentials import find_credentials
from .errors import AccessDenied, NotFound, OrthancFSError, OrthancUnavailable, StartupError, UsageError
from .fuse.operations import FuseSettings, OrthancOperations
from .fuse.readahead import raise_readahead
from .gc_tuning import tune_for_large_listings
from .orthanc import ClientSettings, OrthancClient, validate_url
from .service import notify
from .tree import Tree, WritePolicy

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


def client_settings(settings: dict[str, Any], environ: dict[str, str]) -> ClientSettings:
    url = validate_url(settings["url"])
    for name in ("ca_file", "client_cert", "client_key"):
        if settings[name] and not os.access(settings[name], os.R_OK):
            raise UsageError(f"cannot read {name.replace('_', ' ')} {settings[name]}")
    found = find_credentials({**settings, "url": url}, environ)
    return ClientSettings(url, found.user, found.password, settings["ca_file"], settings["insecure"],
                          token=found.token, client_cert=settings["client_cert"], client_key=settings["client_key"],
                          timeout=settings["timeout"])


def prepare_cache_dir(path: str, url: str) -> tuple[str, Path]:
    """Create (private to its owner) the spool directory and this server's upload staging area."""
    state = Path(path) / "uploads" / hashlib.sha256(url.encode()).hexdigest()[:16]
    spool = Path(path) / "spool"
    try:
        for directory in (path, spool, state):
            os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create cache directory {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"cache directory {path} is not writable")
    return str(spool), state


def connect(client: OrthancClient) -> str:
    """Check that Orthanc answers as Orthanc; its version, or StartupError."""
    url = client.base_url
    try:
        system = client.system
    except OrthancUnavailable as exc:
        raise StartupError(str(exc)) from None
    except AccessDenied as exc:
        raise StartupError(f"Orthanc at {url} refused the credentials ({exc})") from None
    except NotFound:
        raise StartupError(f"{url} does not look like Orthanc (no /system)") from None
    except OrthancFSError as exc:
        raise StartupError(f"{url}: {exc}") from None
    if not isinstance(system, dict) or "Version" not in system:
        raise StartupError(f"{url} does not look like Orthanc (odd /system answer)")
    return client.capabilities.version_text


def open_tree(settings: dict[str, Any], connection: ClientSettings, stack: ExitStack) -> tuple[Tree, str]:
    """Connect to Orthanc and build the tree that both servers serve, closed by `stack`; the tree
    and Orthanc's version."""
    spool_dir, state_dir = prepare_cache_dir(settings["cache_dir"], connection.url)
    tune_for_large_listings()
    client = OrthancClient(connection)
    stack.callback(client.close)
    version = connect(client)
    policy = WritePolicy(uploads=not settings["no_upload"], deletes=settings["allow_delete"],
                         read_only=settings["read_only"])
    tree = Tree(client, state_dir, metadata_ttl=settings["metadata_ttl"], spool_dir=spool_dir, policy=policy,
                content_cache_bytes=settings["cache_size"], bulk_limit=settings["bulk_limit"])
    stack.callback(tree.close)
    return tree, version


def mount_from_settings(settings: dict[str, Any], ready_callbacks: Iterable[Callable[[], None]] = (),
                        on_ready: Callable[[], None] | None = None) -> None:
    """Connect, build the tree, mount it and serve until unmounted or stopped."""
    connection = client_settings(settings, dict(os.environ))
    mountpoint = check_mountpoint(settings["mountpoint"])
    check_fuse_device()
    with ExitStack() as stack:
        tree, version = open_tree(settings, connection, stack)
        client = tree.client
        log.info("connected to Orthanc %s at %s", version, client.base_url)
        fuse = FuseSettings(uid=settings["uid"], gid=settings["gid"], umask=settings["umask"],
                            cache_timeout=settings["metadata_ttl"], mountpoint=os.path.realpath(mountpoint))
        status = f"STATUS=Serving {client.base_url} (Orthanc {version}) at {mountpoint}"
        callbacks = [*ready_callbacks, lambda: notify(f"READY=1\n{status}")]
        options = {"ro"} if settings["read_only"] else set()
        options |= {"allow_other"} if settings["allow_other"] else set()
        serve(OrthancOperations(tree, fuse), mountpoint, client.base_url, callbacks, on_ready, options)


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
