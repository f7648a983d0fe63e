"""The one table turning model errors into errno values."""

from __future__ import annotations

import errno
import logging
import time

from .. import errors

log = logging.getLogger(__name__)

ERRNO = {
    errors.NotFound: errno.ENOENT,
    errors.NotADirectory: errno.ENOTDIR,
    errors.IsADirectory: errno.EISDIR,
    errors.NotPermitted: errno.EPERM,
    errors.ReadOnly: errno.EROFS,
    errors.AccessDenied: errno.EACCES,
    errors.Forbidden: errno.EACCES,
    errors.OrthancUnavailable: errno.EIO,
    errors.OrthancFailed: errno.EIO,
    errors.StorageFull: errno.ENOSPC,
    errors.UploadConflict: errno.EEXIST,
    errors.UploadRejected: errno.EINVAL,
    errors.LocalDiskFull: errno.ENOSPC,
    errors.WriteFailed: errno.EIO,
    errors.Cancelled: errno.ECANCELED,
    errors.InvalidName: errno.EINVAL,
    errors.NameTooLong: errno.ENAMETOOLONG,
    errors.AlreadyExists: errno.EEXIST,
    errors.NotEmpty: errno.ENOTEMPTY,
    errors.CrossDevice: errno.EXDEV,
}

# Answers to what the user asked (not problems of the mount), and problems that
# are reported elsewhere once: outages by the client, refused uploads by uploads/.
QUIET = (errors.NotFound, errors.NotADirectory, errors.IsADirectory, errors.Forbidden, errors.NotPermitted,
         errors.ReadOnly, errors.InvalidName, errors.NameTooLong, errors.AlreadyExists, errors.NotEmpty,
         errors.CrossDevice, errors.OrthancUnavailable, errors.UploadRejected, errors.WriteFailed, errors.Cancelled)
WARNING_INTERVAL = 30.0


def errno_for(exc: errors.OrthancFSError) -> int:
    for cls in type(exc).__mro__:
        if cls in ERRNO:
            return ERRNO[cls]
    return errno.EIO


class WarningLimiter:
    """Logs a recurring problem once per interval, not once per kernel request."""

    def __init__(self, interval: float = WARNING_INTERVAL):
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, kind: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -self.interval) < self.interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        skipped = self._suppressed.pop(kind, 0)
        self._last[kind] = now
        log.warning("%s%s", message, f" ({skipped} similar messages suppressed)" if skipped else "")


def report(exc: errors.OrthancFSError, operation: str, limiter: WarningLimiter) -> int:
    """Log `exc` at the level it deserves and return its errno."""
    if isinstance(exc, QUIET):
        log.debug("%s: %s", operation, exc)
    else:
        limiter.warn(type(exc).__name__, f"{operation}: {exc}")
    return errno_for(exc)
