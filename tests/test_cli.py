"""The real `orthancfs` command: every mistake is one line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from orthancfs.demo.samples import Spec, make_dicom
from orthancfs.demo.server import OrthancServer, free_port
from orthancfs.errors import AccessDenied, OrthancUnavailable
from orthancfs.orthanc import ClientSettings, OrthancClient

from . import dataset
from .conftest import LoadedOrthanc, mounted
from .helpers import loop_upload, wait_for
from .proxy import Proxy

USERS = {"alice": "correct horse battery staple"}


def orthancfs(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:  # noqa: ANN003
    return subprocess.run([sys.executable, "-m", "orthancfs", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert result.returncode == code, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orthancfs"), result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def mountpoint(tmp_path: Path) -> Path:
    path = tmp_path / "mnt"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    with OrthancServer(tmp_path_factory.mktemp("secured"), users=USERS) as server:
        yield server


def password_file(tmp_path: Path, password: str, mode: int = 0o600) -> Path:
    path = tmp_path / "password"
    path.write_text(password + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize(("url", "words"), [
    ("ftp://example.org", ["not an http(s) URL"]),
    ("http://", ["not an http(s) URL"]),
    ("http://alice:secret@localhost:8042", ["credentials in the URL"]),
    ("http://localhost:99999", ["bad port"]),
])
def test_bad_url(url: str, words: list[str], mountpoint: Path) -> None:
    assert_one_line_error(orthancfs("mount", "--url", url, str(mountpoint)), 2, *words)


def test_usage_mistakes_are_one_line() -> None:
    assert_one_line_error(orthancfs("mount"), 2, "MOUNTPOINT")
    result = orthancfs("mount", "--timeout", "soon", "/mnt")
    assert_one_line_error(result, 2, "--timeout: not a number of seconds: 'soon'")
    assert "timeout: timeout" not in result.stderr and "convert" not in result.stderr
    assert_one_line_error(orthancfs("frobnicate"), 2, "unknown command 'frobnicate'", "mount, umount")


@pytest.mark.parametrize("argv", [["mnt", "http://pacs:8042", "/mnt/pacs"], ["mnt", "http://pacs:8042"],
                                  ["mnt", "http://pacs:8042", "/mnt/pacs", "--debug"]])
def test_a_mistyped_command_is_named(argv: list[str]) -> None:
    """Not taken for mount(8)'s `SOURCE MOUNTPOINT -o OPTIONS`: a mount point is no URL, and that form has two words."""
    assert_one_line_error(orthancfs(*argv), 2, "unknown command 'mnt': did you mean 'mount'?")


def test_the_mount_helper_form_hints_at_a_mistyped_command(tmp_path: Path) -> None:
    result = orthancfs("mout", "/mnt/pacs", env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path)})
    assert_one_line_error(result, 2, "no [profile mout]", "or a mistyped command: did you mean 'mount'?")


def test_orthanc_down_at_start(mountpoint: Path) -> None:
    started = time.monotonic()
    result = orthancfs("mount", "--url", f"http://127.0.0.1:{free_port()}", str(mountpoint))
    assert_one_line_error(result, 1, "cannot reach Orthanc", "refused")
    assert time.monotonic() - started < 20


def test_something_that_is_not_orthanc(mountpoint: Path, tmp_path: Path) -> None:
    port = free_port()
    web = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                           cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: subprocess.run(["curl", "-sf", url], capture_output=True).returncode == 0, 20, "http.server")
        assert_one_line_error(orthancfs("mount", "--url", url, str(mountpoint)), 1, "does not look like Orthanc")
    finally:
        web.terminate()
        web.wait()


def test_missing_or_wrong_credentials(secured: OrthancServer, mountpoint: Path, tmp_path: Path) -> None:
    assert_one_line_error(orthancfs("mount", "--url", secured.url, str(mountpoint)), 1, "refused the credentials",
                          "401")
    wrong = password_file(tmp_path, "wrong")
    result = orthancfs("mount", "--url", secured.url, "--user", "alice", "--password-file", str(wrong), str(mountpoint))
    assert_one_line_error(result, 1, "refused the credentials")
    assert "wrong" not in result.stderr


def test_right_credentials_from_a_private_file(secured: OrthancServer, tmp_path: Path) -> None:
    secret = password_file(tmp_path, USERS["alice"])
    with mounted(secured.url, tmp_path, "--user", "alice", "--password-file", str(secret)) as mnt:
        with secured.client() as client:
            assert sorted(os.listdir(mnt)) == dataset.root_views(client)
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert USERS["alice"] not in ps
    assert USERS["alice"] not in (tmp_path / "mount-mnt.log").read_text()


def test_password_file_readable_by_others_is_refused(secured: OrthancServer, mountpoint: Path, tmp_path: Path) -> None:
    secret = password_file(tmp_path, USERS["alice"], mode=0o644)
    result = orthancfs("mount", "--url", secured.url, "--user", "alice", "--password-file", str(secret),
                       str(mountpoint))
    assert_one_line_error(result, 2, "chmod 600")
    missing = orthancfs("mount", "--url", secured.url, "--user", "alice", "--password-file", "/nonexistent",
                        str(mountpoint))
    assert_one_line_error(missing, 2, "cannot read password file")


def test_mountpoint_missing_not_a_directory_or_busy(orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    assert_one_line_error(orthancfs("mount", "--url", orthanc.url, str(tmp_path / "nope")), 1, "does not exist")
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert_one_line_error(orthancfs("mount", "--url", orthanc.url, str(a_file)), 1, "not a directory")
    with mounted(orthanc.url, tmp_path) as busy:
        assert_one_line_error(orthancfs("mount", "--url", orthanc.url, str(busy)), 1, "busy")


def test_dev_fuse_missing(orthanc: LoadedOrthanc, mountpoint: Path) -> None:
    """A private mount namespace with an empty /dev: the real situation, on this machine."""
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:  # in a chroot, unshare cannot make the root's propagation private
        pytest.skip(f"cannot create a private mount namespace here: {probe.stderr.strip()}")
    command = (f"mount -t tmpfs tmpfs /dev && exec {sys.executable} -m orthancfs mount "
               f"--url {orthanc.url} {mountpoint}")
    result = subprocess.run(["unshare", "--mount", "sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert_one_line_error(result, 1, "/dev/fuse is missing")


@pytest.fixture(scope="module")
def tls_url(orthanc: LoadedOrthanc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The session Orthanc behind a real TLS proxy with a self-signed certificate: (URL, certificate)."""
    workdir = tmp_path_factory.mktemp("tls")
    key, cert = workdir / "key.pem", workdir / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    proxy = Proxy(orthanc.server.port, tls=context)
    yield f"https://127.0.0.1:{proxy.port}", cert
    proxy.close()


def test_tls_is_verified_by_default(tls_url: tuple[str, Path], mountpoint: Path) -> None:
    url, _ = tls_url
    assert_one_line_error(orthancfs("mount", "--url", url, str(mountpoint)), 1, "TLS", "certificate")


def test_tls_with_ca_file_or_insecure(orthanc: LoadedOrthanc, tls_url: tuple[str, Path], tmp_path: Path) -> None:
    url, cert = tls_url
    expected = orthanc.client.get_bytes(f"/instances/{orthanc.big_instance_id}/file")
    for option in (["--ca-file", str(cert)], ["--insecure"]):
        context = mounted(url, tmp_path, *option, expect_warnings="--insecure" in option)
        with context as mnt:
            assert "P-LI - 李^小龍" in os.listdir(mnt / "by-patients")
            # Large files are spliced from plain-HTTP sockets; over TLS they are copied, and must be as exact.
            [big] = [p for p in (mnt / "by-patients").rglob("*.dcm") if p.stem == orthanc.big_instance_id]
            assert big.read_bytes() == expected
        if "--insecure" in option:  # said once, loudly, not once per request
            assert context.process.log().count("WARNING") == 1


def test_uploads_go_through_tls_and_credentials(tls_url: tuple[str, Path], secured: OrthancServer) -> None:
    """The upload path skips requests' per-call work: the same verification and credentials must hold."""
    url, cert = tls_url
    for upload in (OrthancClient.upload, loop_upload):  # from a thread, and from the mount's trio loop
        data = make_dicom(Spec("UP-TLS", "Up^Tls", generate_uid(), generate_uid()))
        with pytest.raises(OrthancUnavailable, match="certificate"):
            upload(OrthancClient(ClientSettings(url)), data)
        client = OrthancClient(ClientSettings(url, ca_file=str(cert)))
        stored = upload(client, data)
        client.delete(f"/patients/{stored['ParentPatient']}")  # the session's Orthanc is shared: leave it as found
        assert stored["Status"] == "Success"
        with pytest.raises(AccessDenied):
            upload(OrthancClient(ClientSettings(secured.url, "alice", "wrong")), data)
        assert upload(OrthancClient(ClientSettings(secured.url, "alice", USERS["alice"])), data)["Status"] == "Success"


def test_url_defaults_to_the_environment(orthanc: LoadedOrthanc, mountpoint: Path) -> None:
    env = {**os.environ, "ORTHANC_URL": f"http://127.0.0.1:{free_port()}"}
    result = orthancfs("mount", str(mountpoint), env=env)
    assert_one_line_error(result, 1, env["ORTHANC_URL"])


def test_demo_says_what_it_is_and_what_to_reuse(tmp_path: Path) -> None:
    usage = orthancfs("demo", "--help").stdout
    assert "private Orthanc" in usage and "default: ./pacs" in usage
    output, mnt = tmp_path / "demo.out", tmp_path / "pacs"
    with open(output, "w") as out:
        demo = subprocess.Popen([sys.executable, "-m", "orthancfs", "demo", "--allow-delete", str(mnt)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: "Stop with Ctrl-C" in output.read_text() or demo.poll() is not None, 120, "the demo")
        shown = output.read_text()
        assert "DEMO001 - Müller^Jürgen" in shown and os.path.ismount(mnt), shown
        [command] = [line.split() for line in shown.splitlines() if line.strip().startswith("orthancfs webdav")]
        assert command[:3] == ["orthancfs", "webdav", "--url"] and "--allow-delete" in command  # the switches too
        port = free_port()  # the printed command as it is, on a port free here
        webdav = subprocess.Popen([sys.executable, "-m", *command, "--listen", f"127.0.0.1:{port}", "--cache-dir",
                                   str(tmp_path / "dav-cache")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/by-patients/"
            wait_for(lambda: subprocess.run(["curl", "-sf", "-X", "PROPFIND", "-H", "Depth: 1", url],
                                            capture_output=True).returncode == 0, 30, "the printed WebDAV command")
            listing = subprocess.run(["curl", "-s", "-X", "PROPFIND", "-H", "Depth: 1", url], capture_output=True,
                                     text=True).stdout
            assert "<D:displayname>DEMO001 - Müller^Jürgen</D:displayname>" in listing, listing
        finally:
            webdav.terminate()
            webdav.wait(30)
    finally:
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0
    assert not os.path.ismount(mnt)
    assert subprocess.run(["curl", "-sf", command[3] + "/system"], capture_output=True).returncode != 0  # gone
