"""Start and stop a private Orthanc: loopback only, its own port, storage and config."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import StartupError
from ..orthanc import ClientSettings, OrthancClient

log = logging.getLogger(__name__)

ORTHANC_BINARY = os.environ.get("ORTHANC_BINARY", "/usr/sbin/Orthanc")
# A Debian root with another release's Orthanc in it (debootstrap --include=orthanc), run with chroot:
# the test suite runs against Debian 12's 1.10 and Debian 13's 1.12 on one machine.
ORTHANC_ROOT = os.environ.get("ORTHANC_ROOT") or None
START_TIMEOUT = 60.0
PORT_ATTEMPTS = 3
PORT_TAKEN = "already in use"  # in Orthanc's error when its HTTP port cannot be bound


class PortTakenError(StartupError):
    """Orthanc could not bind its HTTP port."""


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on host:port (for polling a server's start)."""
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


# Ports handed out by free_port in this process: each is handed out once, as its server may not
# have bound it yet.
_handed_out: set[int] = set()
EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"
LOWEST_PORT = 20000


def free_port() -> int:
    """A loopback port nothing is bound to, from below the kernel's ephemeral range.

    A port from bind(0) is one the kernel also gives to outgoing connections: between handing it
    out and the server binding it, any connect() on the machine can take it, and the server then
    fails to start (CI saw Orthanc stop with "port ... already in use").  connect() never takes a
    port below the range."""
    low, _high = _ephemeral_range()
    candidates = list(range(LOWEST_PORT, low))
    random.shuffle(candidates)
    for port in candidates:
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    return _kernel_port()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(part) for part in Path(EPHEMERAL_RANGE).read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _kernel_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OrthancServer:
    """A throw-away Orthanc process in `workdir` (storage, config and log live there)."""

    def __init__(self, workdir: Path, users: dict[str, str] | None = None, config: dict[str, Any] | None = None,
                 ca_file: str | None = None, root: str | None = ORTHANC_ROOT):
        self.root = root
        # In a root, Orthanc's files must be inside it: a folder of its /tmp stands for `workdir`.
        self.workdir = Path(workdir) if root is None else Path(tempfile.mkdtemp(dir=_root_tmp(root)))
        self.ca_file = ca_file  # with "SslEnabled" in `config`: what our own client trusts
        self.users = users or {}
        self.port = free_port()
        self._picked_port: int | None = self.port  # ours to change, until Orthanc has listened on it
        self.extra_config = config or {}
        self.process: subprocess.Popen | None = None
        self.log_start = 0  # where this start's lines begin in the log (a restart appends)

    @property
    def url(self) -> str:
        scheme = "https" if self.extra_config.get("SslEnabled") else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    def inner(self, path: Path) -> str:
        """`path` (inside the workdir) as Orthanc sees it."""
        return str(path) if self.root is None else "/" + os.path.relpath(path, self.root)

    def config(self) -> dict[str, Any]:
        storage = self.inner(self.workdir / "storage")
        return {
            "Name": "orthancfs-private", "StorageDirectory": storage, "IndexDirectory": storage,
            "HttpPort": self.port, "RemoteAccessAllowed": False, "DicomServerEnabled": False,
            "AuthenticationEnabled": bool(self.users), "RegisteredUsers": self.users,
            "Plugins": [], "LuaScripts": [], "WebDavEnabled": True, "HttpDescribeErrors": True,
            "SaveJobs": False, "DefaultEncoding": "Utf8", **self.extra_config,
        }

    def start(self) -> None:
        if self.root is not None and not os.path.exists(os.path.join(self.root, "usr/sbin/Orthanc")):
            raise StartupError(f"no Orthanc in {self.root} (debootstrap --include=orthanc, see the Makefile)")
        if self.root is None and not os.path.exists(ORTHANC_BINARY):
            raise StartupError(f"Orthanc is not installed ({ORTHANC_BINARY} is missing; apt-get install orthanc)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(PORT_ATTEMPTS):
            try:
                self._launch()
                break
            except PortTakenError:
                # Someone bound the port between free_port and Orthanc: a port we picked is
                # changed, one the caller set (a restart, a fixed URL) is not.
                if self.port != self._picked_port or attempt == PORT_ATTEMPTS - 1:
                    raise
                log.info("port %d was taken before Orthanc bound it; trying another", self.port)
                self.port = self._picked_port = free_port()
        self._picked_port = None

    def _launch(self) -> None:
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        command = [ORTHANC_BINARY, str(config_path)] if self.root is None else \
            ["chroot", self.root, "/usr/sbin/Orthanc", self.inner(config_path)]
        with open(self.log_path, "ab") as log_file:
            self.log_start = log_file.tell()
            self.process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.workdir)
        self._wait_ready()

    def _wait_ready(self) -> None:
        """Poll until the HTTP port accepts connections, then check that Orthanc answers."""
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening():
            if self.process.poll() is not None:
                self.process = None
                why = self._log_tail()
                raise (PortTakenError if PORT_TAKEN in why else StartupError)(f"Orthanc exited at start-up: {why}")
            if time.monotonic() > deadline:
                self.stop()
                raise StartupError(f"Orthanc did not listen within {START_TIMEOUT:.0f}s: {self._log_tail()}")
            time.sleep(0.05)
        with self.client(timeout=START_TIMEOUT) as client:
            _ = client.system

    def _listening(self) -> bool:
        return port_open(self.port)

    def _log_tail(self) -> str:
        """The first error this start logged (Orthanc's last line only says it stopped), else its last line."""
        try:
            with open(self.log_path, "rb") as log_file:
                log_file.seek(self.log_start)
                lines = log_file.read().decode(errors="replace").splitlines()
        except OSError:
            lines = []
        errors = [line for line in lines if line.startswith("E")]
        return (errors or lines or ["(no log)"])[0 if errors else -1]

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def client(self, timeout: float = 30.0) -> _ClosingClient:
        user, password = next(iter(self.users.items()), (None, None))
        settings = ClientSettings(self.url, user, password, ca_file=self.ca_file, timeout=timeout, retries=0)
        return _ClosingClient(settings)

    def __enter__(self) -> OrthancServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        if self.root is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _root_tmp(root: str) -> str:
    folder = os.path.join(root, "tmp", "orthancfs")
    os.makedirs(folder, exist_ok=True)
    return folder


class _ClosingClient(OrthancClient):
    def __enter__(self) -> OrthancClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
