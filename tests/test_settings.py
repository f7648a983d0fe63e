"""Settings from flags, -o options, environment and config profiles: parsing and precedence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orthancfs.cli import build_parser, settings_from
from orthancfs.credentials import find_credentials
from orthancfs.errors import UsageError
from orthancfs.settings import parse_mount_options


def settings(argv: list[str], environ: dict[str, str] | None = None) -> dict:
    return settings_from(build_parser().parse_args(["mount", *argv]), environ or {})


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orthancfs.conf"
    path.write_text(text)
    return path


def test_mount_options_map_to_settings_and_ignore_mount8_options() -> None:
    layer = parse_mount_options("ro,uid=5,gid=6,umask=027,allow_other,metadata_ttl=1.5,_netdev,noauto,"
                                "x-systemd.automount,x-systemd.idle-timeout=60,nofail,rw,defaults,profile=p")
    assert {k: v for k, (v, _) in layer.values.items()} == {
        "read_only": "yes", "uid": "5", "gid": "6", "umask": "027", "allow_other": "yes", "metadata_ttl": "1.5",
        "profile": "p"}


@pytest.mark.parametrize(("options", "message"), [
    ("bogus=1", "unknown mount option -o bogus=1"),
    ("password=hunter2", "ps"),
    ("token=abc", "token_file"),
])
def test_bad_mount_options(options: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_mount_options(options)


def test_precedence_flag_then_o_then_env_then_profile_then_defaults(tmp_path: Path) -> None:
    conf = config(tmp_path, "[defaults]\ntimeout = 1\nmetadata_ttl = 2\numask = 077\nuid = 11\n"
                            "[profile p]\ntimeout = 3\nmetadata_ttl = 4\nuid = 12\nurl = http://from-profile:1\n")
    env = {"ORTHANCFS_TIMEOUT": "5", "ORTHANCFS_METADATA_TTL": "6"}
    found = settings(["--config", str(conf), "--profile", "p", "-o", "timeout=7", "--timeout", "8", "/mnt"], env)
    assert found.timeout == 8  # flag
    found = settings(["--config", str(conf), "--profile", "p", "-o", "timeout=7", "/mnt"], env)
    assert found.timeout == 7  # -o
    assert found.metadata_ttl == 6  # environment
    assert found.uid == 12  # profile
    assert found.umask == 0o077  # [defaults]
    assert found.gid is not None and found.url == "http://from-profile:1"
    assert settings(["--config", str(conf), "/mnt"], {}).timeout == 1  # no profile: [defaults] only


def test_source_is_a_url_or_a_profile_and_the_profile_can_name_the_mountpoint(tmp_path: Path) -> None:
    conf = config(tmp_path, "[profile main]\nurl = http://pacs:8042\nmountpoint = /mnt/pacs\n")
    found = settings(["--config", str(conf), "main"])  # one positional: the MOUNTPOINT...
    assert found.mountpoint == "main"
    found = settings(["--config", str(conf), "--profile", "main"])
    assert (found.url, found.mountpoint) == ("http://pacs:8042", "/mnt/pacs")
    found = settings(["--config", str(conf), "main", "/elsewhere"])  # SOURCE naming a profile
    assert (found.url, found.mountpoint) == ("http://pacs:8042", "/elsewhere")
    assert settings(["http://other:1", "/x"]).url == "http://other:1"


@pytest.mark.parametrize(("text", "message"), [
    ("[profile p]\nbogus = 1\n", ":2: unknown option 'bogus'"),
    ("[profile p]\ntimeout = soon\n", ":2: timeout:"),
    ("[profile p]\n\nuid = -1\n", ":3: uid:"),
    ("[profile p]\nbulk_limit = -5\n", ":2: bulk_limit: not a count"),
    ("[profile p]\npassword = hunter2\n", ":2: put secrets in a private file"),
    ("timeout = 1\n", ":1: expected 'name = value' inside a [section]"),
    ("[server p]\n", ":1: sections are [defaults] and [profile NAME]"),
    ("[profile q]\n", "no [profile p]"),
    ("[profile p]\ninsecure = perhaps\n", ":2: insecure: not a yes/no value"),
])
def test_config_errors_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    conf = config(tmp_path, text)
    with pytest.raises(UsageError, match=re.escape(message)) as caught:
        settings(["--config", str(conf), "--profile", "p", "/mnt"])
    assert str(conf) in str(caught.value) or "no [profile" in str(caught.value)


def test_bad_values_from_each_source_name_their_origin(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^\$ORTHANCFS_TIMEOUT: not a number of seconds: 'x'$"):
        settings(["/mnt"], {"ORTHANCFS_TIMEOUT": "x"})
    with pytest.raises(UsageError, match=r"^-o timeout: must be more than 0 seconds$"):
        settings(["-o", "timeout=0", "/mnt"])
    with pytest.raises(UsageError, match=r"^--umask: not an octal umask: '999'$"):
        settings(["--umask", "999", "/mnt"])


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--timeout", "abc", "not a number of seconds: 'abc'"),
    ("--timeout", "1e999", "not a number of seconds: '1e999'"),
    ("--metadata-ttl", "nan", "not a number of seconds: 'nan'"),
    ("--uid", "alice", "not a user or group id: 'alice'"),
    ("--gid", "1.5", "not a user or group id: '1.5'"),
    ("--umask", "rwx", "not an octal umask: 'rwx'"),
    ("--cache-size", "1X", "not a size (such as 512M or 2G): '1X'"),
    ("--cache-size", "1e999G", "not a size (such as 512M or 2G): '1e999G'"),
    ("--cache-size", "nanM", "not a size (such as 512M or 2G): 'nanM'"),
    ("--bulk-limit", "many", "not a count: 'many'"),
    ("--insecure", "perhaps", "not a yes/no value: 'perhaps'"),
    ("--url", "", "must not be empty"),
])
def test_every_parser_says_what_it_expected(flag: str, value: str, message: str) -> None:
    """Once, naming the flag: not Python's "could not convert string to float", nor the name twice."""
    argv = ["-o", f"{flag[2:].replace('-', '_')}={value}"] if flag == "--insecure" else [flag, value]
    with pytest.raises(UsageError) as caught:
        settings([*argv, "/mnt"])
    origin = "-o insecure" if flag == "--insecure" else flag
    assert str(caught.value) == f"{origin}: {message}"


def test_username_is_the_user_in_mount_options() -> None:
    """mount(8) takes `user` for itself (and passes user=LOGIN for user mounts): `username=` as cifs spells it."""
    assert parse_mount_options("username=alice").values == {"user": ("alice", "-o username")}
    assert parse_mount_options("user,user=bob").values == {}
    assert settings(["-o", "username=alice,password_file=/pw", "/mnt"]).user == "alice"


def test_missing_config_or_profile(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        settings(["--config", str(tmp_path / "nope.conf"), "/mnt"])
    with pytest.raises(UsageError, match="no \\[profile p\\]"):
        settings(["--profile", "p", "/mnt"], {"XDG_CONFIG_HOME": str(tmp_path)})


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_credentials_sources_in_order(tmp_path: Path) -> None:
    base = {"url": "http://pacs:8042", "user": "alice", "password_file": None, "token_file": None}
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    private(credentials / "password", "from-systemd\n")
    file = private(tmp_path / "pw", "from-file\n")
    env = {"CREDENTIALS_DIRECTORY": str(credentials), "ORTHANCFS_PASSWORD": "from-env", "HOME": str(tmp_path)}
    assert find_credentials(**{**base, "password_file": str(file)}, environ=env).password == "from-file"
    assert find_credentials(**base, environ=env).password == "from-systemd"
    assert find_credentials(**base, environ={"ORTHANCFS_PASSWORD": "from-env"}).password == "from-env"
    private(tmp_path / ".netrc", "machine pacs login bob password from-netrc\n")
    found = find_credentials(**{**base, "user": None}, environ={"HOME": str(tmp_path)})
    assert (found.user, found.password) == ("bob", "from-netrc")
    other = {**base, "url": "http://other:1", "user": None}
    assert find_credentials(**other, environ={"HOME": str(tmp_path)}).password is None
    token = private(tmp_path / "token", "t0k3n\n")
    assert find_credentials(**{**base, "token_file": str(token)}, environ={}).token == "t0k3n"
    assert "from-file" not in repr(find_credentials(**{**base, "password_file": str(file)}, environ={}))


def test_secret_files_readable_by_others_are_refused(tmp_path: Path) -> None:
    base = {"url": "http://pacs:8042", "user": "alice", "password_file": None, "token_file": None}
    shared = private(tmp_path / "pw", "x", mode=0o640)
    with pytest.raises(UsageError, match="chmod 600"):
        find_credentials(**{**base, "password_file": str(shared)}, environ={})
    private(tmp_path / ".netrc", "machine pacs login bob password p\n", mode=0o644)
    with pytest.raises(UsageError, match="netrc is accessible"):
        find_credentials(**{**base, "user": None}, environ={"HOME": str(tmp_path)})
    with pytest.raises(UsageError, match="no user"):
        find_credentials(**{**base, "user": None}, environ={"ORTHANCFS_PASSWORD": "p"})


@pytest.mark.parametrize(("given", "prefix"), [("/webdav", "/webdav"), ("/webdav/", "/webdav"),
                                               ("pacs/dav", "/pacs/dav"), ("/", ""), ("", "")])
def test_a_prefix_is_a_url_path(given: str, prefix: str) -> None:
    parsed = settings_from(build_parser().parse_args(["webdav", "--prefix", given]), {}, need_mountpoint=False)
    assert parsed.prefix == prefix


@pytest.mark.parametrize("given", ["/a/../b", "/a//b", "/./x"])
def test_a_prefix_that_is_no_path_is_refused(given: str) -> None:
    with pytest.raises(UsageError, match="prefix: not a URL path"):
        settings_from(build_parser().parse_args(["webdav", "--prefix", given]), {}, need_mountpoint=False)


def test_a_profile_gives_the_webdav_prefix_and_still_serves_a_mount(tmp_path: Path) -> None:
    """`prefix = ...` in a profile serves the WebDAV tree below it; the same profile mounts (the
    setting is WebDAV's alone, so one profile can describe a server for both)."""
    conf = config(tmp_path, "[profile dav]\nurl = http://pacs:8042\nprefix = pacs/dav/\n")
    arguments = build_parser().parse_args(["webdav", "--config", str(conf), "--profile", "dav"])
    assert settings_from(arguments, {}, need_mountpoint=False).prefix == "/pacs/dav"
    assert settings(["--config", str(conf), "--profile", "dav", "/mnt"]).url == "http://pacs:8042"
