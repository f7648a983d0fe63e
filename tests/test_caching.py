"""Caches: bulk listings equal folder-by-folder ones, stale data expires, content is reused, bounds hold."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orthancfs.cache import PARTIAL_KEPT, MetadataCache
from orthancfs.content import ContentStore
from orthancfs.demo.server import OrthancServer
from orthancfs.orthanc import Level
from orthancfs.tree import Tree, model
from orthancfs.tree.index import arrived_children
from orthancfs.tree.nodes import Role, directory
from orthancfs.tree.walks import WalkSpotter

from . import uploads_data as data
from .conftest import LoadedOrthanc, mounted
from .fake_orthanc import FakeOrthanc
from .helpers import wait_for
from .test_tree import walk
from .trees import tree_of

TTL = 2.0


def snapshot(tree: Tree) -> dict[str, tuple[int, bytes | None]]:
    """Every path with its size, and the content of every JSON document."""
    found = {}
    for path, node in walk(tree, tree.root):
        content = None
        if node.kind.value == "json":
            handle = tree.open(node)
            content = handle.read(0, 1 << 20)
            handle.close()
        found[path] = (node.size, content)
    return found


def test_bulk_listings_equal_folder_by_folder_listings(orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    bulk = Tree(orthanc.client, tmp_path / "a", metadata_ttl=60)
    # Each folder by its own child route: no walk is ever spotted, so no grandchild routes either.
    folder_by_folder = Tree(orthanc.client, tmp_path / "b", metadata_ttl=60, bulk_limit=0, walks=WalkSpotter(-1))
    # Walked folder by folder: patients and studies list their children's children in one request.
    by_grandchildren = Tree(orthanc.client, tmp_path / "d", metadata_ttl=60, bulk_limit=0)
    # Pages of three: the walk runs while the bulk lists arrive, so many folders are
    # listed from partly loaded lists.
    while_loading = Tree(orthanc.client, tmp_path / "c", metadata_ttl=60, page_size=3)
    assert bulk.index.in_bulk_mode() and not folder_by_folder.index.in_bulk_mode()
    expected = snapshot(folder_by_folder)
    assert snapshot(bulk) == expected
    assert snapshot(while_loading) == expected
    assert snapshot(by_grandchildren) == expected


def test_bulk_lists_load_for_walks_not_for_browsing(orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    """Going down one folder of each kind loads nothing tree-wide (it would only slow that folder's
    own request); a second folder of one kind, a walk's signature, starts the bulk lists."""
    tree = Tree(orthanc.client, tmp_path, metadata_ttl=60)
    deeper = [Level.STUDIES, Level.SERIES, Level.INSTANCES]

    def loaded() -> list[Level]:
        return [level for level in deeper if tree.index.level_loaded(level)]

    patient = tree.resolve("by-patients/P-MULLER - Müller^Jürgen")  # looked up, not listed
    first_study, second_study = tree.children(patient).values()
    series = next(iter(tree.children(first_study).values()))
    assert tree.children(series)
    assert tree.index._walk_prepared is None and loaded() == []
    tree.children(second_study)
    wait_for(lambda: loaded() == list(deeper), 30, "the bulk lists")
    tree.close()


def test_a_walk_folder_by_folder_lists_grandchildren_in_one_request(orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    tree = Tree(orthanc.client, tmp_path, metadata_ttl=60, bulk_limit=0)
    assert not tree.index.in_bulk_mode()

    def cached(level: Level, ids: list[str]) -> list[bool]:
        return [tree.index.children_at_hand(level, i) for i in ids]

    patient = tree.resolve("by-patients/P-MULLER - Müller^Jürgen")
    first_study, second_study = tree.children(patient).values()
    series_of = {s.ident: [n.ident for n in tree.children(s).values()] for s in (first_study, second_study)}
    assert not any(cached(Level.SERIES, series_of[first_study.ident]))  # browsing: nothing ahead
    assert all(cached(Level.SERIES, series_of[second_study.ident]))  # walking
    for ident in series_of[second_study.ident]:
        assert tree.index.cache.peek(("children", Level.SERIES, ident)) == orthanc.client.get_json(
            f"/series/{ident}/instances")
    another = next(p for name, p in tree.children(tree.resolve("by-patients")).items() if name != patient.name)
    studies = [s.ident for s in tree.children(another).values()]  # a second patient: its studies' series
    assert all(cached(Level.STUDIES, studies))
    tree.close()


def test_a_walk_is_two_folders_of_one_kind_listed_close_together() -> None:
    now = [0.0]
    spotter = WalkSpotter(window=5.0, clock=lambda: now[0])
    studies = [directory("by-studies", Role.STUDY, ident, 0) for ident in ("a", "b", "c")]
    patient = directory("by-patients", Role.PATIENT, "p", 0)
    assert not spotter.listed(studies[0])
    assert not spotter.listed(studies[0])  # the same folder again keeps its verdict: a refresh, not a walk
    assert not spotter.listed(patient)  # another kind
    now[0] = 4.0
    assert spotter.listed(studies[1])
    assert spotter.listed(studies[1])  # ...also when it is walking (FUSE lists from the cache, then in a thread)
    now[0] = 9.5
    assert not spotter.listed(studies[2])  # too long after
    assert not spotter.listed(directory("by-patients", Role.VIEW, "", 0))
    assert spotter.listed(directory("by-studies", Role.VIEW, "", 0))
    # The series of one study are few: walking them is no reason to load the whole index.
    assert not any(spotter.listed(directory("by-uids", Role.SERIES, ident, 0)) for ident in ("x", "y", "z"))


def test_a_folder_is_listed_from_arrived_pages_only_when_they_hold_all_its_children(
        orthanc: LoadedOrthanc) -> None:
    [series] = [s for s in orthanc.client.get_json("/series", {"expand": ""}) if len(s["Instances"]) > 1][:1]
    instances = orthanc.client.get_json(f"/series/{series['ID']}/instances")
    arriving = {i["ID"]: i for i in instances[1:]}  # all but one have arrived
    assert arrived_children(series, "Instances", arriving) is None
    arriving[instances[0]["ID"]] = instances[0]
    listed = arrived_children(series, "Instances", arriving)
    assert listed is not None and sorted(i["ID"] for i in listed) == sorted(i["ID"] for i in instances)
    assert arrived_children({"ID": "empty"}, "Instances", arriving) == []


def test_the_cache_stamp_changes_with_every_store_invalidation_and_expiry() -> None:
    now = [100.0]
    cache = MetadataCache(10.0, clock=lambda: now[0])
    first = cache.stamp()
    cache.get("a", lambda: 1)
    stored = cache.stamp()
    assert stored != first
    assert cache.get("a", lambda: 2) == 1 and cache.peek("a") == 1
    now[0] += 9.9
    assert cache.stamp() == stored  # hits and time within the TTL change nothing
    now[0] += 0.1
    expired = cache.stamp()
    assert expired != stored and cache.peek("a") is None  # "a" is gone: what was computed from it is stale
    assert cache.stamp() == expired
    cache.fill(lambda: {"b": 1, "c": 2})
    filled = cache.stamp()
    assert filled != expired
    cache.invalidate("b")
    assert cache.stamp() != filled
    assert MetadataCache(0).stamp() is None  # nothing kept: nothing holds


def test_the_stamp_stays_through_invalidations_of_nothing_kept_or_on_its_way() -> None:
    cache = MetadataCache(60.0)
    cache.get("a", lambda: 1)
    kept = cache.stamp()
    assert cache.invalidate_where(lambda key: key == "elsewhere") == 0
    assert cache.stamp() == kept  # nothing computed from the cache is stale

    def named_while_on_its_way() -> int:
        cache.invalidate_where(lambda key: key == "b")  # its caller computes from this answer
        return 2

    assert cache.get("b", named_while_on_its_way) == 2 and cache.peek("b") is None
    assert cache.stamp() != kept
    on_its_way = cache.stamp()
    assert cache.invalidate_where(lambda key: key == "a") == 1
    assert cache.stamp() != on_its_way


def test_answers_on_their_way_are_kept_unless_an_invalidation_meanwhile_named_them() -> None:
    cache = MetadataCache(60.0)

    def answer_while(invalidate: Callable[[], object], value: object) -> Callable[[], object]:
        def compute() -> object:
            invalidate()  # what another thread does while Orthanc answers
            return value
        return compute

    cache.get("kept", answer_while(lambda: cache.invalidate_where(lambda key: key == "other"), 1))
    cache.get("dropped", answer_while(lambda: cache.invalidate_where(lambda key: key == "dropped"), 2))
    cache.get("one", answer_while(lambda: cache.invalidate("one"), 3))
    assert (cache.peek("kept"), cache.peek("dropped"), cache.peek("one")) == (1, None, None)
    cache.fill(answer_while(lambda: cache.invalidate_where(lambda key: key == "b"), {"a": 1, "b": 2}))
    assert (cache.peek("a"), cache.peek("b")) == (1, None)
    cache.get("cleared", answer_while(lambda: (cache.invalidate_where(lambda key: False), cache.invalidate()), 4))
    assert cache.peek("cleared") is None  # everything was dropped meanwhile
    many = [lambda: cache.invalidate_where(lambda key: False)] * (PARTIAL_KEPT + 1)
    cache.get("old", answer_while(lambda: [invalidate() for invalidate in many], 5))
    assert cache.peek("old") is None  # older than every invalidation remembered: not trusted


def test_a_listing_is_answered_again_while_nothing_it_came_from_changed(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sourced: list[str] = []
    sources = model.views.sources
    monkeypatch.setattr(model.views, "sources", lambda index, node: sourced.append(node.name) or sources(index, node))
    with FakeOrthanc() as fake, tree_of(fake, tmp_path, metadata_ttl=0.5) as tree:
        fake.add(data.instances(1, "OLD")[0])
        view = tree.lookup(tree.root, "by-patients")
        tree.children(view)  # computed while its answers were being stored: computed once more
        listed = tree.children(view)
        asked, computed = len(fake.requests), len(sourced)
        assert tree.children(view) is listed and tree.children(view, prefetch=False) is listed
        assert len(fake.requests) == asked and len(sourced) == computed  # not even the cache was asked
        fake.add(data.instances(1, "NEW")[0])
        assert list(tree.children(view)) == ["OLD - Upload^OLD"]  # within the TTL
        time.sleep(0.6)
        assert list(tree.children(view)) == ["NEW - Upload^NEW", "OLD - Upload^OLD"]
        tree.index.cache.invalidate()
        assert tree.children(view) is not listed


def test_stale_listings_expire_within_the_ttl(tmp_path: Path) -> None:
    with OrthancServer(tmp_path / "orthanc") as server, server.client() as client:
        client.upload(data.instances(1, "OLD")[0])
        with mounted(server.url, tmp_path, "--metadata-ttl", str(TTL)) as mnt:
            assert os.listdir(mnt / "by-patients") == ["OLD - Upload^OLD"]
            answer = client.upload(data.instances(1, "NEW")[0])  # another client adds a patient
            added = time.monotonic()
            wait_for(lambda: "NEW - Upload^NEW" in os.listdir(mnt / "by-patients"), 30, "the new patient")
            assert time.monotonic() - added <= TTL + 1.0
            client.delete(f"/patients/{answer['ParentPatient']}")  # ...and deletes it again
            deleted = time.monotonic()
            wait_for(lambda: os.listdir(mnt / "by-patients") == ["OLD - Upload^OLD"], 30, "the deletion")
            assert time.monotonic() - deleted <= TTL + 1.0


def test_a_replaced_instance_is_read_anew_within_the_ttl(tmp_path: Path) -> None:
    """Orthanc derives IDs from UIDs: an instance deleted and sent again (or overwritten, with
    OverwriteInstances) keeps its ID and every path, with other bytes.  Neither the content cache
    nor the kernel's page cache may serve the old ones past the TTL."""
    first, second = data.two_versions()
    with OrthancServer(tmp_path / "orthanc") as server, server.client() as client:
        instance_id = client.upload(first)["ID"]
        with mounted(server.url, tmp_path, "--metadata-ttl", str(TTL)) as mnt:
            [path] = (mnt / "by-uids").rglob("*.dcm")
            assert path.read_bytes() == first
            with path.open("rb") as reader:  # a reader that opened before the change
                client.delete(f"/instances/{instance_id}")
                assert client.upload(second)["ID"] == instance_id
                replaced = time.monotonic()
                wait_for(lambda: path.read_bytes() == second, 30, "the corrected instance")
                assert time.monotonic() - replaced <= TTL + 1.0
                assert reader.read() == first  # ...keeps what it opened: one consistent version
            assert path.read_bytes() == second  # and the page cache now holds the new bytes


def downloads(log: str, instance_id: str) -> int:
    return log.count(f"GET /instances/{instance_id}/file")


def test_a_second_read_costs_no_request(orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    with mounted(orthanc.url, tmp_path, "--debug") as mnt:
        [by_patient] = [p for p in (mnt / "by-patients").rglob("*.dcm") if p.stem == orthanc.big_instance_id]
        [by_uid] = [p for p in (mnt / "by-uids").rglob("*.dcm") if p.stat().st_size == by_patient.stat().st_size]
        first = by_patient.read_bytes()
        assert by_uid.read_bytes() == first  # another path, another inode: served from the content cache
        assert by_patient.read_bytes() == first  # the same inode: the kernel's page cache
    assert downloads((tmp_path / "mount-mnt.log").read_text(), orthanc.big_instance_id) == 1


def test_without_a_content_cache_each_open_downloads(orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    with mounted(orthanc.url, tmp_path, "--debug", "--cache-size", "0") as mnt:
        [by_patient] = [p for p in (mnt / "by-patients").rglob("*.dcm") if p.stem == orthanc.big_instance_id]
        [by_uid] = [p for p in (mnt / "by-uids").rglob("*.dcm") if p.stat().st_size == by_patient.stat().st_size]
        assert by_patient.read_bytes() == by_uid.read_bytes()
    assert downloads((tmp_path / "mount-mnt.log").read_text(), orthanc.big_instance_id) == 2


def test_the_content_cache_is_bounded(orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    instances = [i for i in orthanc.client.get_json("/instances", params={"expand": ""}) if i["FileSize"] < 1 << 20]
    budget = 2 * 10_000  # the store counts the sizes it is told: each entry 10,000 here, room for two
    store = ContentStore(orthanc.client, str(tmp_path), capacity_bytes=budget)
    for instance in instances[:5]:
        handle = store.open_instance(instance["ID"], 10_000)
        assert handle.read(0, 200)[128:132] == b"DICM"
        handle.close()
        assert store.cached_bytes() <= budget
    assert list(store._spools) == [i["ID"] for i in instances[3:5]]  # the most recently used stay
    store.close()


def test_spools_in_use_are_never_evicted(orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    instances = orthanc.client.get_json("/instances", params={"expand": ""})[:3]
    store = ContentStore(orthanc.client, str(tmp_path), capacity_bytes=0)
    handles = [store.open_instance(i["ID"], i["FileSize"]) for i in instances]
    for handle, instance in zip(handles, instances, strict=True):
        assert len(handle.read(0, instance["FileSize"])) == instance["FileSize"]
    handles[0].close()
    assert len(store._spools) == 2
    for handle in handles[1:]:
        handle.close()
    assert store._spools == {}
    store.close()


def test_another_version_is_a_new_spool_and_the_old_one_goes_with_its_last_reader(
        orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    instance = next(i for i in orthanc.client.get_json("/instances", params={"expand": ""}) if i["FileSize"] < 1 << 20)
    store = ContentStore(orthanc.client, str(tmp_path))
    old = store.open_instance(instance["ID"], instance["FileSize"], "first")
    assert old.read(128, 4) == b"DICM"
    again = store.open_instance(instance["ID"], instance["FileSize"], "first")
    assert again.spool is old.spool  # the same version: shared
    new = store.open_instance(instance["ID"], instance["FileSize"], "second")
    assert new.spool is not old.spool and new.read(128, 4) == b"DICM"
    old.close()
    assert not old.spool._file.closed  # `again` still reads it
    again.close()
    assert old.spool._file.closed and list(store._spools.values()) == [new.spool]
    new.close()
    assert list(store._spools.values()) == [new.spool]  # the current version stays cached
    store.close()


def test_a_bulk_limit_of_zero_walks_folder_by_folder_and_sees_the_same_tree(
        orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    whole_levels = re.compile(r"GET /(studies|series|instances)$", re.M)  # the bulk lists' requests
    listings = {}
    for name, args in (("bulk", ()), ("folder-by-folder", ("--bulk-limit", "0"))):
        (tmp_path / name).mkdir()
        with mounted(orthanc.url, tmp_path / name, "--debug", *args) as mnt:
            listings[name] = sorted(str(p.relative_to(mnt)) for p in (mnt / "by-patients").rglob("*"))
        log = (tmp_path / name / "mount-mnt.log").read_text()
        assert bool(whole_levels.search(log)) == (name == "bulk"), log[-2000:]
    assert listings["folder-by-folder"] == listings["bulk"]
    assert re.search(r"GET /studies/[0-9a-f-]+/instances$", log, re.M)  # a study's grandchildren at once


def test_opening_a_known_by_uids_path_loads_no_whole_list(orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    client = orthanc.client
    instance = client.get_json(f"/instances/{orthanc.big_instance_id}")
    series = client.get_json(f"/series/{instance['ParentSeries']}")
    study = client.get_json(f"/studies/{series['ParentStudy']}")
    uids = [r["MainDicomTags"][tag] for r, tag in ((study, "StudyInstanceUID"), (series, "SeriesInstanceUID"),
                                                   (instance, "SOPInstanceUID"))]
    path = "by-uids/{}/{}/{}.dcm".format(*uids)
    with mounted(orthanc.url, tmp_path, "--debug") as mnt, open(mnt / path, "rb") as file:
        assert file.read(132)[128:] == b"DICM"
    log = (tmp_path / "mount-mnt.log").read_text()
    assert not re.search(r"GET /(patients|studies|series|instances)$", log, re.M), log
    assert "POST /tools/lookup" in log
