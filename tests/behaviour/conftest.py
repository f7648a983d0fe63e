"""Fixtures: a fresh FakeOrthanc per test, loaded with the data set, and the frontend under test.

`frontend` is parametrized over the three frontends; `open_frontend(policy=..., timeout=...)`
opens (more) frontends of the same kind with other settings.  Nothing here needs the Orthanc
binary or a FUSE device.
"""

from __future__ import annotations

import gc
import itertools
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pyfuse3
import pytest

from orthancfs.compose import open_tree
from orthancfs.orthanc import ClientSettings
from orthancfs.settings import Settings
from orthancfs.tree import Tree, WritePolicy

from ..fake_orthanc import FakeOrthanc
from . import fuse_frontend, pacs
from .frontend import Frontend
from .fuse_frontend import FuseFrontend
from .tree_frontend import TreeFrontend
from .webdav_frontend import WebDAVFrontend

FRONTENDS: dict[str, Callable[[Tree], Frontend]] = {"tree": TreeFrontend, "fuse": FuseFrontend,
                                                    "webdav": WebDAVFrontend}
JOIN_SECONDS = 10.0
_SECONDS: dict[str, float] = defaultdict(float)  # by frontend, for the summary
_FRONTEND_ID = re.compile(r"behaviour/.*\[(?:.*-)?(tree|fuse|webdav)(?:-.*)?\]$")

OpenFrontend = Callable[..., Frontend]


@pytest.fixture(scope="session")
def data() -> pacs.Pacs:
    return pacs.build()


@pytest.fixture
def fake(data: pacs.Pacs) -> Iterator[FakeOrthanc]:
    with FakeOrthanc() as server:
        server.add(*data.files)
        yield server


def build_tree(stack: ExitStack, url: str, cache_dir: Path, policy: WritePolicy, timeout: float) -> Tree:
    """The tree both servers serve, built by their composition root (compose.open_tree).  It sets
    the garbage collector for a server process; the test process gets its own thresholds back."""
    settings = Settings(url=url, cache_dir=str(cache_dir), timeout=timeout, no_upload=not policy.uploads,
                        allow_delete=policy.deletes, read_only=policy.read_only)
    thresholds = gc.get_threshold()
    try:
        return open_tree(settings, ClientSettings(url, timeout=timeout), stack)
    finally:
        gc.set_threshold(*thresholds)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "known_bug(*frontends, reason): a difference of these frontends that is "
                                       "a bug of orthancfs: the test fails there (xfail, strict)")


@pytest.fixture(params=list(FRONTENDS))
def open_frontend(request: pytest.FixtureRequest, fake: FakeOrthanc, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenFrontend]:
    known = request.node.get_closest_marker("known_bug")
    if known is not None and request.param in known.args:
        request.node.add_marker(pytest.mark.xfail(strict=True, reason=f"{request.param}: {known.kwargs['reason']}"))
    monkeypatch.setattr(pyfuse3, "readdir_reply", fuse_frontend.readdir_reply)  # see fuse_frontend.py
    numbers = itertools.count()
    with ExitStack() as stack:
        stack.callback(join_workers, set(threading.enumerate()))

        def opened(policy: WritePolicy | None = None, timeout: float = 30.0) -> Frontend:
            trees = stack.enter_context(ExitStack())  # each frontend closes before its tree
            tree = build_tree(trees, fake.url, tmp_path / f"cache-{next(numbers)}",
                              policy or WritePolicy(), timeout)
            frontend = FRONTENDS[request.param](tree)
            trees.callback(frontend.close)
            return frontend

        yield opened


def join_workers(before: set[threading.Thread]) -> None:
    """Wait for the worker threads the trees started: Tree.close() does not (see test_closing.py),
    and what they log after it would land in the next test's log."""
    for thread in set(threading.enumerate()) - before:
        if thread.name.startswith("orthancfs-"):
            thread.join(JOIN_SECONDS)


@pytest.fixture
def frontend(open_frontend: OpenFrontend) -> Frontend:
    """The frontend under test, with the default settings (uploads on, deletes off)."""
    return open_frontend()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    found = _FRONTEND_ID.search(report.nodeid)
    if found:
        _SECONDS[found[1]] += report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _SECONDS:
        times = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in sorted(_SECONDS.items()))
        terminalreporter.write_line(f"behaviour suite (set-up, calls and teardown) by frontend: {times}")
