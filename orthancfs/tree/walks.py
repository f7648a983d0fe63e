"""Telling a walk of the tree (find, ls -R, du, a file manager counting items) from browsing.

Loading every level of the index in bulk is what makes a cold walk fast, but for one `ls` it
only competes with the folder's own request for Orthanc's database lock: a series folder listed
right after mounting took 6 ms alone and 7-46 ms beside the bulk loads (medians 6 and 20 ms), and
on a shared PACS it is load nobody asked for.  A walk lists folders of one kind one after the
other (the studies of a patient, the patients of a view); browsing goes down one folder of each
kind.  So two different folders of the same kind listed close together start the bulk loads.
Series do not count: a walk of one study (`cp -r` of it, a script reading it) lists its few
series one by one for less than the whole index would cost, and reads them beside no bulk load.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .nodes import Node, NodeKey, Role

WALK_WINDOW = 5.0  # seconds: two folders of one kind listed within this look like a walk


class WalkSpotter:
    def __init__(self, window: float = WALK_WINDOW, clock: Callable[[], float] = time.monotonic):
        self.window = window
        self._clock = clock
        self._last: dict[Role, tuple[NodeKey, float, bool]] = {}  # kind -> (which folder, when, walking?) last
        self._lock = threading.Lock()

    def listed(self, folder: Node) -> bool:
        """Note that `folder` is being listed; True if this looks like part of a walk.

        The same folder listed again soon keeps its verdict: the FUSE frontend tries a listing
        from the cache first and then again in a worker thread.
        """
        if folder.role is Role.SERIES:
            return False
        now = self._clock()
        with self._lock:
            previous = self._last.get(folder.role)
            recent = previous is not None and now - previous[1] <= self.window
            walking = recent and (previous[2] if previous[0] == folder.key else True)
            self._last[folder.role] = (folder.key, now, walking)
        return walking
