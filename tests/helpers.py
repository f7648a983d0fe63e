"""Polling and process helpers for tests: wait for a condition, never sleep blindly."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trio

from orthancfs.orthanc import LoopUploader, OrthancClient


def mount_options(mountpoint: Path) -> str:
    """The options column of /proc/mounts for `mountpoint`."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == str(mountpoint):
            return fields[3]
    raise AssertionError(f"{mountpoint} is not mounted")


def wait_for(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class MountProcess:
    """`orthancfs mount` running as a real command, with its log captured."""

    def __init__(self, url: str, mountpoint: Path, *args: str, log_dir: Path, env: dict | None = None):
        self.mountpoint = mountpoint
        self.log_path = log_dir / f"mount-{mountpoint.name}.log"
        command = [sys.executable, "-m", "orthancfs", "mount", "--url", url, *args, str(mountpoint)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env)

    def wait_mounted(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"orthancfs exited with {self.process.returncode}: {self.log()}")
            return os.path.ismount(self.mountpoint)

        wait_for(ready, timeout, f"mount at {self.mountpoint}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if os.path.ismount(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=False)
        return self.process.returncode


def loop_upload(client: OrthancClient, data: bytes) -> Any:
    """POST /instances the way the mount sends uploads: from a trio loop."""
    return trio.run(LoopUploader(client).upload, data)


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A real small file system (tmpfs of `size`) at `path`: a disk that fills up."""
    if os.geteuid() != 0:
        import pytest

        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def free_bytes(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def upload_files_held(pid: int, cache: Path) -> list[str]:
    """What process `pid` holds open of the uploads area in `cache` (staging copies, kept or removed
    files): nothing, once every upload is settled and closed.  (Spools and sockets are caches.)"""
    held = []
    for descriptor in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{descriptor}")
            if target.startswith(str(cache / "uploads")) and not target.endswith("/lock"):
                held.append(target)
    return held


class QuietHTTPServer(ThreadingHTTPServer):
    """A scripted HTTP server for client tests: clients that reset the connection are what these
    tests make happen, so that is not printed as a traceback; anything else still is."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


def http_answers(client: socket.socket, count: int) -> list[tuple[int, bytes, bytes]]:
    """`count` HTTP answers off a connection, each read to its Content-Length (interim 100s
    skipped): (status, head without its Date line, body)."""
    received, found = b"", []
    while len(found) < count:
        head, blank, rest = received.partition(b"\r\n\r\n")
        if blank and head.startswith(b"HTTP/1.1 100 "):  # (to Expect: 100-continue)
            received = rest
            continue
        length = re.search(rb"(?im)^content-length: *(\d+)", head) if blank else None
        if length is None or len(rest) < int(length[1]):
            chunk = client.recv(1 << 16)
            assert chunk, (found, received[:300])
            received += chunk
            continue
        found.append((int(head.split(b" ", 2)[1]), re.sub(rb"(?im)^date: [^\r]*\r\n", b"", head + b"\r\n"),
                      rest[:int(length[1])]))
        received = rest[int(length[1]):]
    return found
