"""Turning DICOM tag values into safe, unique, stable file names.

Orthanc's own WebDAV drops every non-ASCII byte and silently merges names; here
names keep their Unicode, unsafe characters are replaced (never deleted, so
`A/B` and `AB` stay different), and duplicates get ` (1)`, ` (2)`... suffixes
that stick to their resource for the life of the mount.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

MAX_NAME_BYTES = 255  # NAME_MAX on Linux, counted in UTF-8 bytes
REPLACEMENT = "_"
FIELD_SEPARATOR = " - "
# Path separators and Unicode category Cc (C0 controls with NUL, DEL, C1 controls).
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    """Replace path separators, NUL and control characters; trim surrounding spaces."""
    return _UNSAFE.sub(REPLACEMENT, text).strip()


def join_fields(fields: Iterable[str | None], fallback: str) -> str:
    """Orthanc's `{A} - {B}` template, minus the dangling separators of empty fields.

    When every field is empty, `fallback` (typically the Orthanc ID) names the
    resource, so no entry is ever nameless.
    """
    parts = [clean_text(field or "") for field in fields]
    name = FIELD_SEPARATOR.join(part for part in parts if part)
    if name.strip(".") == "":  # "", "." and ".." are not names a directory may hold
        name = clean_text(fallback) or REPLACEMENT
    return name


def cap_utf8(text: str, limit: int) -> str:
    """Cut `text` to at most `limit` UTF-8 bytes without splitting a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore").rstrip()


def numbered(stem: str, number: int, extension: str = "") -> str:
    """`stem (number)extension`, the whole capped at MAX_NAME_BYTES."""
    if not number and len(stem) + len(extension) <= MAX_NAME_BYTES // 4:  # 4 bytes a character at most
        return stem + extension  # the usual case, and the hot one: no encoding needed
    suffix = f" ({number})" if number else ""
    room = MAX_NAME_BYTES - len(suffix.encode()) - len(extension.encode())
    return cap_utf8(stem, room) + suffix + extension


class Wanted(NamedTuple):
    """The name a resource would like: its stem and extension, before disambiguation.

    A named tuple, not a dataclass: one is made per entry of every listing.
    """

    resource: str
    stem: str
    extension: str = ""


class NameAssigner:
    """Unique names for the entries of one directory, stable while the mount lives.

    The first time a set of equal names is seen they are numbered in ascending
    resource-ID order (as Orthanc does).  Afterwards a resource keeps its name
    until it disappears or its own tags change: a newcomer with the same name
    takes the next free number instead of shifting everybody else's.
    """

    def __init__(self) -> None:
        self._given: dict[str, tuple[Wanted, str]] = {}

    def assign(self, wanted: Sequence[Wanted]) -> dict[str, str]:
        """Map each wanted resource to its name; entries without a name keep theirs."""
        present = {w.resource: w for w in wanted}
        kept = {
            resource: (w, name)
            for resource, (w, name) in self._given.items()
            if present.get(resource) == w
        }
        taken = {name for _, name in kept.values()}
        newcomers = [w for w in wanted if w.resource not in kept]
        plain = [numbered(w.stem, 0, w.extension) for w in newcomers]
        if len(set(plain)) == len(plain) and taken.isdisjoint(plain):
            # No clash (the usual case: instances are named by ID): everyone gets the plain
            # name, as the numbering below would give them, without sorting.
            kept.update((w.resource, (w, name)) for w, name in zip(newcomers, plain, strict=True))
        else:
            for w in sorted(newcomers, key=lambda w: (w.stem, w.resource)):
                kept[w.resource] = (w, _first_free(w, taken))
        self._given = kept
        return {resource: name for resource, (_, name) in kept.items()}


def _first_free(wanted: Wanted, taken: set[str]) -> str:
    number = 0
    while (name := numbered(wanted.stem, number, wanted.extension)) in taken:
        number += 1
    taken.add(name)
    return name
