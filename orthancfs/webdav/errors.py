"""The one table turning model errors into HTTP statuses for WebDAV clients."""

from __future__ import annotations

from wsgidav.dav_error import (
    HTTP_BAD_GATEWAY,
    HTTP_CONFLICT,
    HTTP_FORBIDDEN,
    HTTP_INSUFFICIENT_STORAGE,
    HTTP_INTERNAL_ERROR,
    HTTP_MEDIATYPE_NOT_SUPPORTED,
    HTTP_NOT_FOUND,
    HTTP_SERVICE_UNAVAILABLE,
    DAVError,
)

from .. import errors

STATUS = {
    errors.NotFound: HTTP_NOT_FOUND,
    errors.NotADirectory: HTTP_CONFLICT,
    errors.IsADirectory: HTTP_CONFLICT,
    errors.NotPermitted: HTTP_FORBIDDEN,
    errors.Forbidden: HTTP_FORBIDDEN,
    errors.ReadOnly: HTTP_FORBIDDEN,
    errors.AccessDenied: HTTP_BAD_GATEWAY,  # Orthanc refused *our* credentials: the gateway's problem
    errors.OrthancUnavailable: HTTP_SERVICE_UNAVAILABLE,
    errors.OrthancFailed: HTTP_BAD_GATEWAY,
    errors.StorageFull: HTTP_INSUFFICIENT_STORAGE,
    errors.UploadConflict: HTTP_CONFLICT,
    errors.UploadRejected: HTTP_MEDIATYPE_NOT_SUPPORTED,
    errors.LocalDiskFull: HTTP_INSUFFICIENT_STORAGE,
    errors.WriteFailed: HTTP_INTERNAL_ERROR,
    errors.Cancelled: HTTP_CONFLICT,
    errors.AlreadyExists: HTTP_CONFLICT,
    errors.NotEmpty: HTTP_CONFLICT,
    errors.CrossDevice: HTTP_FORBIDDEN,
    errors.InvalidName: HTTP_FORBIDDEN,
    errors.NameTooLong: HTTP_FORBIDDEN,
}


def dav_error(exc: errors.OrthancFSError) -> DAVError:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return DAVError(STATUS[cls], str(exc))
    return DAVError(HTTP_BAD_GATEWAY, str(exc))
