"""`orthancfs webdav`: the tree served by wsgidav on cheroot, with auth and TLS.

The request path, outside in: the access log; paths that name nothing (400); browsing of
the views by users already known (fast_path.py); for everything else wsgidav
(errors as pages, authentication, the role gate, bounded bodies, the directory
browser, our PROPFIND of the views, then its providers); all on a cheroot server
that keeps slow and many clients from holding its threads (connections.py).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cheroot.ssl.builtin import BuiltinSSLAdapter
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from ..errors import StartupError, UsageError
from ..settings import is_loopback
from ..tree import Tree
from . import locks
from .access import role_of_user
from .access_log import ACCESS_LOGGER, AccessLog
from .auth import GuardedAuthenticator, UsersDomainController
from .bodies import BoundedBodies
from .browser import DirBrowser
from .connections import GuardedServer
from .error_pages import ErrorPages
from .fast_path import ViewsFastPath
from .logins import Logins
from .paths import checked_paths
from .policy import RoleGate
from .propfind import ViewsPropfind
from .repeats import Repeats
from .uploads import UploadsProvider
from .users import User, load_users
from .views import ViewsProvider

log = logging.getLogger(__name__)

STOP_SECONDS = 10.0  # for requests under way at SIGTERM (cheroot gives its workers 5 of them)


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise UsageError(f"--listen: expected HOST:PORT, not {text!r}") from None
    return host, number


def check_access_settings(host: str, users_file: str | None, allow_anonymous: bool, allow_insecure_http: bool,
                          allow_delete: bool, cert: str | None, key: str | None) -> dict[str, User]:
    """The users, or a UsageError for a set-up that would let in someone who does not belong."""
    users = load_users(users_file) if users_file else {}
    loopback = is_loopback(host)
    if not users and not loopback and not allow_anonymous:
        raise UsageError(f"refusing anonymous access on {host}: give --users-file (or --allow-anonymous)")
    if not users and not loopback and allow_delete:
        raise UsageError(f"refusing anonymous deletes on {host}: deleting needs a --users-file with the delete role")
    if bool(cert) != bool(key):
        raise UsageError("--cert and --key go together")
    if not cert and not loopback and not allow_insecure_http:
        raise UsageError(f"refusing plain http on {host}: passwords and studies would cross the network in clear "
                         "text; give --cert and --key (or --allow-insecure-http)")
    for path in filter(None, (cert, key)):
        if not os.access(path, os.R_OK):
            raise UsageError(f"cannot read {path}")
    return users


def wsgidav_config(tree: Tree, users: dict[str, User], logins: Logins, windows_names: bool,
                   debug: bool, prefix: str = "") -> dict[str, Any]:
    digest = any(user.digest_ha1 for user in users.values())  # offered only to users who have a Digest hash
    return {
        "provider_mapping": {"/": ViewsProvider(tree, windows_names), "/uploads": UploadsProvider(tree)},
        "mount_path": prefix or None,  # in every href, Destination and listing (under_prefix moves it to SCRIPT_NAME)
        "http_authenticator": {"domain_controller": UsersDomainController, "accept_basic": True,
                               "accept_digest": digest, "default_to_digest": digest, "trusted_auth_header": None},
        # GET streams in blocks of this size: wsgidav's 8 KiB made a 64 MiB file take 8,192 trips through
        # the WSGI server (0.13 s warm instead of 0.03 s).  At most one block per request is in memory.
        "block_size": 1 << 20,
        # Every request is authenticated, then judged by its role, before any body is read; our PROPFIND
        # of the views answers just before wsgidav would.
        "middleware_stack": [ErrorPages, GuardedAuthenticator, RoleGate, BoundedBodies, DirBrowser,
                             ViewsPropfind, RequestResolver],
        "lock_storage": False,  # ours instead (locks.py), in memory: what Windows and macOS need to write
        "property_manager": True,
        "dir_browser": {"enable": True},
        "suppress_version_info": True,
        # wsgidav's own log reaches nobody (a NullHandler; ours is the access log), so its verbosity only
        # costs: at 3 (it was --debug's) it wrote a line per request for nobody, a tenth of a small PROPFIND.
        "verbose": 1,
        "logging": {"enable": False},  # our own logging set-up stays in charge
        "orthancfs": {"users": users, "logins": logins},
    }


class PrefixedDAVApp(WsgiDAVApp):
    """wsgidav, with its mount path taken off a COPY or MOVE's Destination before it looks for the
    provider there (it looked with the prefix, found none, and answered 502 "inter-realm")."""

    def resolve_provider(self, path: str) -> Any:
        prefix = self.mount_path
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            path = path[len(prefix):] or "/"
        return super().resolve_provider(path)


def webdav_app(tree: Tree, users: dict[str, User], windows_names: bool, debug: bool, prefix: str = "") -> Any:
    """The whole WSGI application, access log outermost; the tree at `prefix` ("" for the root)."""
    return webdav_parts(tree, users, windows_names, debug, prefix)[0]


def webdav_parts(tree: Tree, users: dict[str, User], windows_names: bool, debug: bool,
                 prefix: str = "") -> tuple[Any, Repeats]:
    """The WSGI application, and the lane that answers its repeated PROPFINDs from their bytes."""
    logins = Logins(users)
    dav = PrefixedDAVApp(wsgidav_config(tree, users, logins, windows_names, debug, prefix))
    locks.install(dav, locks.BoundedLockManager(lambda name: role_of_user(users, name) == "delete"))
    fast = ViewsFastPath(dav, logins)
    return AccessLog(under_prefix(checked_paths(fast), prefix)), fast.repeats


NOT_HERE = b"Not Found: the tree is served below "


def under_prefix(app: Any, prefix: str) -> Any:
    """Serve `app` below the URL path `prefix`: moved from PATH_INFO to SCRIPT_NAME, as a WSGI
    dispatcher would; anything outside it is 404."""
    if not prefix:
        return app

    def dispatch(environ: dict, start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path != prefix and not path.startswith(prefix + "/"):
            body = NOT_HERE + prefix.encode() + b"/\n"
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
        environ["PATH_INFO"] = path[len(prefix):] or "/"
        return app(environ, start_response)
    return dispatch


def attach_access_log(path: str | None) -> None:
    """Access lines go to the log, or only to `path` (plain lines, as web servers write them)."""
    if not path:
        return
    try:
        handler = logging.FileHandler(path)
    except OSError as exc:
        raise UsageError(f"cannot open access log {path}: {exc.strerror}") from None
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger(ACCESS_LOGGER)
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


@dataclass(frozen=True)
class WebDAVOptions:
    """How to serve: checked before anything connects to Orthanc (a mistake costs nothing)."""

    host: str
    port: int
    users: dict[str, User]
    cert: str | None
    key: str | None
    windows_names: bool
    debug: bool
    prefix: str = ""


def webdav_options(listen: str, users_file: str | None, cert: str | None, key: str | None, windows_names: bool,
                   allow_anonymous: bool, allow_insecure_http: bool, allow_delete: bool, debug: bool,
                   prefix: str = "") -> WebDAVOptions:
    host, port = parse_listen(listen)
    users = check_access_settings(host, users_file, allow_anonymous, allow_insecure_http, allow_delete, cert, key)
    return WebDAVOptions(host, port, users, cert, key, windows_names, debug, prefix)


def serve_webdav(tree: Tree, options: WebDAVOptions, announce: Callable[[str], None]) -> None:
    """Serve `tree` until SIGTERM or SIGINT; `announce` tells systemd how things stand."""
    host, port = options.host, options.port
    app, repeats = webdav_parts(tree, options.users, options.windows_names, options.debug, options.prefix)
    server = GuardedServer((host, port), app)
    server.repeats = repeats
    if options.cert:
        server.ssl_adapter = BuiltinSSLAdapter(options.cert, options.key)
    scheme = "https" if options.cert else "http"
    try:
        server.prepare()
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    where = f"{scheme}://{host}:{port}{options.prefix}/"
    log.info("serving Orthanc %s (%s) as WebDAV on %s", tree.version, tree.source, where)
    announce(f"READY=1\nSTATUS=Serving {tree.source} as WebDAV on {where}")
    _serve_until_signal(server, announce)


def _serve_until_signal(server: GuardedServer, announce: Callable[[str], None]) -> None:
    """Serve in a thread; the main thread waits for SIGTERM/SIGINT, then stops the server in order:
    no new connections, the idle ones closed, requests under way finished (or cut after cheroot's
    shutdown timeout), every connection closed, then the serving thread joined, before the tree
    it serves is closed.

    (cheroot's stop() joins the worker threads: called from a signal handler
    inside serve() it would wait for itself.)
    """
    stops = {signal.SIGTERM, signal.SIGINT}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # inherited by the server's threads
    try:
        serving = threading.Thread(target=server.serve, name="orthancfs-webdav", daemon=True)
        serving.start()
        signum = signal.sigwait(stops)
        log.info("%s received: stopping the WebDAV server", signal.Signals(signum).name)
        announce("STOPPING=1")
        server.stop()
        serving.join(STOP_SECONDS)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
