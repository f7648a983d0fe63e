"""The model's error vocabulary.

Frontends translate these (and only these) into their own terms: errno values for
FUSE, HTTP statuses for WebDAV.  Anything else escaping the model is a bug.
"""

from __future__ import annotations


class OrthancFSError(Exception):
    """Base class of every error the tree model raises on purpose."""


class NotFound(OrthancFSError):
    """The path or resource does not exist (any more)."""


class NotADirectory(OrthancFSError):
    """A directory operation was asked of a file."""


class IsADirectory(OrthancFSError):
    """A file operation was asked of a directory."""


class NotPermitted(OrthancFSError):
    """The operation makes no sense on this node (e.g. deleting a view folder)."""


class ReadOnly(OrthancFSError):
    """The mount (or this part of it) does not accept writes."""


class OrthancUnavailable(OrthancFSError):
    """Orthanc could not be reached or did not answer in time.

    `may_have_arrived`: whether a request body may have reached Orthanc anyway (a timeout or a
    connection lost after sending it), so that an upload's fate must be asked, not guessed.
    """

    def __init__(self, message: str, may_have_arrived: bool = True):
        super().__init__(message)
        self.may_have_arrived = may_have_arrived


class AccessDenied(OrthancFSError):
    """Orthanc refused our credentials or our request."""


class Forbidden(OrthancFSError):
    """The mount's own settings forbid this (uploads off, deletes off, a view folder)."""


class OrthancFailed(OrthancFSError):
    """Orthanc answered with an error we cannot map to anything more specific."""


class UploadRejected(OrthancFSError):
    """Orthanc refused a file we sent it (not valid DICOM, missing tags...), or we refused an archive."""


class StorageFull(UploadRejected):
    """Orthanc has no room left for the file."""


class UploadConflict(UploadRejected):
    """Orthanc already holds another file under the same UIDs (it keeps the one it has)."""


class WriteFailed(OrthancFSError):
    """Writing a file into uploads/ failed on the local disk, so it will never be sent."""


class LocalDiskFull(WriteFailed):
    """The local disk, or the share of it that uploads may take, is full."""


class Cancelled(OrthancFSError):
    """A file's name was removed from uploads/ while it was being written: it is not sent."""


class InvalidName(OrthancFSError):
    """A name that cannot exist here (not UTF-8, a reserved name)."""


class NameTooLong(OrthancFSError):
    """A name over 255 bytes."""


class AlreadyExists(OrthancFSError):
    """Creating something where something already is."""


class NotEmpty(OrthancFSError):
    """Removing a folder that still holds files."""


class CrossDevice(OrthancFSError):
    """Moving between the uploads folder and the read-only views."""


class WouldBlock(Exception):  # noqa: N818 - a signal, not a failure
    """Raised by Tree.at_once(): the answer needs Orthanc (or a wait), so ask again where waiting is fine."""


class UsageError(Exception):
    """A setting given by the user is unusable; the CLI prints it as one line."""


class StartupError(Exception):
    """Starting a mount or server failed for a reason the user can act on (one line)."""
