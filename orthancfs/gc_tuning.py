"""The cyclic garbage collector, set for a server that holds large listings.

With CPython's default thresholds (700, 10, 10), the collector makes a full pass over
every tracked object each time the objects that survived younger passes have grown by
a quarter.  A listing loads as many long-lived objects as it has entries (a dict per
resource, its tags, a node, a name), all of them survivors.  So a big listing set off
pass after pass over the whole heap while it loaded.  Listing 100,000 patients made 12
full passes, 0.8-1.0 s of a 5.7-6.1 s `ls` and of a 6.8-7.6 s PROPFIND (lab, Python 3.11).
With the thresholds below, the same listing made none.

Collection stays on, because a reference cycle is still garbage, only found later.  Such
cycles come from tracebacks and trio's tasks.  Between two young passes at most
YOUNG_ALLOCATIONS container objects can pile up, a few megabytes.
"""

from __future__ import annotations

import gc

YOUNG_ALLOCATIONS = 50_000  # net new container objects between two young passes (default 700)
YOUNG_PASSES = 20  # young passes per middle pass (default 10)
MIDDLE_PASSES = 20  # middle passes before a full pass is considered (default 10)


def tune_for_large_listings() -> None:
    """Make full passes rare while listings load (see the module's docstring); for servers only."""
    gc.set_threshold(YOUNG_ALLOCATIONS, YOUNG_PASSES, MIDDLE_PASSES)
