"""Reading: sizes are Orthanc's FileSize, content is Orthanc's bytes, documents are Orthanc's JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator

from ..fake_orthanc import FakeOrthanc
from .frontend import Frontend
from .pacs import Pacs, by_uids, orthanc_json


def files_below(frontend: Frontend, path: str) -> Iterator[str]:
    for name in frontend.listdir(path):
        below = f"{path}/{name}"
        if frontend.stat(below)[0]:
            yield from files_below(frontend, below)
        else:
            yield below


def test_every_instance_has_orthancs_size_and_bytes(frontend: Frontend, fake: FakeOrthanc, data: Pacs) -> None:
    by_sop, seen = data.by_sop(), set()
    for path in files_below(frontend, "by-uids"):
        if not path.endswith(".dcm"):
            continue
        instance = by_sop[path.rsplit("/", 1)[-1].removesuffix(".dcm")]
        assert frontend.stat(path) == (False, orthanc_json(fake, f"/instances/{instance.id}")["FileSize"])
        assert frontend.read(path) == fake.store.instance(instance.id).data == instance.data
        seen.add(instance.id)
    assert seen == {instance.id for instance in data.instances}


def test_ranges_of_a_multi_frame_file(frontend: Frontend, data: Pacs) -> None:
    """Read first in the middle, while the download is still on its way, then to and past the end."""
    content, path = data.big.data, by_uids(data.big)
    assert len(content) > 5 << 20
    middle = len(content) // 2 + 12345
    assert frontend.read(path, middle, 300_000) == content[middle : middle + 300_000]
    assert frontend.read(path, len(content) - 100, 1000) == content[-100:]
    assert frontend.read(path, len(content), 10) == b""
    assert frontend.read(path) == content


def test_study_and_series_json_are_orthancs(frontend: Frontend, fake: FakeOrthanc, data: Pacs) -> None:
    li = data.of_patient("P-LI")[0]
    study = f"by-uids/{li.spec.study_uid}"
    documents = {f"{study}/study.json": f"/studies/{li.study}",
                 f"{study}/{li.spec.series_uid}/series.json": f"/series/{li.series}"}
    for path, route in documents.items():
        content = frontend.read(path)
        assert json.loads(content) == orthanc_json(fake, route)
        assert frontend.stat(path) == (False, len(content))
