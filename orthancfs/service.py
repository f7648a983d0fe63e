"""Running as a service: detaching for mount(8), and telling systemd how things stand."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)

READY_BYTE = b"\0"


def notify(message: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, if systemd gave us one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("cannot notify systemd: %s", exc)


def run_detached(work: Callable[[Callable[[], None]], int]) -> int:
    """Run `work(ready)` in a detached child; return 0 once it calls ready(), 1 if it fails first.

    This is what mount(8) expects of a mount helper: come back when the mount is
    live, or say in one line why there is none.  Until ready() the child's
    stderr is a pipe to us, so its one-line error becomes ours.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        return _wait_for_child(pid, read_end)
    os.close(read_end)
    os.setsid()
    _redirect(0, os.devnull, os.O_RDONLY)
    _redirect(1, os.devnull, os.O_WRONLY)
    os.dup2(write_end, 2)
    os.close(write_end)

    def ready() -> None:
        os.write(2, READY_BYTE)
        _redirect(2, os.devnull, os.O_WRONLY)  # the parent sees end-of-file and returns

    try:
        code = work(ready)
    except BaseException:  # noqa: BLE001 - the child must never return into the parent's code
        code = 1
    sys.stderr.flush()
    os._exit(code)


def _wait_for_child(pid: int, read_end: int) -> int:
    with os.fdopen(read_end, "rb") as pipe:
        said = pipe.read()
    if said.startswith(READY_BYTE) or READY_BYTE in said:
        return 0
    _, status = os.waitpid(pid, 0)
    text = said.decode("utf-8", errors="replace").strip()
    print(text or f"orthancfs: the mount process ended before mounting (status {status})", file=sys.stderr)
    return 1


def _redirect(fd: int, path: str, flags: int) -> None:
    target = os.open(path, flags)
    os.dup2(target, fd)
    os.close(target)
