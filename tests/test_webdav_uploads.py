"""uploads/ over WebDAV under real faults: PUTs larger than the disk, cut short, racing, losing their
answer; every resource released; the report a real client can list (cadaver)."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
import requests

from orthancfs.demo.server import OrthancServer

from . import uploads_data as data
from .helpers import free_bytes, small_disk, upload_files_held, wait_for
from .proxy import Proxy
from .test_webdav import WebDAV, propfind

STATUS_PROPERTY = "{http://orthancfs.invalid/ns}status"
MIB = 1 << 20


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OrthancServer]:
    with OrthancServer(tmp_path / "orthanc") as server:
        yield server


def stored(server: OrthancServer) -> list[bytes]:
    with server.client() as client:
        return [client.get_bytes(f"/instances/{i}/file") for i in client.get_json("/instances")]


def status_of(url: str) -> str:
    body = '<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:o="http://orthancfs.invalid/ns"><D:prop>' \
           '<o:status/></D:prop></D:propfind>'
    answer = requests.request("PROPFIND", url, headers={"Depth": "0"}, data=body)
    found = ElementTree.fromstring(answer.content).find(f".//{STATUS_PROPERTY}")
    return "" if found is None else found.text or ""


def test_a_put_larger_than_the_room_answers_507_and_holds_nothing(server: OrthancServer, tmp_path: Path) -> None:
    [small] = data.instances(1, "READ")
    with server.client() as client:
        instance = client.upload(small)["ID"]
    [big] = data.instances(1, "BIG", frames=80, rows=512, columns=512)  # 40 MiB
    with small_disk(tmp_path / "cache", "32m") as cache:
        dav = WebDAV(server.url, tmp_path, "--cache-dir", str(cache))
        try:
            answer = requests.put(dav.url + "/uploads/big.dcm", data=big)
            assert answer.status_code == 507, answer.text
            assert "Traceback" not in answer.text
            assert stored(server) == [small]
            assert status_of(dav.url + "/uploads/big.dcm").startswith("write failed, not sent")
            got = requests.get(dav.url + _by_uids_path(server, instance))
            assert got.status_code == 200 and got.content == small  # reads answer, for every user
            [fits] = data.instances(1, "FITS", frames=4, rows=512, columns=512)  # 2 MiB
            assert requests.put(dav.url + "/uploads/fits.dcm", data=fits).status_code == 507  # the room is taken
            before = free_bytes(cache)
            assert requests.delete(dav.url + "/uploads/big.dcm").status_code == 204
            assert free_bytes(cache) > before + 16 * MIB
            assert requests.put(dav.url + "/uploads/fits.dcm", data=fits).status_code in (201, 204)
            wait_for(lambda: upload_files_held(dav.process.pid, cache) == [], 10, "the PUTs' files to be closed")
        finally:
            assert dav.stop() == 0
    assert sorted(stored(server)) == sorted([small, fits])


def _by_uids_path(server: OrthancServer, instance: str) -> str:
    with server.client() as client:
        item = client.get_json(f"/instances/{instance}")
        series = client.get_json(f"/series/{item['ParentSeries']}")
        study = client.get_json(f"/studies/{series['ParentStudy']}")
    uids = (study["MainDicomTags"]["StudyInstanceUID"], series["MainDicomTags"]["SeriesInstanceUID"],
            item["MainDicomTags"]["SOPInstanceUID"])
    return "/by-uids/{}/{}/{}.dcm".format(*uids)


def test_a_put_cut_short_is_kept_with_its_reason_never_sent(server: OrthancServer, tmp_path: Path) -> None:
    [payload] = data.instances(1, "CUT", frames=8, rows=256, columns=256)
    dav = WebDAV(server.url, tmp_path)
    try:
        with socket.create_connection(("127.0.0.1", dav.port)) as client:
            client.sendall(f"PUT /uploads/cut.dcm HTTP/1.1\r\nHost: x\r\nContent-Length: {len(payload)}\r\n\r\n"
                           .encode() + payload[: len(payload) // 2])
        wait_for(lambda: status_of(dav.url + "/uploads/cut.dcm").startswith("write failed"), 60,
                 "the cut PUT to be settled")
        assert "not received whole" in status_of(dav.url + "/uploads/cut.dcm")
        assert requests.get(dav.url + "/uploads/cut.dcm").content == payload[: len(payload) // 2]
        assert stored(server) == []
        wait_for(lambda: upload_files_held(dav.process.pid, tmp_path / "cache") == [], 10,
                 "the cut PUT's file to be closed")
    finally:
        assert dav.stop() == 0
    assert "Traceback" not in dav.log.read_text()


def test_two_clients_put_one_name_and_both_are_stored(server: OrthancServer, tmp_path: Path) -> None:
    payloads = data.instances(20, "PUT2")
    dav = WebDAV(server.url, tmp_path)
    try:
        for first, second in zip(payloads[::2], payloads[1::2], strict=True):
            answers: list[int] = []
            threads = [threading.Thread(target=_put, args=(dav.url + "/uploads/same.dcm", p, answers))
                       for p in (first, second)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(answers) in ([201, 201], [201, 204]), answers
    finally:
        assert dav.stop() == 0
    assert sorted(stored(server)) == sorted(payloads)


def _put(url: str, payload: bytes, answers: list[int]) -> None:
    answers.append(requests.put(url, data=payload).status_code)


def test_a_put_whose_answer_was_lost_is_confirmed(server: OrthancServer, tmp_path: Path) -> None:
    [payload] = data.instances(1, "LOSTPUT")
    proxy = Proxy(server.port)
    proxy.drop_answers_to = b"POST /instances"
    dav = WebDAV(proxy.url, tmp_path)
    try:
        assert requests.put(dav.url + "/uploads/x.dcm", data=payload).status_code == 201
        assert requests.get(dav.url + "/uploads/x.dcm").content == payload  # the receipt: read back
    finally:
        assert dav.stop() == 0
        proxy.close()
    assert proxy.drops >= 1 and stored(server) == [payload]


def test_every_listed_resource_has_its_live_properties(server: OrthancServer, tmp_path: Path) -> None:
    """cadaver's ls of uploads/ printed 'Error: ORTHANCFS-REPORT.txt 404 Not Found' (no getlastmodified)."""
    dav = WebDAV(server.url, tmp_path)
    try:
        assert requests.put(dav.url + "/uploads/notes.txt", data=b"kept").status_code == 201
        answer = propfind(dav.url + "/uploads/", "1")
        assert "404 Not Found" not in answer.text, answer.text
        listed = subprocess.run(["cadaver", f"{dav.url}/uploads/"], input="ls\nquit\n", capture_output=True,
                                text=True, timeout=60)
        assert "ORTHANCFS-REPORT.txt" in listed.stdout and "Error" not in listed.stdout + listed.stderr, listed
        tree = ElementTree.fromstring(answer.content)
        for response in tree.findall("{DAV:}response"):
            props = {p.tag for p in response.find("{DAV:}propstat/{DAV:}prop")}
            assert {"{DAV:}getlastmodified", "{DAV:}displayname", "{DAV:}resourcetype"} <= props
            etag = response.findtext(".//{DAV:}getetag")
            if etag is not None:
                assert etag.startswith('"') and etag.endswith('"'), etag  # an entity-tag, as the ETag header
        head = requests.head(dav.url + "/uploads/notes.txt")
        assert head.headers["ETag"] == tree.findtext(".//{DAV:}response[2]//{DAV:}getetag") or \
            head.headers["ETag"] in answer.text
        root = propfind(dav.url + "/uploads/", "0").text
        assert "<D:displayname>uploads</D:displayname>" in root or "displayname>uploads<" in root, root
    finally:
        assert dav.stop() == 0
