"""Looking at a Tree from tests: walk it, take a snapshot of it, read a file of it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orthancfs.tree import Node, Tree


def walk(tree: Tree, node: Node, path: str = "") -> Iterator[tuple[str, Node]]:
    for name, child in tree.children(node).items():
        yield f"{path}/{name}", child
        if child.is_dir:
            yield from walk(tree, child, f"{path}/{name}")


def snapshot(tree: Tree) -> dict[str, tuple[str, int]]:
    """Every path of the tree, with what it is and its size (folders: 0)."""
    return {path: (node.kind.value, 0 if node.is_dir else node.size) for path, node in walk(tree, tree.root)}


def read(tree: Tree, node: Node) -> bytes:
    handle = tree.open(node)
    try:
        return handle.read(0, max(node.size, 1 << 20))
    finally:
        handle.close()


@contextlib.contextmanager
def tree_of(server: Any, state: Path, timeout: float = 30.0, retries: int = 0, **settings: Any) -> Iterator[Tree]:
    """A Tree of an OrthancServer or a FakeOrthanc (anything with client()), closed on exit."""
    client_settings = {"timeout": timeout} if retries == 0 else {"timeout": timeout, "retries": retries}
    with server.client(**client_settings) as client:
        tree = Tree(client, state, **settings)
        try:
            yield tree
        finally:
            tree.close()
