"""The tree model shared by the FUSE and WebDAV frontends."""

from __future__ import annotations

from ..content import Handle
from .events import ChangedElsewhere, FolderRemoved
from .model import FsStats, Tree, WritePolicy
from .nodes import Kind, Node, Role
from .uploads import Closing

__all__ = ["ChangedElsewhere", "Closing", "FolderRemoved", "FsStats", "Handle", "Kind", "Node", "Role", "Tree",
           "WritePolicy"]
