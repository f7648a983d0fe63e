"""Operating orthancfs like infrastructure: mount(8), fstab, systemd, man pages, umount, logs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orthancfs.demo.server import OrthancServer, free_port

from . import uploads_data as data
from .conftest import LoadedOrthanc, mounted
from .helpers import mount_options, wait_for
from .proxy import Proxy

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


INSTALLED = Path("/usr/local/bin/orthancfs")


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    """mount(8) runs helpers with its own PATH: put `orthancfs` where `make install` does, for these tests."""
    if INSTALLED.is_symlink() and not INSTALLED.exists():
        INSTALLED.unlink()  # left dangling by an earlier run whose venv is gone
    created = not INSTALLED.exists()
    if created:
        INSTALLED.symlink_to(BIN / "orthancfs")
    elif INSTALLED.resolve() != (BIN / "orthancfs").resolve():
        pytest.skip(f"{INSTALLED} is another installation; not replacing it")
    yield
    if created:
        INSTALLED.unlink()


def daemon_gone(mountpoint: Path) -> bool:
    found = subprocess.run(["pgrep", "-f", f"orthancfs.* {mountpoint}( |$)"], capture_output=True)
    return found.returncode != 0


@pytest.fixture
def mountpoint(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    if os.path.ismount(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], check=False)
    wait_for(lambda: daemon_gone(path), 30, "the mount daemon to end")


def test_mount_t_fuse_orthancfs(installed: None, orthanc: LoadedOrthanc, mountpoint: Path, tmp_path: Path) -> None:
    options = f"ro,allow_other,_netdev,x-systemd.automount,metadata_ttl=5,cache_dir={tmp_path / 'cache'}"
    result = subprocess.run(["mount", "-t", "fuse.orthancfs", orthanc.url, str(mountpoint), "-o", options],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert os.path.ismount(mountpoint)  # live when mount(8) returns: no polling needed
    assert "P-LI - 李^小龍" in os.listdir(mountpoint / "by-patients")
    assert " ro," in f" {mount_options(mountpoint)}," and "allow_other" in mount_options(mountpoint)
    subprocess.run(["umount", str(mountpoint)], check=True)
    wait_for(lambda: daemon_gone(mountpoint), 30, "the daemon to end after umount")


def test_fstab_entry_with_a_profile(installed: None, orthanc: LoadedOrthanc, mountpoint: Path,
                                    tmp_path: Path) -> None:
    conf = tmp_path / "orthancfs.conf"
    conf.write_text(f"[defaults]\nmetadata_ttl = 3\n\n[profile test]\nuid = 4321\ncache_dir = {tmp_path / 'c'}\n")
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{orthanc.url}  {mountpoint}  fuse.orthancfs  noauto,_netdev,profile=test,config={conf}  0 0\n")
    result = subprocess.run(["mount", "-T", str(fstab), str(mountpoint)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert os.stat(mountpoint / "by-patients").st_uid == 4321
    subprocess.run(["umount", str(mountpoint)], check=True)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OrthancServer, Path]]:
    """An Orthanc that wants alice's password, and a private file holding it."""
    workdir = tmp_path_factory.mktemp("secured")
    password = workdir / "alice.password"
    password.write_text("pw-for-mount8\n")
    password.chmod(0o600)
    with OrthancServer(workdir / "orthanc", users={"alice": "pw-for-mount8"}) as server, server.client() as client:
        client.upload(data.instances(1, "AUTH")[0])
        yield server, password


def test_mount_t_with_a_user_and_a_password_file(installed: None, secured: tuple[OrthancServer, Path],
                                                 mountpoint: Path, tmp_path: Path) -> None:
    server, password = secured
    refused = subprocess.run(["mount", "-t", "fuse.orthancfs", server.url, str(mountpoint), "-o",
                              f"user=alice,password_file={password}"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "-o username=" in refused.stderr  # mount(8) keeps user= for itself
    options = f"username=alice,password_file={password},cache_dir={tmp_path / 'cache'}"
    result = subprocess.run(["mount", "-t", "fuse.orthancfs", server.url, str(mountpoint), "-o", options],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert os.listdir(mountpoint / "by-patients") == ["AUTH - Upload^AUTH"]
    subprocess.run(["umount", str(mountpoint)], check=True)


def test_fstab_entry_with_a_user_and_a_password_file(installed: None, secured: tuple[OrthancServer, Path],
                                                      mountpoint: Path, tmp_path: Path) -> None:
    server, password = secured
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{server.url}  {mountpoint}  fuse.orthancfs  noauto,_netdev,username=alice,"
                     f"password_file={password},cache_dir={tmp_path / 'cache'}  0 0\n")
    result = subprocess.run(["mount", "-T", str(fstab), str(mountpoint)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert os.listdir(mountpoint / "by-patients") == ["AUTH - Upload^AUTH"]
    assert "pw-for-mount8" not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    subprocess.run(["umount", str(mountpoint)], check=True)


@pytest.mark.parametrize(("url", "options", "message"), [
    ("GOOD", "bogus=1", "unknown mount option -o bogus=1"),
    ("GOOD", "password=hunter2", "would show the secret"),
    ("DOWN", "timeout=5", "cannot reach Orthanc"),
])
def test_mount_helper_errors_are_one_line(installed: None, orthanc: LoadedOrthanc, mountpoint: Path, url: str,
                                         options: str, message: str) -> None:
    url = orthanc.url if url == "GOOD" else f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = subprocess.run(["mount", "-t", "fuse.orthancfs", url, str(mountpoint), "-o", options],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and not os.path.ismount(mountpoint)
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert time.monotonic() - started < 20


def test_systemd_units_verify(tmp_path: Path) -> None:
    units = tmp_path / "units"
    shutil.copytree(ROOT / "systemd", units)
    template = units / "orthancfs@.service"  # verify checks that ExecStart exists: point it at this install
    template.write_text(template.read_text().replace("/usr/local/bin/orthancfs", str(BIN / "orthancfs")))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(units / "orthancfs@main.service"),
                             str(units / "mnt-pacs.mount"), str(units / "mnt-pacs.automount")],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "Type=notify" in template.read_text()


@pytest.mark.parametrize("page", ["orthancfs.1", "orthancfs.conf.5"])
def test_man_pages_render_without_warnings(page: str) -> None:
    result = subprocess.run(["man", "--warnings", "-l", str(ROOT / "man" / page)], capture_output=True, text=True,
                            env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat"})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "SEE ALSO" in result.stdout


def test_man_page_documents_every_option() -> None:
    source = (ROOT / "man" / "orthancfs.1").read_text().replace("\\-", "-")
    for command in ("mount", "umount", "webdav", "demo"):
        usage = subprocess.run([sys.executable, "-m", "orthancfs", command, "--help"], capture_output=True,
                               text=True, check=True).stdout
        for flag in set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", usage)) - {"--help"}:
            assert flag in source, f"{command} {flag} is not in man/orthancfs.1"
    from orthancfs.settings import OPTIONS

    conf = (ROOT / "man" / "orthancfs.conf.5").read_text()
    for option in OPTIONS:
        assert f"-o {option.name}" in source and option.env in source, option.name
        assert f".BR {option.name}".replace("_", "_") in conf or f".B {option.name}" in conf, option.name


def test_umount_waits_for_uploads_open_for_writing(tmp_path: Path) -> None:
    with OrthancServer(tmp_path / "orthanc") as server:
        context = mounted(server.url, tmp_path)
        mnt = context.__enter__()
        writer = open(mnt / "uploads" / "slow.dcm", "wb")  # noqa: SIM115 - held open on purpose
        writer.write(data.instances(1)[0])
        refused = subprocess.run([sys.executable, "-m", "orthancfs", "umount", "--wait", "0.5", str(mnt)],
                                 capture_output=True, text=True)
        assert refused.returncode == 1 and "uploads pending: slow.dcm" in refused.stderr, refused
        assert os.path.ismount(mnt)
        writer.close()  # sent now
        done = subprocess.run([sys.executable, "-m", "orthancfs", "umount", str(mnt)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert context.process.process.wait(30) == 0
        with server.client() as client:
            assert len(client.get_json("/instances")) == 1


def test_sigterm_lets_an_upload_in_flight_finish(tmp_path: Path) -> None:
    payload = data.instances(1)[0]
    (tmp_path / "x.dcm").write_bytes(payload)
    with OrthancServer(tmp_path / "orthanc") as server:
        context = mounted(server.url, tmp_path)
        mnt = context.__enter__()
        server.process.send_signal(signal.SIGSTOP)  # the upload will hang in flight
        copy = subprocess.Popen(["cp", str(tmp_path / "x.dcm"), str(mnt / "uploads")])
        wait_for(lambda: os.getxattr(mnt, "user.orthancfs.pending") == b"x.dcm", 30, "the upload to be in flight")
        context.process.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "waiting for 1 upload(s) to finish: x.dcm" in context.process.log(), 30, "the drain")
        server.process.send_signal(signal.SIGCONT)
        assert copy.wait(60) == 0
        assert context.process.process.wait(60) == 0
        with server.client() as client:
            assert len(client.get_json("/instances")) == 1


def test_systemd_notify_and_journal_friendly_logs(orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": address, "JOURNAL_STREAM": "8:1234"}
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "orthancfs", "mount", "--url", orthanc.url, "--cache-dir",
                                str(tmp_path / "c"), str(mnt)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        ready = receiver.recv(4096).decode()
        assert os.path.ismount(mnt)
        version = orthanc.client.get_json("/system")["Version"]  # whichever this machine has
        assert ready.startswith("READY=1\nSTATUS=Serving ") and f"Orthanc {version}" in ready and str(mnt) in ready
        process.send_signal(signal.SIGTERM)
        assert receiver.recv(4096) == b"STOPPING=1"
        _, log = process.communicate(timeout=30)
    finally:
        receiver.close()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    first = log.splitlines()[0]
    assert first.startswith("INFO orthancfs"), first  # journald adds the time itself


def test_log_file_and_no_secrets_even_with_debug(tmp_path: Path) -> None:
    secret = "s3cret-Passw0rd"
    with OrthancServer(tmp_path / "orthanc", users={"alice": secret}) as server:
        password = tmp_path / "pw"
        password.write_text(secret)
        password.chmod(0o600)
        log_file = tmp_path / "orthancfs.log"
        with mounted(server.url, tmp_path, "--user", "alice", "--password-file", str(password), "--debug",
                     "--log-file", str(log_file)) as mnt:
            os.listdir(mnt / "by-patients")
            ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        text = log_file.read_text()
        assert "GET /patients" in text and re.match(r"\d{4}-\d\d-\d\d ", text)
        assert secret not in text and secret not in ps
        assert "YWxpY2U6" not in text  # base64 of "alice:", i.e. no Authorization header either


def test_client_certificate_for_a_proxy_that_asks(orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    def certificate(name: str) -> tuple[Path, Path]:
        key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out",
                        str(cert)], check=True, capture_output=True)
        return key, cert

    server_key, server_cert = certificate("127.0.0.1")
    client_key, client_cert = certificate("orthancfs")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_cert, server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(client_cert)
    proxy = Proxy(orthanc.server.port, tls=context)
    url = f"https://127.0.0.1:{proxy.port}"
    try:
        refused = subprocess.run([sys.executable, "-m", "orthancfs", "mount", "--url", url, "--ca-file",
                                  str(server_cert), str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "orthancfs:" in refused.stderr
        with mounted(url, tmp_path, "--ca-file", str(server_cert), "--client-cert", str(client_cert),
                     "--client-key", str(client_key)) as mnt:
            assert "P-LI - 李^小龍" in os.listdir(mnt / "by-patients")
            (mnt / "uploads" / "cert.dcm").write_bytes(data.instances(1, "CERT")[0])  # sent from the loop
            assert not (mnt / "uploads" / "cert.dcm").exists()  # stored by the time close() returned
        with orthanc.server.client() as client:  # the session's Orthanc is shared: leave it as found
            [patient] = [p for p in client.get_json("/patients", {"expand": ""})
                         if p["MainDicomTags"]["PatientID"] == "CERT"]
            client.delete(f"/patients/{patient['ID']}")
    finally:
        proxy.close()
