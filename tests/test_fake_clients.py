"""FakeOrthanc without a real one: every kind of client orthancfs has, credentials, and each fault
switch met through orthancfs's own client and tree.  No Orthanc binary, a few seconds in all."""

from __future__ import annotations

import http.client
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import trio
import urllib3
from pydicom.uid import generate_uid

from orthancfs.demo.samples import make_dicom, series
from orthancfs.errors import AccessDenied, OrthancUnavailable
from orthancfs.orthanc import ClientSettings, LoopUploader
from orthancfs.tree import Kind
from orthancfs.tree.model import WritePolicy

from . import dataset
from .fake_orthanc import ClosingClient, FakeOrthanc
from .fake_store import FakeStore
from .trees import read, snapshot, tree_of, walk


@pytest.fixture(scope="module")
def files() -> list[bytes]:
    """The test PACS without its big multi-frame file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return [make_dicom(spec) for spec in dataset.build().specs if spec.frames == 1]


def new_files(count: int) -> list[bytes]:
    return [make_dicom(spec) for spec in series(count, patient_id="P-NEW", patient_name="Neu^Jörg",
                                                study_uid=generate_uid())]


@pytest.fixture(params=["1.10.1", "1.12.7"])
def fake(request: pytest.FixtureRequest, files: list[bytes]) -> Iterator[FakeOrthanc]:
    with FakeOrthanc(request.param) as server:
        server.add(*files)
        yield server


# --- clients ----------------------------------------------------------------------------------

def test_requests_keeps_its_connection(fake: FakeOrthanc) -> None:
    with requests.Session() as session:
        for _ in range(5):
            assert session.get(fake.url + "/statistics", timeout=10).json()["CountInstances"] > 0
    assert fake.connections == 1


def test_urllib3_and_orthancfs_posts_keep_their_connections(fake: FakeOrthanc, files: list[bytes]) -> None:
    with urllib3.PoolManager() as pool:
        answers = [pool.request("POST", fake.url + "/instances", body=content) for content in files[:3]]
    assert [answer.json()["Status"] for answer in answers] == ["AlreadyStored"] * 3
    assert all(answer.headers["Content-Length"] == str(len(answer.data)) for answer in answers)
    with fake.client() as client:  # its POSTs go through urllib3's pool, its GETs through requests: one pool
        assert client.upload(new_files(1)[0])["Status"] == "Success"
        assert client.get_json("/statistics")["CountInstances"] == len(files) + 1
    assert fake.connections == 2


def test_h11_on_trio_uploads_on_one_connection(fake: FakeOrthanc) -> None:
    with fake.client() as client:
        uploader = LoopUploader(client)

        async def send(contents: list[bytes]) -> list[str]:
            return [(await uploader.upload(content))["Status"] for content in contents]

        try:
            assert trio.run(send, new_files(3)) == ["Success"] * 3
        finally:
            uploader.close()
    assert fake.connections == 1


def test_chunked_bodies_are_read(fake: FakeOrthanc) -> None:
    content = new_files(1)[0]
    answer = requests.post(fake.url + "/instances", data=iter([content[:1000], content[1000:]]), timeout=10)
    assert answer.request.headers["Transfer-Encoding"] == "chunked" and answer.json()["Status"] == "Success"


def test_every_answer_has_a_content_length(fake: FakeOrthanc) -> None:
    instance = fake.store.listing("instances", expand=False)[0]
    asked = [("GET", "/system", None), ("GET", "/patients/nope", None), ("POST", "/patients", b"x"),
             ("POST", "/instances", b"not DICOM"), ("GET", f"/instances/{instance}/file", None),
             ("GET", f"/instances/{instance}/attachments/dicom/md5", None), ("DELETE", "/changes", None)]
    connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        for method, path, body in asked:
            connection.request(method, path, body=body)
            answer = connection.getresponse()
            assert answer.getheader("Content-Length") == str(len(answer.read())), (method, path)
    finally:
        connection.close()
    assert fake.connections == 1


def test_credentials_as_registered_users(files: list[bytes]) -> None:
    with FakeOrthanc(users={"alice": "secret"}) as fake:
        anonymous = requests.get(fake.url + "/system", timeout=10)
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="Orthanc Secure Area"'
        with ClosingClient(ClientSettings(fake.url, "alice", "wrong", retries=0)) as wrong, \
                pytest.raises(AccessDenied):
            wrong.get_json("/system")
        with fake.client() as client:
            uploader = LoopUploader(client)
            try:
                assert trio.run(uploader.upload, files[0])["Status"] == "Success"
            finally:
                uploader.close()


def test_stop_cuts_open_connections() -> None:
    fake = FakeOrthanc()
    fake.start()
    with requests.Session() as session:
        assert session.get(fake.url + "/system", timeout=10).ok
        fake.stop()
        with pytest.raises(requests.ConnectionError):
            session.get(fake.url + "/system", timeout=10)


# --- faults -----------------------------------------------------------------------------------

@pytest.mark.allow_warnings
def test_a_frozen_orthanc_times_out_then_answers(fake: FakeOrthanc) -> None:
    fake.faults.freeze()
    with fake.client(timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(OrthancUnavailable, match="no answer within the timeout"):
            client.get_json("/statistics")
        assert time.monotonic() - started < 2
        fake.faults.resume()
        time.sleep(client.health.fail_fast_seconds)  # the client fails fast for a moment after an outage
        assert client.get_json("/statistics")["CountPatients"] > 0


@pytest.mark.allow_warnings
def test_503_is_retried_then_reported(fake: FakeOrthanc) -> None:
    fake.faults.fail(503, times=2)
    with fake.client(retries=3) as client:
        assert client.get_json("/statistics")["CountPatients"] > 0
    assert fake.faults.failed == 2
    fake.faults.fail(503)
    with fake.client(retries=1) as client, pytest.raises(OrthancUnavailable, match="HTTP 503"):
        client.get_json("/statistics")


@pytest.mark.allow_warnings
@pytest.mark.parametrize("retries", [0, 3])
@pytest.mark.parametrize("from_loop", [False, True], ids=["send", "loop"])
def test_a_lost_answer_is_settled_by_asking(fake: FakeOrthanc, tmp_path: Path, retries: int, from_loop: bool) -> None:
    """Stored, answer lost: with retries the next try says AlreadyStored, without the request fails;
    either way orthancfs asks whether Orthanc holds exactly this file, and the file leaves uploads/."""
    content = new_files(1)[0]
    fake.faults.drop_answers(1)
    with tree_of(fake, tmp_path, metadata_ttl=0, timeout=5, retries=retries) as tree:
        _, handle = tree.create(tree.resolve("uploads"), "lost.dcm")
        handle.write(0, content)
        closing = handle.closing()
        if from_loop:
            uploader = LoopUploader(tree.client)
            try:
                answer, error = trio.run(_post, uploader, closing.body)
            finally:
                uploader.close()
            assert closing.answered(answer, error) is None  # AlreadyStored, or no answer: Orthanc must be asked
            left = closing.confirm()
        else:
            left = closing.send()
        handle.close()
        assert left is True and tree.children(tree.resolve("uploads")) == {}
    assert fake.faults.dropped == 1
    assert fake.store.instance(orthanc_ids(content)[0]).data == content


async def _post(uploader: LoopUploader, body: bytes) -> tuple[object, Exception | None]:
    try:
        return await uploader.upload(body), None
    except OrthancUnavailable as exc:
        return None, exc


def orthanc_ids(*contents: bytes) -> list[str]:
    """The IDs Orthanc gives these files (as a scratch store of the fake computes them)."""
    store = FakeStore((1, 10, 1))
    return [store.store(content)["ID"] for content in contents]


def test_list_limit_cuts_level_lists_silently(fake: FakeOrthanc) -> None:
    fake.faults.list_limit = 2
    with fake.client() as client:
        assert len(client.get_json("/patients", {"expand": "", "since": 0, "limit": 1000})) == 2
        assert client.get_json("/statistics")["CountPatients"] > 2


# --- the model over the fake ------------------------------------------------------------------

def test_the_tree_over_the_fake(fake: FakeOrthanc, tmp_path: Path, files: list[bytes]) -> None:
    """What model tests can do in milliseconds: walk every view, read every file, delete through it."""
    by_id = dict(zip(orthanc_ids(*files), files, strict=True))
    with tree_of(fake, tmp_path, metadata_ttl=60, policy=WritePolicy(deletes=True)) as tree:
        instances = [node for _, node in walk(tree, tree.root) if node.kind is Kind.INSTANCE]
        assert len(instances) == 4 * len(files)
        assert all(read(tree, node) == by_id[node.ident] for node in instances)
        patients = tree.children(tree.resolve("by-patients"))
        name, patient = next(iter(patients.items()))
        tree.rmdir(tree.resolve("by-patients"), name)
        assert name not in tree.children(tree.resolve("by-patients"))
        assert not any(change["ID"] == patient.ident for change in fake.store.changes(0, 10_000)["Changes"])
        assert len(snapshot(tree)) > len(files)
