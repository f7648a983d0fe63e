"""The `orthancfs` command: arguments, settings, logging, and error reporting.

Every failure the user can fix is printed as one line on stderr with a
non-zero exit status (2: bad usage or settings, 1: could not start); a
traceback means a bug.  `orthancfs SOURCE MOUNTPOINT -o OPTIONS`, the form
mount(8) uses through mount.fuse3, is `orthancfs mount --background`.
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import logging
import logging.handlers
import os
import sys
from contextlib import ExitStack
from typing import Any, NoReturn

from . import __version__
from .errors import StartupError, UsageError
from .settings import (
    FOLLOWING_TTL,
    OPTIONS,
    UNFOLLOWED_TTL,
    Layer,
    Settings,
    config_layers,
    environment_layer,
    parse_mount_options,
    resolve,
)

log = logging.getLogger("orthancfs")

COMMANDS = ("mount", "umount", "webdav", "demo")
WEBDAV_ONLY = {"prefix"}
WEBDAV_SETTINGS = {"prefix", "url", "user", "password_file", "token_file", "ca_file", "client_cert", "client_key",
                   "insecure", "timeout", "metadata_ttl", "no_follow", "bulk_limit", "cache_dir", "cache_size",
                   "no_upload", "allow_delete", "allow_labels", "read_only", "debug", "log_file"}
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def add_setting_flags(parser: argparse.ArgumentParser, names: set[str] | None = None) -> None:
    """One flag per setting (see settings.OPTIONS); values are checked when settings are resolved."""
    for option in OPTIONS:
        if names is not None and option.name not in names:
            continue
        if not option.metavar:
            parser.add_argument(option.long_flag, dest=option.name, action="store_const", const="yes",
                                default=None, help=option.help)
        else:
            parser.add_argument(option.long_flag, dest=option.name, default=None, metavar=option.metavar,
                                help=f"{option.help} (default: {shown_default(option)})")


def shown_default(option: Any) -> str:
    if option.name == "cache_dir":
        return "$XDG_CACHE_HOME/orthancfs or ~/.cache/orthancfs"
    if option.name in ("uid", "gid"):
        return "yours"
    if option.name == "umask":
        return "022"
    if option.name == "cache_size":
        return "1G"
    if option.name == "url":
        return f"$ORTHANC_URL or {option.default}"
    if option.name == "metadata_ttl":
        return f"{FOLLOWING_TTL:.0f} while following Orthanc's change log, {UNFOLLOWED_TTL:.0f} with --no-follow"
    return "none" if option.default is None else str(option.default)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="orthancfs", description="Mount an Orthanc DICOM server as a folder.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    mount = commands.add_parser("mount", help="mount an Orthanc server",
                                description="Mount an Orthanc server; stays in the foreground unless --background.")
    mount.add_argument("source", metavar="SOURCE", nargs="?", help="Orthanc URL or profile name")
    mount.add_argument("mountpoint", metavar="MOUNTPOINT", nargs="?", help="where to mount (or the profile's)")
    mount.add_argument("-o", dest="mount_options", action="append", default=[], metavar="OPTIONS",
                       help="comma-separated options as in fstab: name=value for every setting below, ro, ...")
    mount.add_argument("--profile", help="the [profile NAME] of the config file to use")
    mount.add_argument("--config", metavar="FILE", help="config file (default: ~/.config/orthancfs/orthancfs.conf "
                                                        "and /etc/orthancfs/orthancfs.conf)")
    mount.add_argument("--background", action="store_true",
                       help="return once the mount is live and keep serving in the background (as mount(8) does)")
    add_setting_flags(mount, {o.name for o in OPTIONS} - WEBDAV_ONLY)
    mount.set_defaults(run=run_mount)
    webdav = commands.add_parser("webdav", help="serve the same tree over WebDAV",
                                 description="Serve the tree over WebDAV; stays in the foreground.")
    webdav.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                        help="where to listen (default: %(default)s)")
    webdav.add_argument("--users-file", metavar="FILE",
                        help="users allowed in: name:bcrypt-hash[:read|upload|delete] per line (htpasswd -B)")
    webdav.add_argument("--allow-anonymous", action="store_true",
                        help="serve without a users file on a non-loopback address (never with deletes)")
    webdav.add_argument("--allow-insecure-http", action="store_true",
                        help="serve plain http on a non-loopback address (passwords cross the network in clear text)")
    webdav.add_argument("--access-log", metavar="FILE",
                        help="write the access log (one line per request) to FILE instead of the log")
    webdav.add_argument("--cert", metavar="FILE", help="TLS certificate (PEM); with --key, serve https")
    webdav.add_argument("--key", metavar="FILE", help="TLS private key (PEM)")
    webdav.add_argument("--windows-names", action=argparse.BooleanOptionalAction, default=True,
                        help="map names Windows cannot show (<>:\"|?*, CON, trailing dots) (default: on)")
    webdav.add_argument("--profile", help="the [profile NAME] of the config file to use")
    webdav.add_argument("--config", metavar="FILE", help="config file")
    add_setting_flags(webdav, WEBDAV_SETTINGS)
    webdav.set_defaults(run=run_webdav)
    umount = commands.add_parser("umount", help="unmount, after pending uploads are finished")
    umount.add_argument("mountpoint", metavar="MOUNTPOINT")
    umount.add_argument("--wait", default="60", metavar="SECONDS",
                        help="how long to wait for pending uploads (default: %(default)s)")
    umount.add_argument("--lazy", action="store_true", help="detach even if files are open (fusermount3 -z)")
    umount.set_defaults(run=run_umount)
    demo = commands.add_parser("demo", help="start a private Orthanc with sample studies and mount it",
                               description="Start a private Orthanc on a free loopback port, load generated "
                                           "sample studies and mount it; it prints the Orthanc's URL and the "
                                           "commands that serve the same data again. Ctrl-C unmounts and "
                                           "deletes everything.")
    demo.add_argument("mountpoint", metavar="MOUNTPOINT", nargs="?", default="pacs",
                      help="where to mount (default: ./%(default)s, created if missing)")
    add_setting_flags(demo, {"metadata_ttl", "uid", "gid", "debug", "allow_delete", "read_only", "no_upload"})
    demo.set_defaults(run=run_demo)
    return parser


def settings_from(args: argparse.Namespace, environ: dict[str, str], need_mountpoint: bool = True) -> Settings:
    """Every setting resolved: flags, then -o options, then environment, then config profile, then defaults."""
    flags = {o.name: (getattr(args, o.name), o.long_flag) for o in OPTIONS if getattr(args, o.name, None) is not None}
    options = parse_mount_options(",".join(getattr(args, "mount_options", [])))
    source, mountpoint = _positionals(args)
    profile = getattr(args, "profile", None) or _raw(options, "profile") or environ.get("ORTHANCFS_PROFILE")
    if source is not None:
        if source.startswith(("http://", "https://")):
            flags.setdefault("url", (source, "SOURCE"))
        elif profile is None:
            profile = source
    if mountpoint is not None:
        flags["mountpoint"] = (mountpoint, "MOUNTPOINT")
    config = getattr(args, "config", None) or _raw(options, "config") or environ.get("ORTHANCFS_CONFIG")
    layers = [Layer(flags), options, environment_layer(environ), *config_layers(config, profile)]
    settings = resolve(layers)
    if need_mountpoint and not settings.mountpoint:
        raise UsageError("no MOUNTPOINT given (on the command line or in the profile)")
    return settings


def _positionals(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """`mount MOUNTPOINT` or `mount SOURCE MOUNTPOINT`."""
    source, mountpoint = getattr(args, "source", None), getattr(args, "mountpoint", None)
    if source is not None and mountpoint is None:
        return None, source
    return source, mountpoint


def _raw(layer: Layer, name: str) -> str | None:
    found = layer.values.get(name)
    return found[0] if found else None


def run_mount(args: argparse.Namespace) -> int:
    from .mount import mount_from_settings  # pyfuse3 loads only when mounting

    settings = settings_from(args, dict(os.environ))
    setup_logging(settings.debug, settings.log_file, background=args.background)
    if not args.background:
        mount_from_settings(settings)
        return 0
    from .service import run_detached

    return run_detached(lambda ready: _mount_reporting_errors(settings, ready))


def _mount_reporting_errors(settings: Settings, ready: Any) -> int:
    from .mount import mount_from_settings

    try:
        mount_from_settings(settings, ready_callbacks=[ready])
        return 0
    except (UsageError, StartupError) as exc:
        print(f"orthancfs: {exc}", file=sys.stderr)
        return 1


def run_webdav(args: argparse.Namespace) -> int:
    from .compose import client_settings, open_tree
    from .service import notify
    from .webdav.server import attach_access_log, serve_webdav, webdav_options

    settings = settings_from(args, dict(os.environ), need_mountpoint=False)
    setup_logging(settings.debug, settings.log_file, background=False)
    options = webdav_options(args.listen, args.users_file, args.cert, args.key, args.windows_names,
                             args.allow_anonymous, args.allow_insecure_http,
                             settings.allow_delete and not settings.read_only, settings.debug, settings.prefix)
    attach_access_log(args.access_log)
    connection = client_settings(settings, os.environ)
    with ExitStack() as stack:
        serve_webdav(open_tree(settings, connection, stack), options, notify)
    return 0


def run_umount(args: argparse.Namespace) -> int:
    from .unmount import unmount

    try:
        wait = float(args.wait)
    except ValueError:
        raise UsageError(f"--wait: not a number of seconds: {args.wait!r}") from None
    return unmount(args.mountpoint, wait, args.lazy)


def run_demo(args: argparse.Namespace) -> int:
    from .demo.run import run_demo as demo

    setup_logging(bool(args.debug), None, background=False)
    return demo(args)


def _called_by_mount_helper(argv: list[str]) -> bool:
    """`SOURCE MOUNTPOINT [-o OPTIONS]`, as mount.fuse3 runs us: exactly two words before any option,
    the first no command, the second no URL (`orthancfs mnt URL MP` is a mistyped command)."""
    words = list(itertools.takewhile(lambda arg: not arg.startswith("-"), argv))
    return len(words) == 2 and words[0] not in COMMANDS and "://" not in words[1]


def _did_you_mean(word: str) -> str:
    close = difflib.get_close_matches(word, COMMANDS, n=1, cutoff=0.6)
    return f": did you mean {close[0]!r}?" if close else ""


def setup_logging(debug: bool, log_file: str | None, background: bool) -> None:
    """Readable on a terminal; plain lines for journald (it adds the time); a file or syslog when detached."""
    if log_file:
        try:
            handler: logging.Handler = logging.FileHandler(log_file)
        except OSError as exc:
            raise UsageError(f"cannot open log file {log_file}: {exc.strerror}") from None
        handler.setFormatter(logging.Formatter("%(asctime)s " + LOG_FORMAT))
    elif background:
        handler = _syslog_handler()
    else:
        handler = logging.StreamHandler()
        under_journald = "JOURNAL_STREAM" in os.environ
        handler.setFormatter(logging.Formatter(LOG_FORMAT if under_journald else "%(asctime)s " + LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log.setLevel(logging.DEBUG if debug else logging.INFO)


def _syslog_handler() -> logging.Handler:
    if not os.path.exists("/dev/log"):
        return logging.NullHandler()
    handler = logging.handlers.SysLogHandler(address="/dev/log")
    handler.setFormatter(logging.Formatter("orthancfs[%(process)d]: " + LOG_FORMAT))
    return handler


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    source = argv[0] if _called_by_mount_helper(argv) else None
    try:
        if source is not None:
            argv = ["mount", "--background", *argv]
        elif argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
            raise UsageError(f"unknown command {argv[0]!r}{_did_you_mean(argv[0])} "
                             f"(the commands are {', '.join(COMMANDS)}; see orthancfs --help)")
        args = build_parser().parse_args(argv)
        return args.run(args)
    except UsageError as exc:
        hint = _did_you_mean(source) if source is not None and "no [profile" in str(exc) else ""
        print(f"orthancfs: {exc}{hint and f' (or a mistyped command{hint})'}", file=sys.stderr)
        return 2
    except StartupError as exc:
        print(f"orthancfs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
