"""The pyfuse3 handlers called directly, without a kernel: lookup counts and errors."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pyfuse3
import pytest
import trio

from orthancfs.fuse.operations import FuseSettings, OrthancOperations
from orthancfs.orthanc import LoopUploader
from orthancfs.tree import Tree

from .conftest import LoadedOrthanc

NO_CONTEXT = None  # the handlers never look at the request context


@pytest.fixture
def ops(orthanc: LoadedOrthanc, tmp_path: Path) -> Iterator[OrthancOperations]:
    tree = Tree(orthanc.client, tmp_path / "state", metadata_ttl=60)
    yield OrthancOperations(tree, FuseSettings(uid=os.getuid(), gid=os.getgid()), LoopUploader(tree.client))
    tree.close()


def run(fn, *args):  # noqa: ANN001, ANN201
    return trio.run(fn, *args)


def lookup_path(ops: OrthancOperations, *names: str) -> int:
    inode = pyfuse3.ROOT_INODE
    for name in names:
        inode = run(ops.lookup, inode, name.encode(), NO_CONTEXT).st_ino
    return inode


def test_lookup_counts_and_forget(ops: OrthancOperations) -> None:
    first = lookup_path(ops, "by-patients")
    again = lookup_path(ops, "by-patients")
    assert first == again and ops.inodes.count(first) == 2
    run(ops.forget, [(first, 1)])
    assert ops.inodes.count(first) == 1
    run(ops.forget, [(first, 1)])
    assert ops.inodes.node(first) is None
    with pytest.raises(pyfuse3.FUSEError) as caught:
        run(ops.getattr, first, NO_CONTEXT)
    assert caught.value.errno == errno.ENOENT
    assert lookup_path(ops, "by-patients") > first  # inode numbers are never reused


def test_root_is_never_forgotten(ops: OrthancOperations) -> None:
    run(ops.forget, [(pyfuse3.ROOT_INODE, 5)])
    assert run(ops.getattr, pyfuse3.ROOT_INODE, NO_CONTEXT).st_ino == pyfuse3.ROOT_INODE


def test_errors_are_translated(ops: OrthancOperations) -> None:
    cases = [
        (lambda: run(ops.lookup, pyfuse3.ROOT_INODE, b"nope", NO_CONTEXT), errno.ENOENT),
        (lambda: run(ops.lookup, pyfuse3.ROOT_INODE, b"x" * 256, NO_CONTEXT), errno.ENAMETOOLONG),
        (lambda: run(ops.open, pyfuse3.ROOT_INODE, os.O_RDONLY, NO_CONTEXT), errno.EISDIR),
        (lambda: run(ops.open, pyfuse3.ROOT_INODE, os.O_WRONLY, NO_CONTEXT), errno.EACCES),
        (lambda: run(ops.mkdir, pyfuse3.ROOT_INODE, b"new", 0o755, NO_CONTEXT), errno.EACCES),
        (lambda: run(ops.lookup, pyfuse3.ROOT_INODE, b"\xff", NO_CONTEXT), errno.EINVAL),
    ]
    for call, expected in cases:
        with pytest.raises(pyfuse3.FUSEError) as caught:
            call()
        assert caught.value.errno == expected


def test_open_read_release(ops: OrthancOperations, orthanc: LoadedOrthanc) -> None:
    inode = lookup_path(ops, "by-patients", "P-GR - Παπαδόπουλος^Νίκος", "20230721 - Cine", "OT - Multi-frame",
                        f"{orthanc.big_instance_id}.dcm")
    info = run(ops.open, inode, os.O_RDONLY, NO_CONTEXT)
    expected = orthanc.client.get_bytes(f"/instances/{orthanc.big_instance_id}/file")
    assert run(ops.read, info.fh, 1000, 4096) == expected[1000:5096]
    run(ops.release, info.fh)
    [spool] = ops.tree.content._spools.values()  # kept for the next reader, with nobody using it
    assert spool.users == 0 and spool.read(0, len(expected)) == expected
