"""Entries of whole-level folders made as the level's pages arrive (orthancfs/tree/early.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from orthancfs.orthanc import Level
from orthancfs.tree.early import EarlyEntries
from orthancfs.tree.naming import Wanted
from orthancfs.tree.nodes import Role, directory

LOAD = object()  # the index's token for one load of a level


def counting_maker() -> tuple[list[str], Callable[[str, dict[str, Any]], Any]]:
    made: list[str] = []

    def make(view: str, item: dict[str, Any]) -> Any:
        made.append(item["ID"])
        return Wanted(item["ID"], item["ID"]), directory(view, Role.PATIENT, item["ID"], 0, name=item["ID"])
    return made, make


def patients(*ids: str) -> list[dict[str, Any]]:
    return [{"ID": i} for i in ids]


def test_a_listed_view_takes_what_its_pages_made() -> None:
    made, make = counting_maker()
    early = EarlyEntries({"by-patients": Level.PATIENTS}, make)
    first, second = patients("a", "b"), patients("c")
    with early.listing("by-patients"):
        early.arrived(Level.PATIENTS, LOAD, first)
        early.arrived(Level.PATIENTS, LOAD, second)
        assert made == ["a", "b", "c"]
        entries = early.entries("by-patients", first + second)
    assert made == ["a", "b", "c"]  # nothing made twice
    assert [wanted.resource for wanted, _ in entries] == ["a", "b", "c"]


def test_items_not_from_the_pages_get_their_entries_made_then() -> None:
    """An equal item that is not the same object (an earlier or later load's) is not trusted."""
    made, make = counting_maker()
    early = EarlyEntries({"by-patients": Level.PATIENTS}, make)
    with early.listing("by-patients"):
        early.arrived(Level.PATIENTS, LOAD, patients("a"))
        entries = early.entries("by-patients", patients("a", "b"))
    assert made == ["a", "a", "b"]
    assert [wanted.resource for wanted, _ in entries] == ["a", "b"]


def test_pages_nobody_lists_are_left_alone() -> None:
    made, make = counting_maker()
    early = EarlyEntries({"by-patients": Level.PATIENTS, "by-studies": Level.STUDIES}, make)
    early.arrived(Level.PATIENTS, LOAD, patients("before"))  # no listing under way
    with early.listing("by-studies"):
        early.arrived(Level.PATIENTS, LOAD, patients("other level"))
        early.arrived(Level.SERIES, LOAD, patients("deeper"))
    with early.listing(None):  # a folder of another kind
        early.arrived(Level.STUDIES, LOAD, patients("not wanted"))
    assert made == []


def test_what_was_made_lasts_while_any_listing_of_the_view_does() -> None:
    made, make = counting_maker()
    early = EarlyEntries({"by-patients": Level.PATIENTS}, make)
    page = patients("a")
    with early.listing("by-patients"):
        with early.listing("by-patients"):  # two clients list it at once
            early.arrived(Level.PATIENTS, LOAD, page)
        early.entries("by-patients", page)
    assert made == ["a"]
    early.entries("by-patients", page)  # after the last listing: nothing kept
    assert made == ["a", "a"]


def test_a_reload_replaces_what_the_load_before_it_made() -> None:
    """Listings that overlap without end (a file manager and a walk) keep one load's entries, not one per reload."""
    made, make = counting_maker()
    early = EarlyEntries({"by-patients": Level.PATIENTS}, make)
    old, new = patients("a"), patients("a")
    with early.listing("by-patients"):
        early.arrived(Level.PATIENTS, LOAD, old)
        early.arrived(Level.PATIENTS, object(), new)  # the level's list loaded again (TTL, an arrival)
        assert early._made["by-patients"].entries.keys() == {id(new[0])}
        early.entries("by-patients", new)
    assert made == ["a", "a"]
