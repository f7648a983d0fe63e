"""Every mount option, from every source, with one precedence.

An option can come from a command-line flag, an `-o` option (mount(8), fstab),
an environment variable (ORTHANCFS_<NAME>) or a profile of the config file; the
first of these that sets it wins, then the default.  Secrets are never
accepted on the command line: they come from files, the environment, ~/.netrc
or systemd credentials (see credentials.py).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UsageError

# Answers are kept this long by default.  Following the change log, what other clients add or
# delete shows within seconds anyway, and the TTL only bounds what the log cannot tell (labels set
# elsewhere, dates of a study's ancestors); without it, the TTL is how stale a listing may get.
FOLLOWING_TTL, UNFOLLOWED_TTL = 300.0, 10.0
BULK_LIMIT = 50_000  # default of bulk_limit (see tree/index.py); here so that the CLI stays light to import

SYSTEM_CONFIG = Path("/etc/orthancfs/orthancfs.conf")


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine's loopback: what nobody else can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False



def user_config() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "orthancfs" / "orthancfs.conf"


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "orthancfs")


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "yes", "true", "on", ""):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"not a yes/no value: {text!r}")


def _number(text: str, convert: Callable[[str], Any], what: str) -> Any:
    """`convert(text)`, or ValueError saying what was expected: Python's own messages
    ("could not convert string to float") name a type, not the setting's meaning."""
    try:
        return convert(text)
    except (ValueError, OverflowError):
        raise ValueError(f"not {what}: {text!r}") from None


def _seconds(text: str) -> float:
    value = _number(text, float, "a number of seconds")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"not a number of seconds: {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise ValueError("must be more than 0 seconds")
    return value


def _id(text: str) -> int:
    value = _number(text, int, "a user or group id")
    if not 0 <= value < 2**32:
        raise ValueError(f"not a user or group id: {text!r}")
    return value


def _umask(text: str) -> int:
    value = _number(text, lambda t: int(t, 8), "an octal umask")
    if not 0 <= value <= 0o777:
        raise ValueError(f"not an octal umask: {text!r}")
    return value


SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(text: str) -> int:
    """Bytes, with an optional K, M, G or T suffix (powers of 1024)."""
    number, unit = text.strip().upper().removesuffix("B"), ""
    if number and number[-1] in SIZE_UNITS:
        number, unit = number[:-1], number[-1]
    try:
        value = int(float(number) * SIZE_UNITS[unit])
    except (ValueError, OverflowError):
        value = -1
    if value < 0:
        raise ValueError(f"not a size (such as 512M or 2G): {text!r}")
    return value


def _count(text: str) -> int:
    value = _number(text, int, "a count")
    if value < 0:
        raise ValueError(f"not a count: {text!r}")
    return value


def _url_path(text: str) -> str:
    """A URL path prefix: `/webdav`, `/pacs/dav` ("/" or empty: none)."""
    path = "/" + text.strip().strip("/")
    if any(part in ("", ".", "..") for part in path.split("/")[1:]) and path != "/":
        raise ValueError(f"not a URL path: {text!r}")
    return "" if path == "/" else path


def _text(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


@dataclass(frozen=True)
class Option:
    """One setting: its name (as in `-o name=` and the config file), parser and default."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str = ""  # what the value is called in --help and the man page (none: a yes/no switch)

    @property
    def env(self) -> str:
        return "ORTHANCFS_" + self.name.upper()

    @property
    def long_flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _setting(parse: Callable[[str], Any], default: Any, help: str, metavar: str = "") -> Any:  # noqa: A002
    """A field of Settings, with how its option is parsed and described (metavar: none for a switch)."""
    return field(default=default, metadata={"parse": parse, "help": help, "metavar": metavar})


@dataclass(frozen=True)
class Settings:
    """Every setting, resolved: one field per option (`-o name=`, `--name`, ORTHANCFS_NAME, the config
    file), its parser and help in the field's metadata.  What both servers are built from."""

    url: str = _setting(_text, "http://localhost:8042", "Orthanc's REST API", "URL")
    user: str | None = _setting(_text, None, "HTTP basic-auth user name", "NAME")
    password_file: str | None = _setting(_text, None, "file holding the password; must not be readable by group "
                                         "or others", "FILE")
    token_file: str | None = _setting(_text, None, "file holding a bearer token (Orthanc behind an authenticating "
                                      "proxy)", "FILE")
    ca_file: str | None = _setting(_text, None, "CA bundle to verify Orthanc's TLS certificate", "FILE")
    client_cert: str | None = _setting(_text, None, "TLS client certificate (PEM), for a proxy that asks for one",
                                       "FILE")
    client_key: str | None = _setting(_text, None, "private key of the client certificate, if not in the same file",
                                      "FILE")
    insecure: bool = _setting(_bool, False, "do not verify Orthanc's TLS certificate")
    timeout: float = _setting(_positive_seconds, 30.0, "give up (EIO) when Orthanc is silent this long", "SECONDS")
    metadata_ttl: float | None = _setting(_seconds, None, "the longest listings and attributes are trusted; 0 asks "
                                          "every time", "SECONDS")
    no_follow: bool = _setting(_bool, False, "do not follow Orthanc's change log: what other clients add or delete "
                               "then shows only once --metadata-ttl has passed")
    bulk_limit: int = _setting(_count, BULK_LIMIT, "list from whole-level lists while Orthanc holds at most this "
                               "many resources (patients, studies, series and instances); 0: always folder by folder",
                               "N")
    uid: int = _setting(_id, os.getuid(), "owner of every file", "UID")
    gid: int = _setting(_id, os.getgid(), "group of every file", "GID")
    umask: int = _setting(_umask, 0o022, "permission bits to remove, in octal", "OCTAL")
    allow_other: bool = _setting(_bool, False, "let other users see the mount (non-root: needs user_allow_other)")
    cache_dir: str = _setting(_text, default_cache_dir(), "where uploads are staged and downloads spooled", "DIR")
    cache_size: int = _setting(_size, 1 << 30, "how much downloaded content to keep on disk for re-reads (K/M/G)",
                               "SIZE")
    no_upload: bool = _setting(_bool, False, "make uploads/ read-only")
    allow_delete: bool = _setting(_bool, False, "let rm and rmdir in the views delete from Orthanc")
    allow_labels: bool = _setting(_bool, False, "let setfattr (user.orthanc.labels) and WebDAV PROPPATCH change "
                                  "studies' labels (Orthanc 1.12)")
    read_only: bool = _setting(_bool, False, "refuse every change (EROFS)")
    debug: bool = _setting(_bool, False, "log every request")
    log_file: str | None = _setting(_text, None, "log to this file instead of stderr", "FILE")
    mountpoint: str | None = _setting(_text, None, "where to mount, if not given as MOUNTPOINT", "DIR")
    prefix: str = _setting(_url_path, "", "WebDAV only: serve the tree under this URL path (behind a reverse proxy's "
                           "location, or where Orthanc's own WebDAV was: /webdav)", "PATH")

    @property
    def trusted_seconds(self) -> float:
        """How long answers are kept: --metadata-ttl, else what suits following or not (docs/semantics.md)."""
        if self.metadata_ttl is not None:
            return self.metadata_ttl
        return UNFOLLOWED_TTL if self.no_follow else FOLLOWING_TTL


OPTIONS = [Option(f.name, f.metadata["parse"], f.default, f.metadata["help"], f.metadata["metavar"])
           for f in fields(Settings)]
BY_NAME = {option.name: option for option in OPTIONS}

# -o options that mount(8), fstab or systemd use, meaningless to us: accepted and ignored.
IGNORED = frozenset({"rw", "auto", "noauto", "user", "users", "nouser", "owner", "group", "defaults", "_netdev",
                     "nofail", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "async", "sync", "atime",
                     "noatime", "relatime", "norelatime", "strictatime", "lazytime", "nodiratime", "diratime",
                     "default_permissions", "fsname", "subtype", "bg", "fg", "comment", "foreground"})
IGNORED_PREFIXES = ("x-", "comment=", "fsname=", "subtype=")
ALIASES = {"ro": ("read_only", "yes"), "allow_root": ("allow_other", "yes")}
# `user` is mount(8)'s own option (a user mount passes user=LOGIN to the helper), so the
# Orthanc user name goes by cifs' spelling in -o and fstab.
RENAMED = {"username": "user"}
SECRETS = frozenset({"password", "pass", "passwd", "token", "secret"})


@dataclass(frozen=True)
class Layer:
    """Settings from one source, each with where it came from (for error messages)."""

    values: Mapping[str, tuple[str, str]]  # name -> (raw text, origin such as "-o" or "file:12")


def parse_mount_options(text: str) -> Layer:
    """`-o a,b=c,...` as mount.fuse3 passes it (`profile=` and `config=` included)."""
    values: dict[str, tuple[str, str]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, has_value, value = item.partition("=")
        if key in SECRETS:
            raise UsageError(f"-o {key}=... would show the secret to every user in ps; use password_file= "
                             "or token_file= (see man orthancfs)")
        if key in ALIASES:
            key, value = ALIASES[key]
        if key in IGNORED or item.startswith(IGNORED_PREFIXES):
            continue
        origin = f"-o {key}"
        key = RENAMED.get(key, key)
        if key not in BY_NAME and key not in ("profile", "config"):
            raise UsageError(f"unknown mount option -o {item}")
        values[key] = (value if has_value else "yes", origin)
    return Layer(values)


def environment_layer(environ: Mapping[str, str]) -> Layer:
    values = {o.name: (environ[o.env], f"${o.env}") for o in OPTIONS if o.env in environ}
    if "url" not in values and "ORTHANC_URL" in environ:
        values["url"] = (environ["ORTHANC_URL"], "$ORTHANC_URL")
    return Layer(values)


Sections = dict[str, dict[str, tuple[str, str]]]


def read_config(path: Path) -> Sections:
    """The `[defaults]` and `[profile NAME]` sections of an INI file, every line checked."""
    sections: Sections = {}
    current: dict[str, tuple[str, str]] | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line, origin = raw.strip(), f"{path}:{number}"
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(_section_name(line[1:-1].strip(), origin), {})
            continue
        key, equals, value = (part.strip() for part in line.partition("="))
        if not equals or current is None:
            raise UsageError(f"{origin}: expected 'name = value' inside a [section]")
        if key in SECRETS:
            raise UsageError(f"{origin}: put secrets in a private file and name it with password_file/token_file")
        if key not in BY_NAME:
            raise UsageError(f"{origin}: unknown option {key!r}")
        current[key] = (value, f"{origin}: {key}")
    return sections


def _section_name(header: str, origin: str) -> str:
    if header == "defaults":
        return header
    kind, _, name = header.partition(" ")
    if kind != "profile" or not name.strip():
        raise UsageError(f"{origin}: sections are [defaults] and [profile NAME], not [{header}]")
    return name.strip()


def config_layers(explicit: str | None, profile: str | None) -> list[Layer]:
    """Layers from the config files, highest precedence first: --config alone, else the user's
    file over the system's; in each, the profile's section over [defaults]."""
    if explicit and not Path(explicit).is_file():
        raise UsageError(f"config file {explicit} does not exist")
    paths = [Path(explicit)] if explicit else [p for p in (user_config(), SYSTEM_CONFIG) if p.is_file()]
    files = [read_config(path) for path in paths]
    if profile is not None and not any(profile in sections for sections in files):
        where = " or ".join(map(str, paths)) or f"{user_config()} or {SYSTEM_CONFIG} (neither exists)"
        raise UsageError(f"no [profile {profile}] in {where}")
    layers = [Layer(sections.get(profile, {})) for sections in files] if profile else []
    return layers + [Layer(sections.get("defaults", {})) for sections in files]


def resolve(layers: Iterable[Layer]) -> Settings:
    """One value per option: the first layer that sets it wins; each value parsed and checked."""
    layers = list(layers)
    result: dict[str, Any] = {}
    for option in OPTIONS:
        for layer in layers:
            if option.name in layer.values:
                text, origin = layer.values[option.name]
                try:
                    result[option.name] = option.parse(text)
                except ValueError as exc:
                    raise UsageError(f"{origin}: {exc}") from None
                break
        else:
            result[option.name] = option.default
    return Settings(**result)
