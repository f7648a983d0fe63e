"""The composition root of both servers: from resolved settings to the Tree they serve.

Both `orthancfs mount` and `orthancfs webdav` are built here, in one order: the cache
directory, the garbage collector's thresholds, the client, the check that Orthanc answers
as Orthanc, the write policy, the Tree.  One ExitStack owns every lifetime, so teardown
runs in reverse order even when start-up fails half way.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path

from .credentials import find_credentials
from .errors import AccessDenied, NotFound, OrthancFSError, OrthancUnavailable, StartupError, UsageError
from .gc_tuning import tune_for_large_listings
from .orthanc import ClientSettings, OrthancClient, validate_url
from .settings import Settings
from .tree import Tree, WritePolicy


def client_settings(settings: Settings, environ: Mapping[str, str]) -> ClientSettings:
    """How to reach Orthanc: its URL checked, the certificate files readable, the credentials found."""
    url = validate_url(settings.url)
    for name in ("ca_file", "client_cert", "client_key"):
        path = getattr(settings, name)
        if path and not os.access(path, os.R_OK):
            raise UsageError(f"cannot read {name.replace('_', ' ')} {path}")
    found = find_credentials(url=url, user=settings.user, password_file=settings.password_file,
                             token_file=settings.token_file, environ=environ)
    return ClientSettings(url, found.user, found.password, settings.ca_file, settings.insecure,
                          token=found.token, client_cert=settings.client_cert, client_key=settings.client_key,
                          timeout=settings.timeout)


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


def open_tree(settings: Settings, connection: ClientSettings, stack: ExitStack) -> Tree:
    """Connect to Orthanc and build the tree that both servers serve, closed by `stack`."""
    spool_dir, state_dir = prepare_cache_dir(settings.cache_dir, connection.url)
    tune_for_large_listings()
    client = OrthancClient(connection)
    stack.callback(client.close)
    connect(client)
    policy = WritePolicy(uploads=not settings.no_upload, deletes=settings.allow_delete, read_only=settings.read_only,
                         labels=settings.allow_labels)
    tree = Tree(client, state_dir, metadata_ttl=settings.trusted_seconds, spool_dir=spool_dir, policy=policy,
                content_cache_bytes=settings.cache_size, bulk_limit=settings.bulk_limit)
    stack.callback(tree.close)
    if not settings.no_follow:
        tree.follow_changes()
    return tree


