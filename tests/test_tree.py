"""The tree model against a real Orthanc, without FUSE: every view checked against REST."""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from orthancfs.errors import IsADirectory, NotADirectory, NotFound
from orthancfs.orthanc import Level
from orthancfs.tree import Kind, Node, Tree, views
from orthancfs.tree.early import EarlyEntries
from orthancfs.tree.naming import MAX_NAME_BYTES

from . import dataset
from .conftest import LoadedOrthanc


@pytest.fixture
def tree(orthanc: LoadedOrthanc, tmp_path: Path) -> Iterator[Tree]:
    tree = Tree(orthanc.client, tmp_path / "state", metadata_ttl=60)
    yield tree
    tree.close()


def walk(tree: Tree, node: Node, path: str = "") -> Iterator[tuple[str, Node]]:
    for name, child in tree.children(node).items():
        yield f"{path}/{name}", child
        if child.is_dir:
            yield from walk(tree, child, f"{path}/{name}")


def files(tree: Tree, view: str) -> list[tuple[str, Node]]:
    return [(p, n) for p, n in walk(tree, tree.resolve(view), view) if not n.is_dir]


def test_root_lists_the_views(tree: Tree, orthanc: LoadedOrthanc) -> None:
    assert list(tree.children(tree.root)) == dataset.root_views(orthanc.client)
    assert tree.children(tree.resolve("uploads")) == {}


def test_by_patients_names_match_the_templates(tree: Tree, orthanc: LoadedOrthanc) -> None:
    names = set(tree.children(tree.resolve("by-patients")))
    assert len(names) == len(orthanc.client.get_json("/patients"))
    long_names = names - dataset.EXPECTED_PATIENT_FOLDERS
    assert names >= dataset.EXPECTED_PATIENT_FOLDERS
    assert len(long_names) == 1
    long_name = long_names.pop()
    assert long_name.startswith(dataset.LONG_ID + " - 語") and len(long_name.encode()) <= MAX_NAME_BYTES
    assert long_name.encode().decode("utf-8") == long_name  # cut on a character boundary


def test_duplicate_studies_and_series_are_numbered(tree: Tree) -> None:
    patient = tree.resolve("by-patients/P-MULLER - Müller^Jürgen")
    assert set(tree.children(patient)) == {"20200115 - CT Head", "20200115 - CT Head (1)"}
    study_series = [set(tree.children(study)) for study in tree.children(patient).values()]
    assert {"CT - Axial", "CT - Axial (1)"} in study_series and {"CT - Scout"} in study_series


def test_missing_tags_never_make_empty_names(tree: Tree, orthanc: LoadedOrthanc) -> None:
    patient = tree.resolve("by-patients/P-MISSING")
    [(study_name, study)] = tree.children(patient).items()
    [(series_name, _)] = tree.children(study).items()
    assert study_name == study.ident  # no date, no description: the Orthanc ID
    assert series_name == orthanc.client.get_json(f"/studies/{study.ident}")["Series"][0]


def test_odd_characters_are_replaced_and_trimmed(tree: Tree) -> None:
    [study] = tree.children(tree.resolve("by-patients/ODD:ID* - Slash_Back_Star*Colon:")).values()
    assert list(tree.children(study)) == ["CT - a_b"]
    assert "ODD:ID* - Slash_Back_Star*Colon: - Lead and trail" in tree.children(tree.resolve("by-studies"))


def test_every_view_holds_every_instance_once(tree: Tree, orthanc: LoadedOrthanc) -> None:
    instances = {i["ID"]: i for i in orthanc.client.get_json("/instances", params={"expand": ""})}
    for view in ("by-patients", "by-studies", "by-dates", "by-uids"):
        found = [n for _, n in files(tree, view) if n.kind is Kind.INSTANCE]
        assert sorted(n.ident for n in found) == sorted(instances), view
        assert all(n.size == instances[n.ident]["FileSize"] for n in found), view


def test_by_studies_and_by_dates_hold_every_study(tree: Tree, orthanc: LoadedOrthanc) -> None:
    studies = orthanc.client.get_json("/studies")
    assert sorted(n.ident for n in tree.children(tree.resolve("by-studies")).values()) == sorted(studies)
    dated = [n.ident for p, n in walk(tree, tree.resolve("by-dates")) if n.role == "study"]
    assert sorted(dated) == sorted(studies)


def test_by_dates_layout(tree: Tree) -> None:
    by_dates = tree.resolve("by-dates")
    assert set(tree.children(by_dates)) == {"1999", "2020", "2023", "unknown-date"}
    assert set(tree.children(tree.resolve("by-dates/2020"))) == {"2020-01"}
    undated = set(tree.children(tree.resolve("by-dates/unknown-date")))
    assert {"P-BADDATE - Bad^Date - Year only", "P-BADDATE - Bad^Date - Month 13"} <= undated
    assert any(name.startswith("P-MISSING") for name in undated)


def test_by_uids_names_and_duplicate_uids(tree: Tree, orthanc: LoadedOrthanc) -> None:
    names = set(tree.children(tree.resolve("by-uids")))
    uid = dataset.SHARED_STUDY_UID
    assert {uid, f"{uid} (1)"} <= names  # two Orthanc studies, one StudyInstanceUID
    for path, node in files(tree, "by-uids"):
        if node.kind is Kind.INSTANCE:
            sop = orthanc.client.get_json(f"/instances/{node.ident}")["MainDicomTags"]["SOPInstanceUID"]
            assert path.rsplit("/", 1)[1] == f"{sop}.dcm"


def test_a_study_is_looked_up_by_uid_without_listing_every_study(orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    """Scripts open by-uids/ paths directly: one study must not cost the list of all of them."""
    listed = Tree(orthanc.client, tmp_path / "listed", metadata_ttl=60)
    expected = listed.children(listed.resolve("by-uids"))
    shared = {dataset.SHARED_STUDY_UID, f"{dataset.SHARED_STUDY_UID} (1)"}
    tree = Tree(orthanc.client, tmp_path / "state", metadata_ttl=60)
    for name, node in expected.items():
        if name not in shared:
            assert tree.resolve(f"by-uids/{name}") == node
    with pytest.raises(NotFound):
        tree.resolve("by-uids/1.2.3.4.5.6")
    [instance] = [p for p, n in files(listed, "by-uids") if n.ident == orthanc.big_instance_id]
    assert tree.resolve(instance.lstrip("/")).ident == orthanc.big_instance_id
    assert not tree.index.level_loaded(Level.STUDIES)  # no study list was loaded
    for name in shared:  # a UID two studies share: the listing numbers them
        assert tree.resolve(f"by-uids/{name}") == expected[name]
    listed.close()
    tree.close()


CHILD_LISTING = re.compile(r"GET /(studies|series)/[0-9a-f-]+/(series|instances)")


def instance_files(orthanc: LoadedOrthanc, tmp_path: Path) -> list[tuple[str, Node]]:
    """Every instance file of by-uids/, with its node, as a full listing gives them."""
    listed = Tree(orthanc.client, tmp_path / "listed", metadata_ttl=60)
    found = [(path, node) for path, node in files(listed, "by-uids") if node.kind is Kind.INSTANCE]
    listed.close()
    return found


def listings_sent(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The requests for a study's series or a series' instances that the client logged."""
    sent = [record.getMessage() for record in caplog.records if record.name == "orthancfs.orthanc"]
    return [message for message in sent if CHILD_LISTING.fullmatch(message)]


def test_a_known_by_uids_file_is_found_without_listing_its_study_or_series(
        orthanc: LoadedOrthanc, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Scripts open by-uids/STUDY/SERIES/SOP.dcm: one file must not cost the listing of a series of thousands."""
    caplog.set_level(logging.DEBUG, logger="orthancfs.orthanc")
    for number, (path, expected) in enumerate(instance_files(orthanc, tmp_path)):
        tree = Tree(orthanc.client, tmp_path / f"fresh-{number}", metadata_ttl=60)
        caplog.clear()
        assert tree.resolve(path) == expected  # the same node as the listing's, name, size and version included
        assert tree.resolve(path) == expected  # WebDAV resolves a path more than once per request
        assert listings_sent(caplog) == [], path
        tree.close()


def test_files_opened_one_after_another_in_a_series_list_it_once(
        orthanc: LoadedOrthanc, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The second file asked for in a folder means it is read file after file: one listing then
    answers every name, instead of one request per file."""
    by_series: dict[str, list[tuple[str, Node]]] = defaultdict(list)
    for path, node in instance_files(orthanc, tmp_path):
        by_series[path.rsplit("/", 1)[0]].append((path, node))
    [(first, second, third)] = [found[:3] for found in by_series.values() if len(found) >= 3]
    series_id = orthanc.client.get_json(f"/instances/{first[1].ident}")["ParentSeries"]
    tree = Tree(orthanc.client, tmp_path / "fresh", metadata_ttl=60)
    caplog.set_level(logging.DEBUG, logger="orthancfs.orthanc")
    assert tree.resolve(first[0]) == first[1]
    assert listings_sent(caplog) == []
    caplog.clear()
    assert tree.resolve(second[0]) == second[1]  # the same series again, then another instance of it
    assert listings_sent(caplog) == [f"GET /series/{series_id}/instances"]
    caplog.clear()
    assert tree.resolve(third[0]) == third[1]
    assert [record for record in caplog.records if record.name == "orthancfs.orthanc"] == []
    tree.close()


def test_a_uid_that_is_not_in_a_by_uids_folder_is_not_found(orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    paths = [path for path, _ in instance_files(orthanc, tmp_path)]
    here = paths[0]
    series, study = here.rsplit("/", 1)[0], here.rsplit("/", 2)[0]
    in_other_series = next(path for path in paths if not path.startswith(series + "/"))
    in_other_study = next(path for path in paths if not path.startswith(study + "/"))
    wrong = [f"{series}/1.2.3.4.5.dcm",  # no such instance
             f"{series}/{in_other_series.rsplit('/', 1)[1]}",  # an instance of another series
             f"{study}/1.2.3.4.5",  # no such series
             f"{study}/{in_other_study.split('/')[2]}"]  # a series of another study
    for number, path in enumerate(wrong):
        tree = Tree(orthanc.client, tmp_path / f"fresh-{number}", metadata_ttl=60)
        with pytest.raises(NotFound):
            tree.resolve(path)
        tree.close()


def test_json_files_hold_the_rest_documents_with_exact_sizes(tree: Tree, orthanc: LoadedOrthanc) -> None:
    documents = [(p, n) for p, n in files(tree, "by-uids") if n.kind is Kind.JSON]
    assert {p.rsplit("/", 1)[1] for p, _ in documents} == {"study.json", "series.json"}
    for _, node in documents:
        content = tree.open(node)
        data = content.read(0, 1 << 20)
        content.close()
        assert len(data) == node.size
        level = "studies" if node.name == "study.json" else "series"
        assert json.loads(data)["ID"] == orthanc.client.get_json(f"/{level}/{node.ident}")["ID"]


def test_instance_content_is_byte_identical(tree: Tree, orthanc: LoadedOrthanc) -> None:
    node = next(n for _, n in files(tree, "by-patients") if n.ident == orthanc.big_instance_id)
    expected = orthanc.client.get_bytes(f"/instances/{node.ident}/file")
    assert node.size == len(expected) > 20_000_000
    content = tree.open(node)
    try:
        assert content.read(0, node.size + 10) == expected
        assert content.read(12_345_678, 4096) == expected[12_345_678:12_345_678 + 4096]
        assert content.read(node.size, 10) == b""
    finally:
        content.close()


@pytest.mark.parametrize("path", [
    "nope", "by-patients/nope", "by-patients/P-LI - 李^小龍/nope", "by-dates/1998", "by-dates/2020/2020-02",
    "by-dates/2020/nope", "by-uids/1.2.3", "uploads/nope", "by-patients/P-LI - 李^小龍/19991231 - MR 脑/nope",
])
def test_missing_paths_are_not_found_at_every_level(tree: Tree, path: str) -> None:
    with pytest.raises(NotFound):
        tree.resolve(path)


def test_files_are_not_directories_and_directories_not_files(tree: Tree) -> None:
    path, node = files(tree, "by-patients")[0]
    with pytest.raises(NotADirectory):
        tree.children(node)
    with pytest.raises(IsADirectory):
        tree.open(tree.resolve("by-patients"))


def test_listings_are_complete_across_pages(orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    small_pages = Tree(orthanc.client, tmp_path / "small", metadata_ttl=0, page_size=2)
    full = Tree(orthanc.client, tmp_path / "full", metadata_ttl=0)
    for view in ("by-patients", "by-studies"):
        assert small_pages.children(small_pages.resolve(view)).keys() == full.children(full.resolve(view)).keys()


@pytest.mark.parametrize("bulk_limit", [50_000, 0])  # whole items; items cut to what listings read
@pytest.mark.parametrize("view", ["by-patients", "by-studies", "by-uids"])
def test_whole_level_folders_are_made_from_the_pages_as_they_arrive(
        orthanc: LoadedOrthanc, tmp_path: Path, view: str, bulk_limit: int) -> None:
    """The first listing of a whole-level folder takes the entries made in the page threads while
    the level loaded (early.py): none is left to make after the last page, and the listing is the
    one a tree without them makes."""
    tree = Tree(orthanc.client, tmp_path / "early", metadata_ttl=60, page_size=2, bulk_limit=bulk_limit)
    plain = Tree(orthanc.client, tmp_path / "plain", metadata_ttl=60, page_size=2, bulk_limit=bulk_limit)
    plain._early = EarlyEntries({}, views.view_entry)  # knows no view: every entry made after the load
    made_after_load: list[str] = []
    taking = tree._early.entries

    def entries(view: str, items: list[dict]) -> list:
        def make(view: str, item: dict) -> views.Entry:
            made_after_load.append(item["ID"])
            return views.view_entry(view, item)
        tree._early._make = make
        return taking(view, items)
    tree._early.entries = entries  # type: ignore[method-assign]
    try:
        listed = tree.children(tree.resolve(view))
        assert listed == plain.children(plain.resolve(view))
        assert len(listed) > 2 and made_after_load == []
    finally:
        tree.close()
        plain.close()


def test_names_are_stable_while_the_tree_lives(tree: Tree) -> None:
    first = dict(walk(tree, tree.root))
    tree.index.cache.invalidate()
    assert dict(walk(tree, tree.root)).keys() == first.keys()


def test_statfs_reports_orthanc_usage(tree: Tree, orthanc: LoadedOrthanc) -> None:
    stats = tree.statfs()
    assert stats.instances == len(orthanc.client.get_json("/instances"))
    assert stats.used_bytes > 20_000_000
    assert stats.free_bytes > 0 and stats.free_files > 0  # uploads are staged on the local disk


@pytest.mark.parametrize("page_size", [7, 1000])  # pages below the server's limits; pages it cuts
@pytest.mark.parametrize("bulk_limit", [50_000, 0])  # whole levels at once; folder by folder
def test_no_listing_is_cut_by_the_servers_find_limits(tmp_path: Path, bulk_limit: int, page_size: int) -> None:
    """Orthanc's scalability FAQ recommends LimitFindResults / LimitFindInstances; /tools/find is then cut
    to them silently (1.12) or with one more (1.10).  No listing of ours may be: every view of 30
    patients, and a series of 25 instances, complete with limits of 10 and 20."""
    from orthancfs.demo.server import OrthancServer

    from .uploads_data import instances

    limits = {"LimitFindResults": 10, "LimitFindInstances": 20}
    with OrthancServer(tmp_path / "orthanc", config=limits) as server, server.client() as client:
        for n in range(30):
            client.upload(instances(1, f"LIM{n:02d}")[0])
        for payload in instances(25, "BIGSERIES"):
            client.upload(payload)
        tree = Tree(client, tmp_path / "state", metadata_ttl=60, bulk_limit=bulk_limit, page_size=page_size)
        try:
            assert len(tree.children(tree.resolve("by-patients"))) == 31
            assert len(tree.children(tree.resolve("by-studies"))) == 31
            assert len(tree.children(tree.resolve("by-uids"))) == 31
            assert len(files(tree, "by-dates")) == 55
            [series] = [n for p, n in walk(tree, tree.resolve("by-patients")) if "BIGSERIES" in p and
                        n.role.value == "series"]
            assert len(tree.children(series)) == 25
        finally:
            tree.close()
        fresh = Tree(client, tmp_path / "fresh", metadata_ttl=60, bulk_limit=bulk_limit, page_size=page_size)
        try:  # a year found with a date-range query (/tools/find, paged to its end), not from every study
            assert len(tree_of_year := fresh.children(fresh.resolve("by-dates/2020/2020-01"))) == 31, tree_of_year
        finally:
            fresh.close()


def test_a_year_of_by_dates_is_found_without_every_study(orthanc: LoadedOrthanc, tmp_path: Path) -> None:
    """by-dates/{year}/ comes from one date-range query when the studies are not at hand (a PACS holds
    decades of them) and Orthanc can page it to its end.  Same names, months and studies as when every
    study is listed."""
    listed = Tree(orthanc.client, tmp_path / "listed", metadata_ttl=60)
    expected = {year: dict(walk(listed, listed.resolve(f"by-dates/{year}"))) for year in ("2020", "1999")}
    listed.close()
    tree = Tree(orthanc.client, tmp_path / "state", metadata_ttl=60, bulk_limit=0)
    try:
        for year, paths in expected.items():
            found = dict(walk(tree, tree.resolve(f"by-dates/{year}")))
            assert {p: n.key for p, n in found.items()} == {p: n.key for p, n in paths.items()}
        with pytest.raises(NotFound):
            tree.resolve("by-dates/2031")
        # Version-dependent: only where Orthanc pages queries to their end (1.12.5's extended find); before
        # that, with LimitFindResults set, no query gets past the limit, so every study is listed instead.
        assert tree.index.level_loaded(Level.STUDIES) is not orthanc.client.capabilities.extended_find
    finally:
        tree.close()
