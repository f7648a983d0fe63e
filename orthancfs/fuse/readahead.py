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
import os
from pathlib import Path

log = logging.getLogger(__name__)

READ_AHEAD_KIB = 1024
BDI_DIR = "/sys/class/bdi"


def raise_readahead(device: int, kib: int = READ_AHEAD_KIB, bdi_dir: str = BDI_DIR) -> bool:
    """Raise the readahead of the file system `device` (a stat's st_dev) to at least `kib`;
    False if it stays lower."""
    setting = Path(bdi_dir, f"{os.major(device)}:{os.minor(device)}", "read_ahead_kb")
    try:
        if int(setting.read_text()) < kib:
            setting.write_text(str(kib))
    except (OSError, ValueError) as exc:
        log.info("readahead left at the kernel's default (%s); large files read faster after, as root: "
                 "echo %d > %s", exc.strerror if isinstance(exc, OSError) else exc, kib, setting)
        return False
    return True
