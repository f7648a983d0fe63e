"""Inode numbers for nodes, with the kernel's lookup counts.

Inode numbers are never reused, so generation numbers are unnecessary; an
entry is dropped when the kernel forgets its last reference.

An inode stands for one node key *and* one content version: an instance sent again
under the same UIDs (same Orthanc ID, same paths, other bytes) gets a new inode, as a
file replaced by rename would.  So the kernel may keep an inode's pages across opens
for as long as it lives, and a reader that opened the old version keeps reading it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pyfuse3

from ..tree import Node
from ..tree.nodes import NodeKey

Identity = tuple[NodeKey, str]  # (node key, content version)


def identity(node: Node) -> Identity:
    return node.key, node.version


class InodeTable:
    """node key <-> inode number, plus how many references the kernel holds."""

    def __init__(self, root: Node):
        self._nodes: dict[int, Node] = {pyfuse3.ROOT_INODE: root}
        self._counts: dict[int, int] = {pyfuse3.ROOT_INODE: 1}
        self._inodes: dict[Identity, int] = {identity(root): pyfuse3.ROOT_INODE}
        self._names: dict[int, tuple[int, bytes]] = {}  # inode -> (parent inode, name) the kernel knows it by
        self._next = pyfuse3.ROOT_INODE + 1

    def __len__(self) -> int:
        return len(self._nodes)

    def node(self, inode: int) -> Node | None:
        return self._nodes.get(inode)

    def inode_of(self, key: NodeKey) -> int | None:
        """The inode the kernel knows `key` (a folder: folders have no versions) by, if it knows it."""
        return self._inodes.get((key, ""))

    def current(self, node: Node) -> int | None:
        """The inode the kernel knows this version of `node` by, if it knows it."""
        return self._inodes.get(identity(node))

    def count(self, inode: int) -> int:
        return self._counts.get(inode, 0)

    def remember(self, node: Node, parent: int | None = None, name: bytes | None = None) -> int:
        """The inode of `node` (newest attributes kept), its lookup count raised by one;
        `parent` and `name`: where the kernel found it (so that it can be told to forget it)."""
        inode = self._inodes.get(identity(node))
        if inode is None:
            inode, self._next = self._next, self._next + 1
            self._inodes[identity(node)] = inode
            self._counts[inode] = 0
        self._nodes[inode] = node
        self._counts[inode] += 1
        if parent is not None and name is not None:
            self._names[inode] = (parent, name)
        return inode

    def names(self, keep: Callable[[Node], bool]) -> list[tuple[int, bytes]]:
        """(parent inode, name) of every inode the kernel holds whose node `keep` selects.
        Called from other threads than the loop's: a snapshot (one C-level copy), then lookups."""
        found = []
        for inode, link in list(self._names.items()):
            node = self._nodes.get(inode)
            if node is not None and keep(node):
                found.append(link)
        return found

    def update(self, inode: int, node: Node) -> None:
        """Newer attributes for a known inode (same identity)."""
        if inode in self._nodes:
            self._nodes[inode] = node

    def rename_subtree(self, view: str, old: str, new: str) -> None:
        """Follow a rename: entries of `view` at `old` or below now live at `new`."""
        moved = [(key, inode) for (key, _), inode in self._inodes.items()
                 if key[0] == view and (key[2] == old or key[2].startswith(old + "/"))]
        for key, inode in moved:
            ident = new + key[2][len(old):]
            node = self._nodes[inode]
            renamed = replace(node, key=(view, key[1], ident), name=ident.rsplit("/", 1)[-1])
            del self._inodes[identity(node)]
            self._inodes[identity(renamed)] = inode
            self._nodes[inode] = renamed

    def forget(self, inode: int, count: int) -> None:
        if inode == pyfuse3.ROOT_INODE or inode not in self._counts:
            return
        self._counts[inode] -= count
        if self._counts[inode] <= 0:
            node = self._nodes.pop(inode)
            del self._counts[inode]
            self._names.pop(inode, None)
            if self._inodes.get(identity(node)) == inode:  # a rename may have given its name to another inode
                del self._inodes[identity(node)]
