"""Following Orthanc's change log (tree/follower.py) against a real Orthanc that other clients change.

The tree trusts its caches for 300 s here, far longer than any test takes: whatever a test sees
change, the follower made it so.  Most tests drive the follower's polls themselves (deterministic);
the first ones let its thread run, as a mount does.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from orthancfs.demo.samples import make_dicom, series
from orthancfs.demo.server import OrthancServer
from orthancfs.errors import NotFound
from orthancfs.orthanc import Level, OrthancClient
from orthancfs.tree import Tree, WritePolicy
from orthancfs.tree.follower import ChangeFollower, CountWatch, added_counts, invalidation_of

from .helpers import wait_for
from .trees import read, walk

TRUSTED = 300.0  # the metadata TTL of these trees: no answer expires during a test
DEADLINE = 10.0


def study(patient_id: str, count: int = 2, date: str = "20220615", **tags: object) -> list[bytes]:
    specs = series(count, patient_id=patient_id, patient_name=f"Follow^{patient_id}", study_uid=generate_uid(),
                   study_date=date, study_description=f"Study of {patient_id}", **tags)
    return [make_dicom(spec) for spec in specs]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OrthancServer]:
    with OrthancServer(tmp_path / "orthanc") as server, server.client() as client:
        for patient in ("FA", "FB"):
            for data in study(patient):
                client.upload(data)
        yield server


@pytest.fixture
def other(server: OrthancServer) -> Iterator[OrthancClient]:
    """Another client of the same Orthanc (a modality, a script)."""
    with server.client() as client:
        yield client


@pytest.fixture
def tree(server: OrthancServer, tmp_path: Path) -> Iterator[Tree]:
    with server.client() as client:
        tree = Tree(client, tmp_path / "state", metadata_ttl=TRUSTED)
        try:
            yield tree
        finally:
            tree.close()


def names(tree: Tree, path: str) -> set[str]:
    node = tree.resolve(path)
    return set(tree.children(node))


def listed_everywhere(tree: Tree, patient_id: str) -> bool:
    """Whether a study of `patient_id` shows in by-patients/, by-studies/, by-dates/2022/2022-06/ and by-uids/."""
    patients = [n for n in names(tree, "by-patients") if n.startswith(patient_id)]
    studies = [n for n in names(tree, "by-studies") if n.startswith(patient_id)]
    dated = [n for n in names(tree, "by-dates/2022/2022-06") if n.startswith(patient_id)]
    return bool(patients and studies and dated) and len(names(tree, "by-uids")) == len(names(tree, "by-studies"))


def cold_walk(tree: Tree) -> int:
    return sum(1 for _ in walk(tree, tree.root))


def manual_follower(tree: Tree) -> ChangeFollower:
    """The tree's follower, polled by the test (no thread), reading the counts at every poll."""
    follower = ChangeFollower(tree.client, tree.changed_elsewhere, statistics_seconds=0)
    tree.follower = follower
    follower.poll()  # the baseline: counts and the log's end
    return follower


# --- the follower's thread, as a mount runs it --------------------------------------------------

def test_arrivals_show_in_every_view_within_seconds(tree: Tree, other: OrthancClient) -> None:
    cold_walk(tree)
    tree.follow_changes(poll_seconds=0.2)
    for data in study("FNEW"):
        other.upload(data)
    wait_for(lambda: listed_everywhere(tree, "FNEW"), DEADLINE, "the new study in every view")
    # Into a study already listed: a series, then an instance into that series.
    [folder] = [n for n in names(tree, "by-studies") if n.startswith("FA")]
    study_path = f"by-studies/{folder}"
    series_before = tree.children(tree.resolve(study_path))
    first_series = next(iter(series_before.values()))
    study_uid = other.item(Level.STUDIES, tree.resolve(study_path).ident)["MainDicomTags"]["StudyInstanceUID"]
    tags = {"patient_id": "FA", "patient_name": "Follow^FA", "study_uid": study_uid, "study_date": "20220615"}
    other.upload(make_dicom(series(1, series_description="Added later", **tags)[0]))
    wait_for(lambda: len(tree.children(tree.resolve(study_path))) == len(series_before) + 1, DEADLINE,
             "the new series in its study")
    series_uid = other.item(Level.SERIES, first_series.ident)["MainDicomTags"]["SeriesInstanceUID"]
    series_path = f"{study_path}/{first_series.name}"
    in_series = len(tree.children(first_series))
    other.upload(make_dicom(series(1, series_uid=series_uid, **tags)[0]))
    wait_for(lambda: len(tree.children(tree.resolve(series_path))) == in_series + 1, DEADLINE,
             "the new instance in its series")


def test_nothing_changed_keeps_every_answer(tree: Tree) -> None:
    cold_walk(tree)
    cached = {key for key in (("level", level) for level in Level) if tree.index.cache.peek(key) is not None}
    assert cached, "the walk loaded the levels (bulk mode)"
    tree.follow_changes(poll_seconds=0.05)
    assert tree.follower is not None
    wait_for(lambda: tree.follower.polls >= 60, DEADLINE, "60 polls (counts read at least once)")
    assert all(tree.index.cache.peek(key) is not None for key in cached)


def test_a_deletion_shows_and_its_file_is_not_found(tree: Tree, other: OrthancClient) -> None:
    cold_walk(tree)
    [folder] = [n for n in names(tree, "by-studies") if n.startswith("FB")]
    instance = next(node for _, node in walk(tree, tree.resolve(f"by-studies/{folder}")) if not node.is_dir)
    assert read(tree, instance)  # spooled: kept for re-reads
    tree.follow_changes(poll_seconds=0.2)
    other.delete_resource(Level.STUDIES, tree.resolve(f"by-studies/{folder}").ident)
    wait_for(lambda: folder not in names(tree, "by-studies"), DEADLINE, "the deleted study gone")
    assert not [n for n in names(tree, "by-patients") if n.startswith("FB")]
    with pytest.raises(NotFound):
        tree.open(instance)  # a new open of what a listing showed before: not its kept bytes


# --- the polls, one by one -----------------------------------------------------------------------

def test_a_deletion_hidden_by_an_arrival_is_found(tree: Tree, other: OrthancClient) -> None:
    """Counts alone would not change: one study goes, another comes, between two polls."""
    cold_walk(tree)
    follower = manual_follower(tree)
    [folder] = [n for n in names(tree, "by-studies") if n.startswith("FA")]
    deleted = tree.resolve(f"by-studies/{folder}").ident
    other.delete_resource(Level.STUDIES, deleted)
    for data in study("FA"):  # the same patient again, and as many series and instances
        other.upload(data)
    found = follower.poll()
    assert found.deleted and found.everything and "deleted" in found.everything
    tree.changed_elsewhere(found)
    [again] = [n for n in names(tree, "by-studies") if n.startswith("FA")]  # the same name, another study
    assert tree.resolve(f"by-studies/{again}").ident != deleted
    assert not follower.poll()  # counted afresh: nothing more to say


def test_arrivals_alone_invalidate_only_what_they_touch(tree: Tree, other: OrthancClient) -> None:
    cold_walk(tree)
    follower = manual_follower(tree)
    patients_before = tree.index.cache.peek(("level", Level.PATIENTS))
    [folder] = [n for n in names(tree, "by-studies") if n.startswith("FA")]
    study_node = tree.resolve(f"by-studies/{folder}")
    series_node = next(iter(tree.children(study_node).values()))
    study_uid = other.item(Level.STUDIES, study_node.ident)["MainDicomTags"]["StudyInstanceUID"]
    series_uid = other.item(Level.SERIES, series_node.ident)["MainDicomTags"]["SeriesInstanceUID"]
    other.upload(make_dicom(series(1, patient_id="FA", patient_name="Follow^FA", study_uid=study_uid,
                                   series_uid=series_uid, study_date="20220615")[0]))
    found = follower.poll()
    assert found.added == {Level.INSTANCES} and not found.everything
    tree.changed_elsewhere(found)
    assert tree.index.cache.peek(("level", Level.PATIENTS)) is patients_before  # patients did not change
    assert tree.index.cache.peek(("level", Level.INSTANCES)) is None
    assert len(tree.children(series_node)) == 3


def test_a_cleared_change_log_still_shows_what_arrived(tree: Tree, other: OrthancClient) -> None:
    """DELETE /changes before the follower read the entries: the counts tell."""
    cold_walk(tree)
    follower = manual_follower(tree)
    for data in study("FLOST"):
        other.upload(data)
    other.request("DELETE", "/changes")
    found = follower.poll()
    assert found.everything and "without a trace" in found.everything
    tree.changed_elsewhere(found)
    assert listed_everywhere(tree, "FLOST")


def test_this_mounts_own_deletion_is_not_taken_for_anothers(server: OrthancServer, tmp_path: Path) -> None:
    with server.client() as client:
        tree = Tree(client, tmp_path / "own", metadata_ttl=TRUSTED, policy=WritePolicy(deletes=True))
        try:
            cold_walk(tree)
            follower = manual_follower(tree)
            [folder] = [n for n in names(tree, "by-studies") if n.startswith("FA")]
            tree.rmdir(tree.resolve("by-studies"), folder)
            assert not follower.poll()  # counted afresh
            assert not follower.poll()
        finally:
            tree.close()


@pytest.mark.allow_warnings
def test_an_orthanc_with_a_new_database_is_asked_everything_again(server: OrthancServer, tree: Tree,
                                                                   tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    cold_walk(tree)
    follower = manual_follower(tree)
    server.stop()
    fresh = OrthancServer(tmp_path / "fresh")
    fresh.port = server.port  # the same URL, an empty database
    with fresh, fresh.client() as client:
        client.upload(study("FRESH", count=1)[0])
        found = follower.poll()
        assert found.everything and "went back" in found.everything
        tree.changed_elsewhere(found)
        assert [n[:5] for n in names(tree, "by-patients")] == ["FRESH"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "went back" in r.getMessage()]
    assert len(warned) == 1


# --- the counting, without Orthanc ---------------------------------------------------------------

def change(seq: int, kind: str, level: str) -> dict[str, object]:
    return {"Seq": seq, "ChangeType": kind, "ResourceType": level, "ID": f"id-{seq}"}


def test_counts_are_judged_against_what_the_log_announced() -> None:
    watch = CountWatch()
    watch.start(Counter(dict.fromkeys(Level, 1)), 10)
    entries = [change(11, "NewInstance", "Instance"), change(12, "NewSeries", "Series")]
    assert added_counts(entries) == Counter({Level.INSTANCES: 1, Level.SERIES: 1})
    watch.logged(12, entries)
    now = {Level.PATIENTS: 1, Level.STUDIES: 1, Level.SERIES: 2, Level.INSTANCES: 2}
    assert watch.judge(Counter(now), 12, 12) is None
    assert "deleted" in (watch.judge(Counter({**now, Level.INSTANCES: 1}), 12, 12) or "")
    assert "without a trace" in (watch.judge(Counter({**now, Level.INSTANCES: 3}), 12, 12) or "")
    # Counts read while entry 13 was being logged: it may or may not be in them.
    watch.logged(13, [change(13, "NewInstance", "Instance")])
    assert watch.judge(Counter(now), 12, 13) is None
    assert watch.judge(Counter({**now, Level.INSTANCES: 3}), 12, 13) is None


def test_what_entries_invalidate() -> None:
    found = invalidation_of([change(1, "NewInstance", "Instance"), change(2, "StableStudy", "Study"),
                             change(3, "UpdatedModalities", "None")])
    assert found.added == {Level.INSTANCES} and found.updated == {(Level.STUDIES, "id-2")}
    assert not found.everything and not found.deleted
