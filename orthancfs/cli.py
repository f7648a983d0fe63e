"""The `orthancfs` command: argument parsing, logging set-up, and error reporting.

Every failure the user can fix is printed as one line on stderr with a
non-zero exit status (2: bad usage or settings, 1: could not start); a
traceback means a bug.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import stat
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import NoReturn

from . import __version__
from .errors import AccessDenied, NotFound, OrthancFSError, OrthancUnavailable, StartupError, UsageError
from .fuse.operations import FuseSettings, OrthancOperations
from .orthanc import ClientSettings, OrthancClient, validate_url
from .tree import Tree, WritePolicy

log = logging.getLogger("orthancfs")

DEFAULT_URL = "http://localhost:8042"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def seconds(text: str, *, zero_ok: bool = True) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0 or (value == 0 and not zero_ok) or value != value:
        raise argparse.ArgumentTypeError(f"out of range: {text!r}")
    return value


def positive_seconds(text: str) -> float:
    return seconds(text, zero_ok=False)


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connecting to Orthanc")
    group.add_argument("--url", default=os.environ.get("ORTHANC_URL", DEFAULT_URL),
                       help=f"Orthanc's REST API (default: $ORTHANC_URL or {DEFAULT_URL})")
    group.add_argument("--user", help="HTTP basic-auth user name")
    group.add_argument("--password-file", metavar="FILE",
                       help="file holding the password (first line); must not be readable by group or others")
    group.add_argument("--ca-file", metavar="FILE", help="CA bundle to verify Orthanc's TLS certificate")
    group.add_argument("--insecure", action="store_true", help="do not verify Orthanc's TLS certificate")
    group.add_argument("--timeout", type=positive_seconds, default=30.0, metavar="SECONDS",
                       help="give up (EIO) when Orthanc is silent this long (default: %(default)s)")


def add_mount_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the mount")
    group.add_argument("--metadata-ttl", type=seconds, default=10.0, metavar="SECONDS",
                       help="how long listings and attributes are trusted; 0 asks Orthanc every time "
                            "(default: %(default)s)")
    group.add_argument("--uid", type=int, default=os.getuid(), help="owner of every file (default: you)")
    group.add_argument("--gid", type=int, default=os.getgid(), help="group of every file (default: yours)")
    group.add_argument("--cache-dir", metavar="DIR", default=default_cache_dir(),
                       help="where uploads are staged and downloads spooled; kept uploads stay here "
                            "(default: %(default)s)")
    group.add_argument("--no-upload", dest="upload", action="store_false",
                       help="uploads/ is read-only (like WebDavUploadAllowed=false)")
    group.add_argument("--allow-delete", action="store_true",
                       help="rm and rmdir in the views delete instances, series, studies, patients in Orthanc")
    group.add_argument("--read-only", action="store_true", help="refuse every change (EROFS)")
    group.add_argument("--debug", action="store_true", help="log every request")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="orthancfs", description="Mount an Orthanc DICOM server as a folder.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    mount = commands.add_parser("mount", help="mount an Orthanc server (stays in the foreground)")
    add_connection_options(mount)
    add_mount_options(mount)
    mount.add_argument("mountpoint", metavar="MOUNTPOINT")
    mount.set_defaults(run=run_mount)
    demo = commands.add_parser("demo", help="start a private Orthanc with sample studies and mount it")
    add_mount_options(demo)
    demo.add_argument("mountpoint", metavar="MOUNTPOINT", nargs="?", default="pacs")
    demo.set_defaults(run=run_demo)
    return parser


def read_password_file(path: str) -> str:
    try:
        info = os.stat(path)
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise UsageError(f"password file {path} is accessible by group or others; run: chmod 600 {path}")
        with open(path, encoding="utf-8") as file:
            return file.readline().rstrip("\r\n")
    except OSError as exc:
        raise UsageError(f"cannot read password file {path}: {exc.strerror}") from None


def client_settings(args: argparse.Namespace) -> ClientSettings:
    url = validate_url(args.url)
    if args.password_file and not args.user:
        raise UsageError("--password-file needs --user")
    password = read_password_file(args.password_file) if args.password_file else None
    if args.ca_file and not os.access(args.ca_file, os.R_OK):
        raise UsageError(f"cannot read CA file {args.ca_file}")
    return ClientSettings(url, args.user, password, args.ca_file, args.insecure, timeout=args.timeout)


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "orthancfs")


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


def mount_tree(args: argparse.Namespace, settings: ClientSettings, on_ready: Callable[[], None] | None = None) -> None:
    """Connect, build the tree, mount it and serve until unmounted."""
    from .mount import check_fuse_device, check_mountpoint, serve  # pyfuse3 loads only when mounting

    mountpoint = check_mountpoint(args.mountpoint)
    check_fuse_device()
    spool_dir, state_dir = prepare_cache_dir(args.cache_dir, settings.url)
    with ExitStack() as stack:
        client = OrthancClient(settings)
        stack.callback(client.close)
        version = connect(client)
        log.info("connected to Orthanc %s at %s", version, client.base_url)
        policy = WritePolicy(uploads=args.upload, deletes=args.allow_delete, read_only=args.read_only)
        tree = Tree(client, state_dir, metadata_ttl=args.metadata_ttl, spool_dir=spool_dir, policy=policy)
        stack.callback(tree.close)
        fuse_settings = FuseSettings(uid=args.uid, gid=args.gid, cache_timeout=args.metadata_ttl)
        serve(OrthancOperations(tree, fuse_settings), mountpoint, client.base_url, on_ready, args.read_only)


def run_mount(args: argparse.Namespace) -> int:
    mount_tree(args, client_settings(args))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from .demo.run import run_demo as demo

    return demo(args, mount_tree)


def setup_logging(debug: bool) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("orthancfs").setLevel(logging.DEBUG if debug else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    try:
        return args.run(args)
    except UsageError as exc:
        print(f"orthancfs: {exc}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"orthancfs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
