"""Following Orthanc's change log, so that what other clients add or delete shows within
seconds while everything else stays cached (docs/semantics.md).

Orthanc logs additions in `/changes` (a new instance, then its series, study and patient if
they are new too), updates and the stable-* events, numbered by one sequence.  It never logs
a deletion, and deleting a resource removes its earlier entries.  So additions are followed
entry by entry (`invalidation_of`), and deletions are found by counting (`CountWatch`):
Orthanc's /statistics against the counts the log makes us expect.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import OrthancFSError
from ..orthanc import Level, OrthancClient

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # between reads of /changes: an arrival shows within this and one listing
STATISTICS_SECONDS = 2.0  # between reads of /statistics: a deletion shows within about this
FAILING_POLL_SECONDS = 5.0  # while Orthanc does not answer (Health fails other calls fast meanwhile)
PAGE = 1000  # changes asked for at once
MAX_PAGES = 5  # changes read in one poll at most; a longer backlog: everything is asked again instead
BASELINE_TRIES = 5  # to read /statistics with no change logged meanwhile (busy servers)

LEVELS = {level.resource_type: level for level in Level}
ADDED = {"NewPatient": Level.PATIENTS, "NewStudy": Level.STUDIES, "NewSeries": Level.SERIES,
         "NewInstance": Level.INSTANCES}


@dataclass
class Invalidation:
    """What one poll found changed: the cache keys it stands for are the index's business."""

    added: set[Level] = field(default_factory=set)  # levels that gained resources
    updated: set[tuple[Level, str]] = field(default_factory=set)  # resources changed in place (stable, attachments)
    everything: str | None = None  # why nothing cached may be trusted any more
    deleted: bool = False  # resources went away: names the frontends' clients cache must go too

    def __bool__(self) -> bool:
        return bool(self.added or self.updated or self.everything)

    def merge(self, other: Invalidation) -> None:
        self.added |= other.added
        self.updated |= other.updated
        self.everything = self.everything or other.everything
        self.deleted = self.deleted or other.deleted


def invalidation_of(changes: Iterable[dict[str, Any]]) -> Invalidation:
    """What a run of /changes entries invalidates (pure)."""
    found = Invalidation()
    for change in changes:
        level = LEVELS.get(str(change.get("ResourceType", "")))
        if level is None:  # modalities, peers, jobs: nothing of the tree
            continue
        added = ADDED.get(str(change.get("ChangeType", "")))
        if added is not None:
            found.added.add(added)
        else:  # StableStudy, UpdatedAttachment, UpdatedMetadata, ...: that resource as it is now
            found.updated.add((level, str(change.get("ID", ""))))
    return found


def added_counts(changes: Iterable[dict[str, Any]]) -> Counter[Level]:
    """How many resources of each level these entries add."""
    return Counter(ADDED[c["ChangeType"]] for c in changes if c.get("ChangeType") in ADDED)


def counts_of(statistics: dict[str, Any]) -> Counter[Level]:
    return Counter({level: int(statistics.get(level.count_key, 0)) for level in Level})


class CountWatch:
    """Deletions (and additions the log lost), found by counting.

    From a baseline read while nothing was logged (the log's last number the same before and
    after), every later count must equal the baseline plus the additions logged since.  Fewer:
    resources were deleted.  More: additions were never logged to us (the log was cleared with
    `DELETE /changes` before we read them).  Counts read while the log moved are compared only
    one way: fewer than what was logged before them is still certain.
    """

    def __init__(self) -> None:
        self.baseline: Counter[Level] | None = None
        self.baseline_seq = 0
        self._added: list[tuple[int, Counter[Level]]] = []  # (seq of the last entry, additions) since baseline

    def start(self, counts: Counter[Level], seq: int) -> None:
        self.baseline, self.baseline_seq, self._added = counts, seq, []

    def logged(self, last_seq: int, changes: list[dict[str, Any]]) -> None:
        """Entries read from the log, up to `last_seq`."""
        if self.baseline is not None and changes:
            self._added.append((last_seq, added_counts(changes)))

    def expected(self, up_to_seq: int) -> Counter[Level]:
        assert self.baseline is not None
        total = Counter(self.baseline)
        for seq, added in self._added:
            if seq <= up_to_seq:
                total.update(added)
        return total

    def judge(self, counts: Counter[Level], seq_before: int, seq_after: int) -> str | None:
        """Why these counts (read between the log's `seq_before` and `seq_after`) mean the cache
        cannot be trusted, or None.  Needs the entries up to `seq_after` logged already."""
        if self.baseline is None:
            return None
        low, high = self.expected(seq_before), self.expected(seq_after)
        fewer = [level.route for level in Level if counts[level] < low[level]]
        if fewer:
            return f"{', '.join(fewer)} were deleted"
        more = [level.route for level in Level if counts[level] > high[level]]
        if more:
            return f"{', '.join(more)} arrived without a trace in the change log"
        self._fold(seq_before)
        return None

    def _fold(self, seq: int) -> None:
        """Take the additions up to `seq` into the baseline (the list stays short)."""
        self.baseline = self.expected(seq)
        self._added = [(last, added) for last, added in self._added if last > seq]


class ChangeFollower:
    """A thread that reads /changes and /statistics and hands what changed to `apply`."""

    def __init__(self, client: OrthancClient, apply: Callable[[Invalidation], None],
                 poll_seconds: float = POLL_SECONDS, statistics_seconds: float = STATISTICS_SECONDS):
        self.client = client
        self.apply = apply
        self.poll_seconds = poll_seconds
        self.statistics_seconds = statistics_seconds
        self.cursor: int | None = None  # the last entry of the log read
        self.watch = CountWatch()
        self._next_statistics = 0.0
        self._rebaseline = threading.Event()
        self._own_deletions = 0  # raised by forget_counts
        self._own_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self.polls = 0

    def start(self) -> None:
        """Take the baseline now (what is cached from here on is judged against it), then poll
        in a thread of its own; a baseline Orthanc does not answer is taken by the thread."""
        try:
            self.poll()
        except OrthancFSError as exc:
            log.debug("following /changes starts later: %s", exc)
        self._thread = threading.Thread(target=self._run, name="orthancfs-follow", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A poll waiting on a silent Orthanc is not waited for: the client closes next, and
            # what the poll then meets is no news (Health.close).
            self._thread.join(timeout=2)

    def forget_counts(self) -> None:
        """This mount deletes something (called before and after, and it invalidates what it
        showed itself): count from the new numbers on, instead of taking the drop for somebody
        else's deletion, even when counts were being read meanwhile."""
        with self._own_lock:
            self._own_deletions += 1
        self._rebaseline.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                found = self.poll()
            except OrthancFSError as exc:  # Health has logged the outage; the log waits for us
                if not self._failing:
                    log.debug("following /changes paused: %s", exc)
                self._failing = True
                self._stop.wait(FAILING_POLL_SECONDS)
                continue
            except Exception:  # a bug here must not end the following silently
                log.exception("following Orthanc's changes failed; trying again")
                self._stop.wait(FAILING_POLL_SECONDS)
                continue
            self._failing = False
            if found:
                self.apply(found)
            self._stop.wait(self.poll_seconds)

    def poll(self) -> Invalidation:
        """One round: the log since the cursor, and now and then the counts."""
        self.polls += 1
        if self.cursor is None:
            self.cursor = self._baseline()
            return Invalidation()
        if self._rebaseline.is_set():
            self._rebaseline.clear()
            self.cursor = self._baseline()  # what was logged meanwhile: the deleting mount invalidated it
            return Invalidation()
        found = self._read_log()
        if found.everything:
            return found
        if time.monotonic() >= self._next_statistics:
            found.merge(self._check_counts())
        return found

    def _baseline(self) -> int:
        """Counts read while the log stood still, and the log's end: where following starts."""
        for _ in range(BASELINE_TRIES):
            before = self.client.last_change()
            counts = counts_of(self.client.statistics())
            after = self.client.last_change()
            if before == after:
                self.watch.start(counts, after)
                self._next_statistics = time.monotonic() + self.statistics_seconds
                return after
        self.watch.baseline = None  # too busy to count now: deletions wait for the next baseline
        self._rebaseline.set()
        return after

    def _read_log(self) -> Invalidation:
        assert self.cursor is not None
        found = Invalidation()
        for _ in range(MAX_PAGES):
            answer = self.client.changes(self.cursor, PAGE)
            last, changes = int(answer.get("Last", 0)), list(answer.get("Changes", []))
            if last < self.cursor:
                return self._reset(f"Orthanc's change log went back from {self.cursor} to {last} "
                                   "(a new database, or Orthanc was reset)")
            if changes and int(changes[0].get("Seq", 0)) > self.cursor + 1 and self.watch.baseline is not None:
                # Entries were removed: by deletions (counted below), or DELETE /changes.
                found.merge(self._check_counts(force=True))
            found.merge(invalidation_of(changes))
            self.watch.logged(last, changes)
            self.cursor = max(self.cursor, last)
            if answer.get("Done", True) or not changes:
                return found
        return self._reset(f"more than {MAX_PAGES * PAGE} changes since the last poll", log_it=False)

    def _reset(self, reason: str, log_it: bool = True) -> Invalidation:
        if log_it:
            log.warning("%s: everything is asked again", reason)
        self.cursor = self._baseline()
        return Invalidation(everything=reason, deleted=True)

    def _check_counts(self, force: bool = False) -> Invalidation:
        if not force and time.monotonic() < self._next_statistics:
            return Invalidation()
        self._next_statistics = time.monotonic() + self.statistics_seconds
        assert self.cursor is not None
        before, own = self.cursor, self._own_deletions
        counts = counts_of(self.client.statistics())
        after = self.client.last_change()
        if after != before:  # entries logged meanwhile: read them before judging the counts
            answer = self.client.changes(before, PAGE)
            changes = [c for c in answer.get("Changes", []) if int(c.get("Seq", 0)) <= after]
            if not answer.get("Done", True) and len(changes) == len(answer.get("Changes", [])):
                return Invalidation()  # more than a page meanwhile: judged at a quieter moment
            self.watch.logged(after, changes)
            extra = invalidation_of(changes)
            self.cursor = after
        else:
            extra = Invalidation()
        why = self.watch.judge(counts, before, after)
        if why is None:
            return extra
        if own != self._own_deletions:  # this mount deleted meanwhile: its own doing, counted afresh
            self._rebaseline.set()
            return extra
        log.debug("%s: everything is asked again", why)
        self.watch.start(counts, after) if after == before else self._rebaseline.set()
        extra.merge(Invalidation(everything=why, deleted=True))
        return extra
