"""FakeOrthanc against a real Orthanc: what makes it a fake of Orthanc, not of our client.

A real Orthanc (this machine's, or ORTHANC_ROOT's) and a FakeOrthanc of the same version get
the same files in the same order: the test PACS (non-ASCII names, missing tags, UIDs shared
across patients, a multi-frame file), a file with every main tag, files Orthanc refuses.  Then
every endpoint orthancfs uses is asked of both: same statuses, same JSON keys at every level,
same values wherever they are deterministic (IDs, tags, child lists and their order, sizes,
MD5s, bytes, change sequence numbers); dates and UUIDs only have to have the right form.
Deletes, lookups and uploads again are compared step by step, and orthancfs's own client and
tree must see the same tree through both.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import trio
from pydicom import dcmread
from pydicom.uid import generate_uid

from orthancfs.demo.samples import Spec, make_dicom, series
from orthancfs.demo.server import OrthancServer
from orthancfs.errors import OrthancFSError
from orthancfs.orthanc import LoopUploader
from orthancfs.tree import Kind, Tree

from . import dataset
from .fake_orthanc import FakeOrthanc
from .trees import read, snapshot, tree_of, walk

LEVELS = ("patients", "studies", "series", "instances")
TIMESTAMP = r"\d{8}T\d{6}"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
ORTHANC_ID = r"[0-9a-f]{8}(-[0-9a-f]{8}){4}"
# Values that differ between two servers by nature; only their form is compared.
VOLATILE = {"LastUpdate": TIMESTAMP, "Date": TIMESTAMP, "FileUuid": UUID, "Uuid": UUID, "HttpPort": r"\d+",
            "DatabaseServerIdentifier": ORTHANC_ID}
STABLE_AGE = 100_000  # seconds: no series becomes stable (and logs a change) while the tests run
USERS = {"alice": "secret"}
ID_TAGS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


# --- the files --------------------------------------------------------------------------------

def _saved(ds: Any) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _edited(content: bytes, **changes: Any) -> bytes:
    """A file with some attributes changed (a value) or removed (None)."""
    ds = dcmread(io.BytesIO(content))
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return _saved(ds)


EVERY_MAIN_TAG = {  # of 1.12's lists (a superset of 1.10's): which level keeps which shows
    "PatientBirthDate": "19700101", "PatientSex": "F", "OtherPatientIDs": ["OTHER-1", "OTHER-2"],
    "AccessionNumber": "ACC-0001", "ReferringPhysicianName": "Referring^Doc", "InstitutionName": "Hôpital Nord",
    "RequestingPhysician": "Requesting^Doc", "RequestedProcedureDescription": "Procedure",
    "TimezoneOffsetFromUTC": "+0100", "SeriesDate": "20240229", "SeriesTime": "101010.123", "Manufacturer": "ACME",
    "StationName": "STATION1", "BodyPartExamined": "HEAD", "SequenceName": "*tfl3d1", "ProtocolName": "Protocol A",
    "ImagesInAcquisition": 2, "NumberOfTemporalPositions": 1, "ImageOrientationPatient": ["1", "0", "0", "0", "1", "0"],
    "SeriesType": ["STATIC", "IMAGE"], "OperatorsName": "Operator^One", "PerformedProcedureStepDescription": "PPS",
    "AcquisitionDeviceProcessingDescription": "ADPD", "ContrastBolusAgent": "None",
    "PerformedProcedureStepStartDate": "20240229", "PerformedProcedureStepStartTime": "101000",
    "InstanceCreationDate": "20240229", "InstanceCreationTime": "101011", "AcquisitionNumber": 7, "ImageIndex": 1,
    "TemporalPositionIdentifier": 1, "ImagePositionPatient": ["-125.5", "0", "12.25"], "ImageComments": "A comment",
}


def odd_files() -> list[bytes]:
    """Files beyond the test PACS: every main tag, values too long, tags missing, other character sets."""
    base = make_dicom(Spec("P-RICH", "Rich^Tags", generate_uid(), generate_uid(), study_description="Every tag"))
    plain = series(2, patient_id="P-PLAIN", patient_name="Plain^Ascii", study_uid=generate_uid())
    return [
        _edited(base, **EVERY_MAIN_TAG),
        _edited(make_dicom(Spec("P-LONG2", "長" * 90, generate_uid(), generate_uid())),
                StudyDescription="x" * 300, SeriesDescription="y" * 250),
        _edited(make_dicom(plain[0]), InstanceNumber=None),
        _edited(make_dicom(plain[1]), SpecificCharacterSet="ISO_IR 100", PatientName="Müller^Zoë",
                SeriesDescription="Série"),
        _edited(make_dicom(Spec("P-NOID", "No^Id", generate_uid(), generate_uid())), PatientID=None),
        _edited(make_dicom(Spec("  PADDED  ", "Padded^ ", generate_uid(), generate_uid(),
                                study_description=" both ends ")), AccessionNumber="A1 "),
    ]


def refused_files(valid: bytes) -> list[bytes]:
    """What Orthanc does not store: not DICOM, empty, cut short, without a UID it needs."""
    return [b"hello world", b"", valid[:300], _edited(valid, SOPInstanceUID=None),
            _edited(valid, SeriesInstanceUID=None), _edited(valid, StudyInstanceUID=None)]


def conformance_files() -> list[bytes]:
    with warnings.catch_warnings():  # invalid dates and over-long values are on purpose
        warnings.simplefilter("ignore", UserWarning)
        files = [make_dicom(spec) for spec in dataset.build().specs] + odd_files()
        same_uids = _edited(files[0], StudyDescription="Another file, the same UIDs")
        return files + [files[0], same_uids] + refused_files(files[1])


def small_files(count: int = 0) -> list[bytes]:
    """A few patients of small files, for tests that change the data."""
    specs = [spec for spec in dataset.build().specs if spec.frames == 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return [make_dicom(spec) for spec in specs[: count or len(specs)]]


# --- comparing --------------------------------------------------------------------------------

def comparable(value: Any, key: str | None = None) -> Any:
    """`value` with the volatile parts replaced by their names, once their form is checked."""
    if isinstance(value, dict):
        return {name: comparable(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [comparable(item) for item in value]
    pattern = VOLATILE.get(key or "")
    if pattern is not None and value is not None:
        assert re.fullmatch(pattern, str(value)), f"{key}: {value!r} is not of the form {pattern}"
        return f"<{key}>"
    return value


def difference(real: Any, fake: Any, path: str = "") -> str | None:
    """Where two JSON values first differ, in words; None if they are equal."""
    if isinstance(real, dict) and isinstance(fake, dict):
        if real.keys() != fake.keys():
            return (f"{path or '.'}: keys only in Orthanc {sorted(real.keys() - fake.keys())}, "
                    f"only in the fake {sorted(fake.keys() - real.keys())}")
        return next((d for key in real if (d := difference(real[key], fake[key], f"{path}.{key}"))), None)
    if isinstance(real, list) and isinstance(fake, list) and len(real) == len(fake):
        return next((d for i, (a, b) in enumerate(zip(real, fake, strict=True))
                     if (d := difference(a, b, f"{path}[{i}]"))), None)
    return None if real == fake else f"{path or '.'}: Orthanc {real!r}, fake {fake!r}"


@dataclass
class Reply:
    status: int
    body: Any  # parsed JSON, or the bytes when not JSON
    headers: requests.structures.CaseInsensitiveDict


def reply(response: requests.Response) -> Reply:
    try:
        body = response.json() if response.content else b""
    except ValueError:
        body = response.content
    return Reply(response.status_code, body, response.headers)


@dataclass
class Pair:
    """A real Orthanc and a fake of its version, loaded alike."""

    real: OrthancServer
    fake: FakeOrthanc
    real_session: requests.Session
    fake_session: requests.Session
    uploads: list[tuple[bytes, Reply, Reply]] = field(default_factory=list)

    def both(self, method: str, path: str, **kwargs: Any) -> tuple[Reply, Reply]:
        real = reply(self.real_session.request(method, self.real.url + path, **kwargs))
        response = self.fake_session.request(method, self.fake.url + path, **kwargs)
        assert response.headers.get("Content-Length") == str(len(response.content)), "no or a wrong Content-Length"
        return real, reply(response)

    def same(self, method: str, path: str, **kwargs: Any) -> Any:
        """Ask both; assert that they answer alike; Orthanc's answer."""
        real, fake = self.both(method, path, **kwargs)
        self.assert_alike(real, fake, f"{method} {path} {kwargs.get('params', '')}")
        return real.body

    @staticmethod
    def assert_alike(real: Reply, fake: Reply, what: str) -> None:
        assert (real.status, type(real.body)) == (fake.status, type(fake.body)), \
            f"{what}: Orthanc {real.status} {str(real.body)[:300]} / fake {fake.status} {str(fake.body)[:300]}"
        found = difference(comparable(real.body), comparable(fake.body))
        assert found is None, f"{what}: {found}"
        if real.status == 200:  # error answers: 1.10 names no type, 1.12 says text/plain
            assert real.headers.get("Content-Type") == fake.headers.get("Content-Type"), what

    def upload(self, content: bytes, check: bool = True) -> Any:
        real, fake = self.both("POST", "/instances", data=content)
        self.uploads.append((content, real, fake))
        if check:
            self.assert_alike(real, fake, f"POST /instances #{len(self.uploads)}")
        return real.body

    def stored(self) -> dict[str, bytes]:
        """The content of every instance, by Orthanc ID (the first file of the UIDs)."""
        return {real.body["ID"]: content for content, real, _ in self.uploads
                if real.status == 200 and real.body["Status"] == "Success"}

    def ids(self, level: str) -> list[str]:
        return self.same("GET", f"/{level}")

    def state(self) -> dict[str, Any]:
        """Everything both hold, compared (after each change): every level, the counts, the changes."""
        lists = {level: self.same("GET", f"/{level}", params={"expand": ""}) for level in LEVELS}
        return {**lists, "statistics": self.same("GET", "/statistics"),
                "changes": self.same("GET", "/changes", params={"limit": 10_000})}


@contextlib.contextmanager
def open_pair(workdir: Path, users: dict[str, str] | None = None) -> Iterator[Pair]:
    """A real Orthanc in `workdir` and a FakeOrthanc of the version it reports, both empty."""
    with OrthancServer(workdir, users=users, config={"StableAge": STABLE_AGE}) as real:
        auth = next(iter(users.items())) if users else None
        version = requests.get(real.url + "/system", auth=auth, timeout=30).json()["Version"]
        with FakeOrthanc(version, users, name=real.config()["Name"]) as fake, \
                requests.Session() as real_session, requests.Session() as fake_session:
            real_session.auth = fake_session.auth = auth
            for session in (real_session, fake_session):  # 1.10 would gzip even the 30 MB file
                session.headers["Accept-Encoding"] = "identity"
            yield Pair(real, fake, real_session, fake_session)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Both servers with the conformance files, for tests that change nothing."""
    with open_pair(tmp_path_factory.mktemp("conformance")) as opened:
        for content in conformance_files():
            opened.upload(content, check=False)  # compared by a test, not here
        yield opened


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Pair]:
    """Both servers with a few patients, asking for credentials, for one test that changes them."""
    with open_pair(tmp_path / "orthanc", USERS) as opened:
        for content in small_files():
            opened.upload(content)
        yield opened


# --- endpoint by endpoint ---------------------------------------------------------------------

def test_uploads_are_answered_alike(pair: Pair) -> None:
    for number, (_, real, fake) in enumerate(pair.uploads, 1):
        Pair.assert_alike(real, fake, f"POST /instances of file #{number}")
    answers = [real.body.get("Status") if real.status == 200 else real.status for _, real, _ in pair.uploads]
    assert answers.count("AlreadyStored") == 2 and 400 in answers and 404 in answers


def test_system_and_statistics(pair: Pair) -> None:
    system = pair.same("GET", "/system")
    assert ("Capabilities" in system) == (tuple(map(int, system["Version"].split(".")[:3])) >= (1, 12, 5))
    pair.same("GET", "/statistics")


@pytest.mark.parametrize("level", LEVELS)
def test_level_lists_and_their_pages(pair: Pair, level: str) -> None:
    ids = pair.ids(level)
    assert [item["ID"] for item in pair.same("GET", f"/{level}", params={"expand": ""})] == ids
    count = len(ids)
    for since, limit in [(0, 1), (0, 5), (3, 4), (count - 1, 10), (count, 10), (count + 5, 1), (0, 0)]:
        for expand in ({}, {"expand": ""}):
            pair.same("GET", f"/{level}", params={"since": since, "limit": limit, **expand})
    for wrong in ({"since": 0}, {"limit": 2}, {"since": "x", "limit": 1}, {"expand": "", "since": 1}):
        pair.same("GET", f"/{level}", params=wrong)


@pytest.mark.parametrize("level", LEVELS)
def test_every_resource(pair: Pair, level: str) -> None:
    for ident in pair.ids(level):
        pair.same("GET", f"/{level}/{ident}")


@pytest.mark.parametrize("level, below", [("patients", "studies"), ("patients", "series"), ("patients", "instances"),
                                          ("studies", "series"), ("studies", "instances"), ("series", "instances")])
def test_child_and_grandchild_routes(pair: Pair, level: str, below: str) -> None:
    for ident in pair.ids(level):
        pair.same("GET", f"/{level}/{ident}/{below}")


def test_no_route_upwards(pair: Pair) -> None:
    series_id = pair.ids("series")[0]
    pair.same("GET", f"/series/{series_id}/studies")
    pair.same("GET", f"/series/{series_id}/patients")


def test_instance_files_and_attachments(pair: Pair) -> None:
    stored = pair.stored()
    for ident in pair.ids("instances"):
        assert pair.same("GET", f"/instances/{ident}/file") == stored[ident]
        info = pair.same("GET", f"/instances/{ident}/attachments/dicom/info")
        assert pair.same("GET", f"/instances/{ident}/attachments/dicom/md5") == info["UncompressedMD5"].encode()
        for session, url in ((pair.real_session, pair.real.url), (pair.fake_session, pair.fake.url)):
            own_info = session.get(f"{url}/instances/{ident}/attachments/dicom/info").json()
            assert session.get(f"{url}/instances/{ident}").json()["FileUuid"] == own_info["Uuid"]


@pytest.mark.parametrize("method, path", [
    ("GET", "/patients/nope"), ("GET", "/studies/nope"), ("GET", "/series/nope"), ("GET", "/instances/nope"),
    ("GET", "/patients/nope/studies"), ("GET", "/studies/nope/instances"), ("GET", "/series/nope/instances"),
    ("GET", "/instances/nope/file"), ("GET", "/instances/nope/attachments/dicom/info"),
    ("GET", "/instances/nope/attachments/dicom/md5"), ("GET", "/nothing"), ("DELETE", "/instances/nope"),
    ("DELETE", "/patients/nope"), ("POST", "/patients"), ("GET", "/tools/lookup"), ("PUT", "/instances"),
])
def test_what_is_not_there(pair: Pair, method: str, path: str) -> None:
    pair.same(method, path)


def test_lookups(pair: Pair) -> None:
    values = {"p-muller", "P-LONG-", "dup 1", "DUP_1", "ACC-0001", "nothing", "", " P-LI ", dataset.SHARED_STUDY_UID}
    for level, tag in zip(LEVELS, ID_TAGS, strict=True):
        values |= {item["MainDicomTags"].get(tag, "") for item in pair.same("GET", f"/{level}", params={"expand": ""})}
    for value in sorted(values):
        pair.same("POST", "/tools/lookup", data=value.encode())


def test_changes_page_by_page(pair: Pair) -> None:
    pair.same("GET", "/changes")
    since = 0
    while not (page := pair.same("GET", "/changes", params={"since": since, "limit": 7}))["Done"]:
        since = page["Last"]
    for params in ({"since": 10_000}, {"limit": 0}, {"since": 5, "limit": 0}, {"since": "x"},
                   {"since": 3, "limit": "x"},
                   {"limit": 100_000}, {"last": ""}):
        pair.same("GET", "/changes", params=params)


# --- changes, step by step --------------------------------------------------------------------

def test_credentials(fresh: Pair) -> None:
    for auth in (None, ("alice", "wrong"), ("bob", "secret"), ("alice", "secret")):
        real, fake = (reply(requests.get(url + "/statistics", auth=auth, timeout=30))
                      for url in (fresh.real.url, fresh.fake.url))
        Pair.assert_alike(real, fake, f"credentials {auth}")
        assert real.headers.get("WWW-Authenticate") == fake.headers.get("WWW-Authenticate")


def test_deletes_and_uploads_again(fresh: Pair) -> None:
    series = {s["ID"]: s for s in fresh.same("GET", "/series", params={"expand": ""})}
    studies = {s["ID"]: s for s in fresh.same("GET", "/studies", params={"expand": ""})}
    patients = {p["ID"]: p for p in fresh.same("GET", "/patients", params={"expand": ""})}
    stored = fresh.stored()
    lone = next(s for s in series.values() if len(s["Instances"]) == 1
                and len(patients[studies[s["ParentStudy"]]["ParentPatient"]]["Studies"]) == 1)["Instances"][0]
    sibling = next(s for s in series.values() if len(s["Instances"]) > 1)["Instances"][0]
    steps = [
        f"/instances/{sibling}",  # its series stays
        f"/series/{next(s for s in studies.values() if len(s['Series']) > 1)['Series'][0]}",  # its study stays
        f"/studies/{next(p for p in patients.values() if len(p['Studies']) > 1)['Studies'][0]}",  # its patient stays
        f"/instances/{lone}",  # the last of its patient: all of it goes
        f"/patients/{next(iter(patients))}",
    ]
    for path in steps:
        fresh.same("DELETE", path)
        fresh.state()
    fresh.same("DELETE", steps[-1])  # once more: 404
    fresh.upload(stored[lone])  # back, with new change entries
    fresh.state()
    fresh.same("DELETE", "/changes")
    fresh.state()  # the sequence goes on from where it was
    fresh.upload(stored[lone])  # AlreadyStored
    fresh.upload(stored[sibling])  # deleted with its patient since: all new again
    fresh.state()


# --- orthancfs through both -------------------------------------------------------------------

@pytest.mark.parametrize("bulk_limit", [50_000, 0], ids=["bulk", "folder-by-folder"])
def test_the_tree_is_the_same_through_both(pair: Pair, tmp_path: Path, bulk_limit: int) -> None:
    with tree_of(pair.real, tmp_path / "real", metadata_ttl=60, bulk_limit=bulk_limit) as real, \
            tree_of(pair.fake, tmp_path / "fake", metadata_ttl=60, bulk_limit=bulk_limit) as fake:
        seen = snapshot(real)
        assert snapshot(fake) == seen
        for path, (kind, _) in seen.items():
            if kind == Kind.INSTANCE.value:
                assert read(fake, fake.resolve(path)) == read(real, real.resolve(path)), path
            elif kind == Kind.JSON.value:
                documents = [json.loads(read(tree, tree.resolve(path))) for tree in (real, fake)]
                assert difference(*map(comparable, documents)) is None, path
        assert fake.statfs() == real.statfs()


@pytest.mark.parametrize("backend", ["real", "fake"])
def test_the_tree_reads_every_file(pair: Pair, tmp_path: Path, backend: str) -> None:
    """The same test against each: its duration is what the fake saves."""
    stored = pair.stored()
    with tree_of(pair.real if backend == "real" else pair.fake, tmp_path, metadata_ttl=60) as tree:
        read_ids = [node.ident for _, node in walk(tree, tree.root) if node.kind is Kind.INSTANCE
                    and read(tree, node) == stored[node.ident]]
    assert sorted(set(read_ids)) == sorted(stored) and len(read_ids) == 4 * len(stored)


def _send(tree: Tree, name: str, content: bytes, from_loop: bool) -> str:
    """Write a file into uploads/ and close it, as the WebDAV frontend (send) or the mount (a trio loop) do."""
    _, handle = tree.create(tree.resolve("uploads"), name)
    try:
        handle.write(0, content)
        closing = handle.closing()
        if from_loop and closing.body is not None:
            uploader = LoopUploader(tree.client)
            try:
                answer, error = trio.run(_post, uploader, closing.body)
            finally:
                uploader.close()
            left = closing.answered(answer, error)
            left = closing.confirm() if left is None else left
        else:
            left = closing.send()
        return f"left uploads/: {left}"
    except OrthancFSError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        handle.close()


async def _post(uploader: LoopUploader, body: bytes) -> tuple[Any, OrthancFSError | None]:
    try:
        return await uploader.upload(body), None
    except OrthancFSError as exc:
        return None, exc


@pytest.mark.allow_warnings
def test_uploads_through_the_tree_end_alike(fresh: Pair, tmp_path: Path) -> None:
    known = small_files(1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        new = [make_dicom(spec) for spec in series(3, patient_id="P-NEW", patient_name="Neu^Jörg",
                                                      study_uid=generate_uid())]
    sends = [("a.dcm", new[0], False), ("b.dcm", new[1], True), ("again.dcm", known, False),
             ("twin.dcm", _edited(known, StudyDescription="Other"), True), ("note.txt", b"not DICOM", False),
             ("cut.dcm", new[2][:300], True), ("late.dcm", new[2], False)]
    seen: dict[str, Any] = {}
    for backend in (fresh.real, fresh.fake):
        with tree_of(backend, tmp_path / str(backend.port), metadata_ttl=0) as tree:
            outcomes = [_send(tree, name, content, loop) for name, content, loop in sends]
            kept = {name: tree.status(node) for name, node in tree.children(tree.resolve("uploads")).items()}
            seen[type(backend).__name__] = (outcomes, kept, snapshot(tree))
    assert seen["FakeOrthanc"] == seen["OrthancServer"]
    fresh.state()
