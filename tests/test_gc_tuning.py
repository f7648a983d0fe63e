"""The servers' garbage-collector setting: a large listing sets off no full pass over the heap."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator

import pytest

from orthancfs.gc_tuning import tune_for_large_listings

ENTRIES = 150_000  # resources in one listing, each a dict with its tags, as Orthanc's pages give them


@pytest.fixture()
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def full_passes_while(build: Callable[[], object]) -> int:
    passes = 0

    def count(phase: str, info: dict) -> None:
        nonlocal passes
        passes += phase == "start" and info["generation"] == 2

    gc.collect()
    gc.callbacks.append(count)
    try:
        kept = build()
    finally:
        gc.callbacks.remove(count)
    del kept
    return passes


def a_listing() -> list[dict]:
    return [{"ID": f"{number:08x}", "MainDicomTags": {"PatientID": str(number), "PatientName": "DOE^JANE"}}
            for number in range(ENTRIES)]


def test_a_large_listing_sets_off_no_full_pass_once_tuned(thresholds: None) -> None:
    gc.set_threshold(700, 10, 10)  # CPython's defaults: the same listing costs full passes
    assert full_passes_while(a_listing) >= 1
    tune_for_large_listings()
    assert full_passes_while(a_listing) == 0
    assert gc.isenabled()  # cycles are still collected, later
