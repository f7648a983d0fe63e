"""The kernel's readahead for our mount: 1 MiB instead of its default 128 KiB.

The kernel asks a FUSE file system for a sequential read in requests no larger
than the readahead window, and each request costs pyfuse3 and us a fixed amount
of work.  Measured, reading 64 MiB that are already in the spool took 41-57 ms
in 256 KiB requests and 18 ms in 1 MiB ones, and a cold read stopped trailing
its download by 3-24 ms.  Only root may change the setting (sysfs); for anyone
else the kernel's default stays and the log says how to raise it.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

READ_AHEAD_KIB = 1024
MOUNTINFO = "/proc/self/mountinfo"
BDI_DIR = "/sys/class/bdi"


def raise_readahead(mountpoint: str, kib: int = READ_AHEAD_KIB, mountinfo: str = MOUNTINFO,
                    bdi_dir: str = BDI_DIR) -> bool:
    """Raise the readahead of the mount at `mountpoint` to at least `kib`; False if it stays lower."""
    device = device_of(mountpoint, mountinfo)
    if device is None:
        log.info("readahead left as it is: %s is not in %s", mountpoint, mountinfo)
        return False
    setting = Path(bdi_dir, device, "read_ahead_kb")
    try:
        if int(setting.read_text()) < kib:
            setting.write_text(str(kib))
    except (OSError, ValueError) as exc:
        log.info("readahead left at the kernel's default (%s); large files read faster after, as root: "
                 "echo %d > %s", exc.strerror if isinstance(exc, OSError) else exc, kib, setting)
        return False
    return True


def device_of(mountpoint: str, mountinfo: str = MOUNTINFO) -> str | None:
    """The `major:minor` of the file system mounted last at `mountpoint`, from mountinfo
    (a stat() would go to the mount itself, whose requests nobody serves yet)."""
    found = None
    for line in Path(mountinfo).read_text().splitlines():
        fields = line.split()
        if len(fields) > 4 and _unescape(fields[4]) == mountpoint:
            found = fields[2]
    return found


def _unescape(field: str) -> str:
    r"""mountinfo writes space, tab, newline and backslash in paths as \040, \011, \012, \134."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field
