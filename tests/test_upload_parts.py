"""The upload model's small parts, without a server: escaping, staging names, the space budget."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orthancfs.errors import LocalDiskFull
from orthancfs.tree.escape import one_line
from orthancfs.tree.staging import SpaceBudget, Staging


@pytest.mark.parametrize("text", ["a\nb", "x\r\n    stored (Success)", "tab\there", "esc\x1b[2J", "nul\0",
                                  "rlo\u202eexe.txt", "sep\u2028line", "del\x7f", "c1\x85", "back\\nslash",
                                  "tag\U000e0001"])
def test_one_line_leaves_no_line_break_and_cannot_be_faked(text: str) -> None:
    escaped = one_line(text)
    assert escaped.isprintable() and len(escaped.splitlines()) == 1
    assert escaped.encode("ascii", "backslashreplace").decode("unicode_escape") == text  # nothing lost


def test_one_line_keeps_ordinary_names() -> None:
    for name in ("Müller^Jürgen.dcm", "李^小龍", "a b (1).dcm", "ÅÄÖ ωψ"):
        assert one_line(name) == name


@pytest.mark.parametrize("rel", ["a.dcm", "CD/IMAGES/IM000001", "with space/and%percent.dcm", "ü/李.dcm",
                                 "deep/" * 60 + "long.dcm", "x" * 250, ".hidden~", "%"])
def test_staging_names_give_the_upload_path_back(tmp_path: Path, rel: str) -> None:
    staging = Staging(str(tmp_path / "staging"))
    path, fd = staging.new(rel, 0o600)
    os.close(fd)
    assert len(os.path.basename(path).encode()) <= 255
    assert [found for _, found in Staging(str(tmp_path / "staging")).leftovers()] == [rel]
    staging.discard(path)
    assert os.listdir(tmp_path / "staging") == []


def test_the_budget_gives_up_what_is_kept_for_speed_before_refusing(tmp_path: Path) -> None:
    freed = []
    budget = SpaceBudget(str(tmp_path), reserve=0, relief=[lambda: freed.append(1)])
    budget.claim(1)  # room: nothing given up
    assert freed == []
    with pytest.raises(LocalDiskFull):
        budget.claim(budget.free() + 1)
    assert freed == [1]


def test_the_reserve_is_a_share_of_small_disks(tmp_path: Path) -> None:
    budget = SpaceBudget.for_disk(str(tmp_path), 1 << 30)
    total = os.statvfs(tmp_path).f_blocks * os.statvfs(tmp_path).f_frsize
    assert budget.reserve == min(1 << 30, total // 4)
