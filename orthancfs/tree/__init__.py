"""The tree model shared by the FUSE and WebDAV frontends."""

from __future__ import annotations

from .model import FsStats, Tree, WritePolicy
from .nodes import Kind, Node, Role

__all__ = ["FsStats", "Kind", "Node", "Role", "Tree", "WritePolicy"]
