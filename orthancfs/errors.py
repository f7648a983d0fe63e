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
    """Orthanc could not be reached or did not answer in time."""


class AccessDenied(OrthancFSError):
    """Orthanc refused our credentials or our request."""


class OrthancFailed(OrthancFSError):
    """Orthanc answered with an error we cannot map to anything more specific."""


class UsageError(Exception):
    """A setting given by the user is unusable; the CLI prints it as one line."""


class StartupError(Exception):
    """Starting a mount or server failed for a reason the user can act on (one line)."""
