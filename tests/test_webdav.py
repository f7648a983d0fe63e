"""`orthancfs webdav` with real clients: litmus, rclone, curl/requests; auth, roles, TLS, names."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import bcrypt
import pytest
import requests
from pydicom.uid import generate_uid

from orthancfs.demo.samples import Spec, make_dicom
from orthancfs.demo.server import OrthancServer, free_port, port_open

from . import uploads_data as data
from .helpers import wait_for

STATUS_PROPERTY = "{http://orthancfs.invalid/ns}status"
MIB = 1 << 20


class WebDAV:
    """The real command, serving one Orthanc; stopped with SIGTERM."""

    def __init__(self, orthanc_url: str, work: Path, *args: str, scheme: str = "http"):
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.log = work / f"webdav-{self.port}.log"
        command = [sys.executable, "-X", "dev", "-m", "orthancfs", "webdav", "--url", orthanc_url, "--listen",
                   f"127.0.0.1:{self.port}", "--cache-dir", str(work / "cache"), *args]
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._listening, 30, "the WebDAV server")

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"webdav exited: {self.log.read_text()}")
        return port_open(self.port)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OrthancServer]:
    with OrthancServer(tmp_path / "orthanc") as server, server.client() as client:
        for payload in data.instances(2, "WD1"):
            client.upload(payload)
        for payload in data.instances(1, "ODD:ID*"):
            client.upload(payload)
        yield server


@pytest.fixture
def dav(server: OrthancServer, tmp_path: Path) -> Iterator[WebDAV]:
    webdav = WebDAV(server.url, tmp_path)
    yield webdav
    assert webdav.stop() == 0
    assert "Traceback" not in webdav.log.read_text()


def propfind(url: str, depth: str = "1", **kwargs) -> requests.Response:  # noqa: ANN003
    return requests.request("PROPFIND", url, headers={"Depth": depth}, **kwargs)


def hrefs(response: requests.Response) -> list[str]:
    return [requests.utils.unquote(h) for h in re.findall(r"<(?:\w+:)?href>([^<]+)</", response.text)]


def test_litmus_passes_every_test_on_uploads(dav: WebDAV, tmp_path: Path) -> None:
    # litmus writes debug.log and child.log into its working directory.
    result = subprocess.run(["litmus", f"{dav.url}/uploads/"], capture_output=True, text=True, timeout=600,
                            cwd=tmp_path)
    summaries = re.findall(r"summary for `(\w+)': of (\d+) tests run: (\d+) passed", result.stdout)
    assert {suite for suite, _, _ in summaries} == {"basic", "copymove", "props", "locks", "http"}, result.stdout
    assert sum(int(run) for _, run, _ in summaries) == sum(int(passed) for _, _, passed in summaries) == 104


def test_views_list_and_read_like_the_mount(dav: WebDAV, server: OrthancServer) -> None:
    root = hrefs(propfind(dav.url + "/"))
    assert {"/by-dates/", "/by-patients/", "/by-studies/", "/by-uids/", "/uploads/"} <= set(root)
    patients = hrefs(propfind(dav.url + "/by-patients/"))
    assert "/by-patients/WD1 - Upload^WD1/" in patients
    assert "/by-patients/ODD：ID＊ - Upload^ODD：ID＊/" in patients  # Windows-safe by default
    with server.client() as client:
        instance = client.get_json("/instances")[0]
        expected = client.get_bytes(f"/instances/{instance}/file")
    [path] = [h for h in _walk(dav.url, "/by-patients/") if h.endswith(f"{instance}.dcm")]
    whole = requests.get(dav.url + path)
    assert whole.status_code == 200 and whole.content == expected
    assert whole.headers["ETag"] and whole.headers["Last-Modified"]
    part = requests.get(dav.url + path, headers={"Range": "bytes=128-131"})
    assert part.status_code == 206 and part.content == b"DICM"


def test_a_replaced_instance_gets_its_new_bytes_and_a_new_etag(server: OrthancServer, tmp_path: Path) -> None:
    first, second = data.two_versions()
    with server.client() as client:
        instance_id = client.upload(first)["ID"]
        webdav = WebDAV(server.url, tmp_path, "--metadata-ttl", "1")
        try:
            [path] = [h for h in _walk(webdav.url, "/by-uids/") if h.endswith(".dcm") and
                      requests.get(webdav.url + h).content == first]
            etag = requests.get(webdav.url + path).headers["ETag"]
            assert requests.get(webdav.url + path, headers={"If-None-Match": etag}).status_code == 304
            client.delete(f"/instances/{instance_id}")
            assert client.upload(second)["ID"] == instance_id
            wait_for(lambda: requests.get(webdav.url + path).content == second, 30, "the corrected instance")
            fresh = requests.get(webdav.url + path, headers={"If-None-Match": etag})
            assert fresh.status_code == 200 and fresh.content == second and fresh.headers["ETag"] != etag
        finally:
            assert webdav.stop() == 0


def test_a_known_by_uids_url_is_served_without_listing_every_study(server: OrthancServer, tmp_path: Path) -> None:
    with server.client() as client:
        instance = client.get_json("/instances", {"expand": ""})[0]
        series = client.get_json(f"/series/{instance['ParentSeries']}")
        study = client.get_json(f"/studies/{series['ParentStudy']}")
        expected = client.get_bytes(f"/instances/{instance['ID']}/file")
    uids = [r["MainDicomTags"][tag] for r, tag in ((study, "StudyInstanceUID"), (series, "SeriesInstanceUID"),
                                                   (instance, "SOPInstanceUID"))]
    webdav = WebDAV(server.url, tmp_path, "--debug")
    try:
        assert requests.get("{}/by-uids/{}/{}/{}.dcm".format(webdav.url, *uids)).content == expected
        assert requests.get(f"{webdav.url}/by-uids/1.2.3.4.5.6/").status_code == 404
    finally:
        assert webdav.stop() == 0
    log = webdav.log.read_text()
    assert "POST /tools/lookup" in log and not re.search(r"GET /(patients|studies|series|instances)$", log, re.M), log


def test_a_file_of_several_blocks_is_served_whole_and_in_ranges(server: OrthancServer, tmp_path: Path) -> None:
    """GET streams in 1 MiB blocks: content and ranges must come out exact across block boundaries."""
    spec = Spec("BIG", "Big^File", generate_uid(), generate_uid(), frames=40, rows=256, columns=256)
    with server.client() as client:
        expected = make_dicom(spec)
        client.upload(expected)
    assert len(expected) > 3 * MIB
    webdav = WebDAV(server.url, tmp_path)
    try:
        url = f"{webdav.url}/by-uids/{spec.study_uid}/{spec.series_uid}/{spec.sop_uid}.dcm"
        for _ in range(2):  # while downloading from Orthanc, then from the local copy
            assert requests.get(url).content == expected
        for first, last in ((MIB - 10, MIB + 10), (5, 2 * MIB + 5), (len(expected) - MIB - 1, len(expected) - 1)):
            part = requests.get(url, headers={"Range": f"bytes={first}-{last}"})
            assert part.status_code == 206 and part.content == expected[first:last + 1], (first, last)
        tail = requests.get(url, headers={"Range": "bytes=-1000"})
        assert tail.status_code == 206 and tail.content == expected[-1000:]
    finally:
        assert webdav.stop() == 0


def _walk(base: str, path: str) -> list[str]:
    found = []
    for href in hrefs(propfind(base + path))[1:]:
        found.extend(_walk(base, href) if href.endswith("/") else [href])
    return found


def test_http_rules(dav: WebDAV) -> None:
    assert propfind(dav.url + "/", depth="infinity").status_code == 403
    assert "propfind-finite-depth" in propfind(dav.url + "/by-patients/", depth="infinity").text
    options = requests.options(dav.url + "/uploads/")
    assert "1" in options.headers["DAV"] and "2" in options.headers["DAV"]
    assert requests.put(dav.url + "/by-patients/new.dcm", data=b"x").status_code == 403
    assert requests.request("MKCOL", dav.url + "/by-uids/new").status_code == 403
    assert requests.get(dav.url + "/by-patients/nope/").status_code == 404


def properties(answer: requests.Response) -> dict[str, dict[str, tuple[str, ElementTree.Element]]]:
    """href (unquoted) -> property tag -> (status, element), from a 207 answer."""
    assert answer.status_code == 207, answer.text
    found: dict[str, dict[str, tuple[str, ElementTree.Element]]] = {}
    for response in ElementTree.fromstring(answer.content).findall("{DAV:}response"):
        props = found.setdefault(requests.utils.unquote(response.findtext("{DAV:}href")), {})
        for propstat in response.findall("{DAV:}propstat"):
            status = propstat.findtext("{DAV:}status")
            props.update((prop.tag, (status, prop)) for prop in propstat.find("{DAV:}prop"))
    return found


def test_propfind_of_the_views(server: OrthancServer, tmp_path: Path) -> None:
    """Answered by orthancfs itself (propfind.py): what wsgidav would say, for every kind of entry."""
    spec = Spec("T&J", "Tom & <Jerry>", generate_uid(), generate_uid())
    with server.client() as client:
        instance_id = client.upload(make_dicom(spec))["ID"]
        content = client.get_bytes(f"/instances/{instance_id}/file")
    webdav = WebDAV(server.url, tmp_path)
    try:
        patients = properties(propfind(webdav.url + "/by-patients/"))
        folder = "/by-patients/T&J - Tom & ＜Jerry＞/"  # Windows-safe names by default
        assert patients[folder]["{DAV:}displayname"][1].text == "T&J - Tom & ＜Jerry＞"
        assert patients[folder]["{DAV:}resourcetype"][1].find("{DAV:}collection") is not None
        assert {"{DAV:}creationdate", "{DAV:}getlastmodified"} <= set(patients[folder])
        series = f"/by-uids/{spec.study_uid}/{spec.series_uid}/"
        entries = properties(propfind(webdav.url + series))
        instance = entries[f"{series}{spec.sop_uid}.dcm"]
        assert instance["{DAV:}getcontentlength"][1].text == str(len(content))
        assert instance["{DAV:}getcontenttype"][1].text == "application/dicom"
        etag = instance["{DAV:}getetag"][1].text
        assert etag == requests.head(f"{webdav.url}{series}{spec.sop_uid}.dcm").headers["ETag"]  # quotes included
        assert etag.startswith(f'"{instance_id}')
        document = requests.get(f"{webdav.url}{series}series.json").content
        assert entries[f"{series}series.json"]["{DAV:}getcontentlength"][1].text == str(len(document))
        named = (b'<D:propfind xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:prop><D:getcontentlength/>'
                 b'<Z:Win32FileAttributes/></D:prop></D:propfind>')
        [only] = properties(propfind(webdav.url + series + f"{spec.sop_uid}.dcm", depth="0", data=named)).values()
        assert only["{DAV:}getcontentlength"][0].endswith("200 OK")
        assert only["{urn:schemas-microsoft-com:}Win32FileAttributes"][0].endswith("404 Not Found")
        assert set(only) == {"{DAV:}getcontentlength", "{urn:schemas-microsoft-com:}Win32FileAttributes"}
        propname = b'<D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>'
        names = properties(propfind(webdav.url + series, depth="0", data=propname))[series]
        assert "{DAV:}displayname" in names and not names["{DAV:}displayname"][1].text
        assert propfind(webdav.url + series, data=b"<not xml").status_code == 400
    finally:
        assert webdav.stop() == 0


def raw_hrefs(response: requests.Response) -> list[str]:
    return re.findall(r"<(?:\w+:)?href>([^<]+)</", response.text)


def test_members_are_quoted_as_when_asked_for_directly(server: OrthancServer, tmp_path: Path) -> None:
    """A folder's members get their URLs from the folder's, quoting only their own names (views.py):
    each must be the URL wsgidav gives the same resource asked for by itself."""
    spec = Spec("Q(1),$ 100%", "Ünïcode^Zoë (x) & y", generate_uid(), generate_uid())
    with server.client() as client:
        client.upload(make_dicom(spec))
    webdav = WebDAV(server.url, tmp_path)
    try:
        checked = 0
        for folder in ("/by-patients/", "/by-studies/", f"/by-uids/{spec.study_uid}/"):
            for href in raw_hrefs(propfind(webdav.url + folder))[1:]:
                [direct] = raw_hrefs(propfind(webdav.url + href.replace("&amp;", "&"), depth="0"))
                assert direct == href
                checked += 1
        assert checked >= 6
    finally:
        assert webdav.stop() == 0


LOCK_BODY = (b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
             b'</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>')


def test_only_what_can_be_written_can_be_locked_or_given_properties(dav: WebDAV) -> None:
    """The views are read-only: no locks or dead properties there, so PROPFIND does not list lock
    properties of every member.  Inside uploads/ things lock as WebDAV clients that write expect; the
    root and uploads/ itself do not (a lock there would hold every uploader out)."""
    def lock(path: str) -> int:
        answer = requests.request("LOCK", dav.url + path, data=LOCK_BODY,
                                  headers={"Depth": "0", "Timeout": "Second-60"})
        if answer.ok:
            unlocked = requests.request("UNLOCK", dav.url + path, headers={"Lock-Token": answer.headers["Lock-Token"]})
            assert unlocked.status_code == 204
        return answer.status_code

    [instance] = [h for h in _walk(dav.url, "/by-uids/") if h.endswith(".dcm")][:1]
    assert lock("/by-patients/") == lock(instance) == lock("/") == lock("/uploads/") == 403
    assert requests.request("MKCOL", dav.url + "/uploads/folder/").status_code == 201
    assert lock("/uploads/folder/") == 200 and lock("/uploads/new.txt") == 201
    members = propfind(dav.url + "/by-patients/").text
    assert "lockdiscovery" not in members and "supportedlock" not in members
    assert "supportedlock" in propfind(dav.url + "/uploads/folder/", depth="0").text
    update = (b'<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop><Z:color>red</Z:color></D:prop>'
              b'</D:set></D:propertyupdate>')
    assert requests.request("PROPPATCH", dav.url + instance, data=update).status_code == 403
    assert "color" not in propfind(dav.url + instance, depth="0").text
    assert requests.request("PROPPATCH", dav.url + "/uploads/folder/", data=update).status_code == 207
    assert "red" in propfind(dav.url + "/uploads/folder/", depth="0").text


def test_put_into_uploads_like_the_mount(dav: WebDAV, server: OrthancServer) -> None:
    [good, refused] = data.instances(2, "PUT")
    created = requests.put(dav.url + "/uploads/good.dcm", data=good)
    assert created.status_code == 201
    assert hrefs(propfind(dav.url + "/uploads/")) == ["/uploads/"]  # stored: gone from uploads/
    answer = requests.put(dav.url + "/uploads/bad.dcm", data=refused[:900])
    assert answer.status_code == 415 and "Cannot parse" in answer.text, answer.text
    assert requests.get(dav.url + "/uploads/bad.dcm").content == refused[:900]  # kept
    status = propfind(dav.url + "/uploads/bad.dcm", depth="0").text
    assert "refused by Orthanc" in status
    assert requests.put(dav.url + "/uploads/notes.txt", data=b"hello").status_code == 201
    report = requests.get(dav.url + "/uploads/ORTHANCFS-REPORT.txt").text
    assert "notes.txt" in report and "bad.dcm" in report
    with server.client() as client:
        assert len(client.get_json("/patients")) == 3


def test_rclone_lists_downloads_and_uploads(dav: WebDAV, server: OrthancServer, tmp_path: Path) -> None:
    def rclone(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["rclone", *args], capture_output=True, text=True, timeout=120)

    listed = rclone("lsf", "-R", "--files-only", f"--webdav-url={dav.url}", ":webdav:by-uids")
    assert listed.returncode == 0, listed.stderr
    assert len([line for line in listed.stdout.splitlines() if line.endswith(".dcm")]) == 3
    download = tmp_path / "down"
    assert rclone("copy", f"--webdav-url={dav.url}", ":webdav:by-patients", str(download)).returncode == 0
    with server.client() as client:
        for path in download.rglob("*.dcm"):
            assert path.read_bytes() == client.get_bytes(f"/instances/{path.stem}/file")
    source = tmp_path / "up.dcm"
    source.write_bytes(data.instances(1, "RCLONE")[0])
    assert rclone("copyto", f"--webdav-url={dav.url}", str(source), ":webdav:uploads/up.dcm").returncode == 0
    with server.client() as client:
        assert "RCLONE - Upload^RCLONE" in {f"{p['MainDicomTags']['PatientID']} - {p['MainDicomTags']['PatientName']}"
                                           for p in client.get_json("/patients", params={"expand": ""})}
    refused = rclone("copyto", f"--webdav-url={dav.url}", str(source), ":webdav:by-patients/x.dcm")
    assert refused.returncode != 0
    mountpoint = tmp_path / "rclone-mnt"
    mountpoint.mkdir()
    mount = subprocess.Popen(["rclone", "mount", f"--webdav-url={dav.url}", ":webdav:", str(mountpoint),
                              "--read-only"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.ismount(mountpoint), 30, "rclone mount")
        [path] = [p for p in (mountpoint / "by-patients").rglob("*.dcm") if "RCLONE" in str(p)]
        with server.client() as client:
            assert path.read_bytes() == client.get_bytes(f"/instances/{path.stem}/file")
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
        mount.wait(30)


def users_file(tmp_path: Path, mode: int = 0o600) -> Path:
    def line(name: str, password: str, role: str) -> str:
        digest = hashlib.md5(f"{name}:orthancfs:{password}".encode()).hexdigest()  # noqa: S324 - htdigest's HA1
        return f"{name}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}:{role}:{digest}"

    path = tmp_path / "users"
    path.write_text("\n".join([line("viewer", "v-pass", "read"), line("importer", "i-pass", "upload"),
                               line("admin", "a-pass", "delete")]) + "\n")
    path.chmod(mode)
    return path


def test_auth_and_roles(server: OrthancServer, tmp_path: Path) -> None:
    dav = WebDAV(server.url, tmp_path, "--users-file", str(users_file(tmp_path)), "--allow-delete")
    try:
        assert requests.get(dav.url + "/by-patients/").status_code == 401
        assert propfind(dav.url + "/by-patients/").status_code == 401  # our PROPFIND answers after wsgidav's auth
        assert propfind(dav.url + "/by-patients/", depth="0", auth=("viewer", "wrong")).status_code == 401
        assert requests.get(dav.url + "/by-patients/", auth=("viewer", "wrong")).status_code == 401
        assert propfind(dav.url + "/by-patients/", auth=("viewer", "v-pass")).status_code == 207
        digest = requests.auth.HTTPDigestAuth("viewer", "v-pass")
        assert propfind(dav.url + "/by-patients/", auth=digest).status_code == 207
        assert propfind(dav.url + "/by-patients/", auth=requests.auth.HTTPDigestAuth("viewer", "no")).status_code == 401
        payload = data.instances(1, "ROLE")[0]
        assert requests.put(dav.url + "/uploads/a.dcm", data=payload, auth=("viewer", "v-pass")).status_code == 403
        assert requests.put(dav.url + "/uploads/a.dcm", data=payload, auth=("importer", "i-pass")).status_code == 201
        target = dav.url + "/by-patients/WD1 - Upload^WD1/"
        assert requests.delete(target, auth=("importer", "i-pass")).status_code == 403
        assert requests.delete(target, auth=("admin", "a-pass")).status_code == 204
        with server.client() as client:
            names = {p["MainDicomTags"]["PatientID"] for p in client.get_json("/patients", params={"expand": ""})}
        assert names == {"ODD:ID*", "ROLE"}
        assert "v-pass" not in dav.log.read_text() and "a-pass" not in dav.log.read_text()
    finally:
        dav.stop()


@pytest.mark.parametrize(("args", "message"), [
    (["--listen", "0.0.0.0:{port}"], "refusing anonymous access on 0.0.0.0"),
    (["--users-file", "{shared}"], "chmod 600"),
    (["--cert", "/etc/hostname"], "--cert and --key go together"),
])
def test_refusals_at_start(server: OrthancServer, tmp_path: Path, args: list[str], message: str) -> None:
    shared = users_file(tmp_path, mode=0o644)
    args = [a.format(port=free_port(), shared=shared) for a in args]
    command = [sys.executable, "-m", "orthancfs", "webdav", "--url", server.url, "--cache-dir", str(tmp_path / "c")]
    if "--listen" not in args:
        command += ["--listen", f"127.0.0.1:{free_port()}"]
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1, result


def test_tls(server: OrthancServer, tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    dav = WebDAV(server.url, tmp_path, "--cert", str(cert), "--key", str(key), scheme="https")
    try:
        assert propfind(dav.url + "/", verify=str(cert)).status_code == 207
        with pytest.raises(requests.exceptions.SSLError):
            propfind(dav.url + "/")
    finally:
        dav.stop()


def test_names_as_they_are_when_asked(server: OrthancServer, tmp_path: Path) -> None:
    dav = WebDAV(server.url, tmp_path, "--no-windows-names")
    try:
        assert "/by-patients/ODD:ID* - Upload^ODD:ID*/" in hrefs(propfind(dav.url + "/by-patients/"))
    finally:
        dav.stop()


def test_served_under_a_prefix_like_orthancs_own_webdav(server: OrthancServer, tmp_path: Path) -> None:
    """--prefix /webdav: a client mapped to Orthanc's http://host:8042/webdav/ moves by changing host and
    port; every href, Destination and listing carries the prefix, and nothing is served outside it."""
    webdav = WebDAV(server.url, tmp_path, "--prefix", "/webdav/")
    base = webdav.url + "/webdav"
    try:
        root = hrefs(propfind(base + "/"))
        assert {"/webdav/", "/webdav/by-patients/", "/webdav/uploads/"} <= set(root), root
        patients = hrefs(propfind(base + "/by-patients/"))
        assert all(h.startswith("/webdav/by-patients/") for h in patients) and len(patients) > 1
        [path] = [h for h in _walk(webdav.url, "/webdav/by-uids/") if h.endswith(".dcm")][:1]
        with server.client() as client:
            instance = client.get_json("/instances", {"expand": ""})
        assert requests.get(webdav.url + path).content in {
            server.client().get_bytes(f"/instances/{i['ID']}/file") for i in instance}
        assert requests.put(base + "/uploads/note.txt", data=b"kept").status_code == 201
        moved = requests.request("MOVE", base + "/uploads/note.txt",
                                 headers={"Destination": f"{base}/uploads/moved.txt"})
        assert moved.status_code in (201, 204), moved.text
        assert "/webdav/uploads/moved.txt" in hrefs(propfind(base + "/uploads/"))
        page = requests.get(base + "/by-patients/").text  # the HTML listing: links relative, assets below the prefix
        assert 'href="./WD1%20-%20Upload%5EWD1/"' in page and 'href="/webdav/:dir_browser/style.css"' in page
        assert requests.get(base + "/:dir_browser/style.css").status_code == 200
        for outside in ("/", "/by-patients/", "/uploads/moved.txt", "/webdavx/"):
            assert requests.get(webdav.url + outside).status_code == 404, outside
        listed = subprocess.run(["rclone", "lsf", f"--webdav-url={base}", ":webdav:uploads"], capture_output=True,
                                text=True, timeout=60)
        assert listed.returncode == 0 and "moved.txt" in listed.stdout, listed
        litmus = subprocess.run(["litmus", f"{base}/uploads/"], capture_output=True, text=True, timeout=600,
                                cwd=tmp_path)
        summaries = re.findall(r"summary for `(\w+)': of (\d+) tests run: (\d+) passed", litmus.stdout)
        assert sum(int(run) for _, run, _ in summaries) == sum(int(ok) for _, _, ok in summaries) == 104, litmus.stdout
    finally:
        assert webdav.stop() == 0
    assert "Traceback" not in webdav.log.read_text()
