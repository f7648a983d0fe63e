"""Closing the tree that every frontend serves (both servers close it as they stop)."""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from orthancfs.tree import WritePolicy

from ..fake_orthanc import FakeOrthanc
from .conftest import build_tree


def threads_named(prefix: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith(prefix)]


@pytest.mark.allow_warnings
def test_nothing_the_tree_started_runs_on_after_it_is_closed(fake: FakeOrthanc, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with ExitStack() as stack:
        tree = build_tree(stack, fake.url, tmp_path, WritePolicy(), timeout=30.0)
        tree.children(tree.resolve("by-patients"))  # a small PACS: bulk mode, its /statistics cached
        fake.faults.freeze()
        asked = len(fake.requests)
        tree.index.prepare_walk()  # what a second folder of one kind listed starts: every level below patients
        deadline = time.monotonic() + 10
        while len(fake.requests) == asked and time.monotonic() < deadline:
            time.sleep(0.01)  # until its first request is on its way
    caplog.clear()
    fake.faults.resume()
    for thread in threads_named("orthancfs-"):
        thread.join(10)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("orthancfs")]
    assert not warned
