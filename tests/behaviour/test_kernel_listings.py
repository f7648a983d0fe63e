"""The kernel's copy of folder listings (orthancfs/fuse/listings.py), FUSE frontend only: kept
while the tree's listing is the same, read again as soon as it is not.

FuseFrontend's ReaddirCache plays the kernel's part (fs/fuse/readdir.c); the real kernel's is
exercised by every listing of tests/test_mount.py, test_uploads.py and test_follow_clients.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pyfuse3
import pytest

from orthancfs.fuse.listings import kernel_keeps_listings
from orthancfs.tree import WritePolicy

from ..fake_orthanc import FakeOrthanc
from . import fuse_frontend
from .conftest import build_tree
from .fuse_frontend import CONTEXT, FuseFrontend
from .pacs import MULLER, MULLER_STUDY, Pacs, new_study, numbered


def open_fuse(stack: ExitStack, fake: FakeOrthanc, where: Path, policy: WritePolicy) -> FuseFrontend:
    trees = stack.enter_context(ExitStack())
    frontend = FuseFrontend(build_tree(trees, fake.url, where, policy, 30.0))
    trees.callback(frontend.close)
    return frontend


@pytest.fixture
def fuse(fake: FakeOrthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FuseFrontend]:
    monkeypatch.setattr(pyfuse3, "readdir_reply", fuse_frontend.readdir_reply)
    with ExitStack() as stack:
        yield open_fuse(stack, fake, tmp_path / "cache", WritePolicy(deletes=True))


def test_make_built_pyfuse3_with_the_listing_patch() -> None:
    """.ci/install-pyfuse3 ran: without the patch every warm walk is twice as slow (bench/RESULTS.md)."""
    assert kernel_keeps_listings()


def test_an_unchanged_folder_is_listed_by_the_kernel_again(fuse: FuseFrontend) -> None:
    first = fuse.listdir("by-patients")
    assert fuse.listings.served == 0
    assert fuse.listdir("by-patients") == first
    assert fuse.listings.served == 1


def test_an_arrival_is_listed_at_once_and_the_untouched_folders_stay_kept(fuse: FuseFrontend) -> None:
    patients = fuse.listdir("by-patients")
    muller = fuse.listdir(f"by-patients/{MULLER}")
    [newcomer] = new_study("KEPT-1", patient_name="Kept^Listing")
    assert fuse.write_file("uploads/newcomer.dcm", newcomer.data) is None
    served = fuse.listings.served
    assert fuse.listdir("by-patients") == sorted([*patients, "KEPT-1 - Kept^Listing"])
    assert fuse.listings.served == served  # read again, not served from the old copy
    assert fuse.listdir(f"by-patients/{MULLER}") == muller
    assert fuse.listings.served == served + 1  # the arrival did not touch it


def test_a_deletion_is_listed_at_once(fuse: FuseFrontend, data: Pacs) -> None:
    studies = fuse.listdir("by-studies")
    assert numbered(MULLER_STUDY, 1) in studies
    fuse.rmdir(f"by-studies/{numbered(MULLER_STUDY, 1)}")
    assert fuse.listdir("by-studies") == [name for name in studies if name != numbered(MULLER_STUDY, 1)]


def test_an_emptied_folder_is_never_served_from_a_copy(fuse: FuseFrontend) -> None:
    """The kernel would never drop a copy of an empty listing (it has no page): none is made."""
    assert fuse.listdir("uploads") == []
    fuse.write_file("uploads/notes.txt", b"not DICOM")  # not sent: it stays
    assert "notes.txt" in fuse.listdir("uploads")


def test_a_child_the_kernel_forgot_makes_it_read_the_folder_again(fuse: FuseFrontend) -> None:
    """Its inode number would be a new one, and the kernel's copy still holds the old."""
    ops = fuse.ops
    fuse.listdir("by-patients")
    by_patients = fuse.loop.run(ops.lookup, pyfuse3.ROOT_INODE, b"by-patients", CONTEXT).st_ino
    opened = fuse.loop.run(ops.opendir, by_patients, CONTEXT)
    assert opened.keep_cache  # unchanged so far
    fuse.loop.run(ops.releasedir, opened.fh)
    child = fuse.loop.run(ops.lookup, by_patients, MULLER.encode(), CONTEXT).st_ino
    fuse.loop.run(ops.forget, [(child, ops.inodes.count(child))])  # the kernel let go of that child
    opened = fuse.loop.run(ops.opendir, by_patients, CONTEXT)
    assert not opened.keep_cache and opened.cache_readdir
    fuse.loop.run(ops.releasedir, opened.fh)
    fuse.loop.run(ops.forget, [(by_patients, 1)])
