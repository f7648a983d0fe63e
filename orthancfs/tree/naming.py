"""Turning DICOM tag values into safe, unique, stable file names.

Orthanc's own WebDAV drops every non-ASCII byte and silently merges names; here
names keep their Unicode, unsafe characters are replaced (never deleted, so
`A/B` and `AB` stay different), a leading dot too (it would hide the entry), and
duplicates get ` (1)`, ` (2)`... suffixes that stick to their resource for the
life of the mount.  Each replacement depends on nothing but the text, so names
are stable.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import NamedTuple

MAX_NAME_BYTES = 255  # NAME_MAX on Linux, counted in UTF-8 bytes
REPLACEMENT = "_"
FIELD_SEPARATOR = " - "
_UNSAFE_ASCII = re.compile(r"[/\\\x00-\x1f\x7f]")  # path separators, NUL and the other C0 controls, DEL
# Characters that make a name show what it is not: controls (Cc), format characters (Cf: the
# bidirectional overrides, marks and isolates that display `Evil\u202emcd.exe` as `Evilexe.dcm`,
# zero-width spaces and joiners, the soft hyphen, BOM...), line and paragraph separators (Zl, Zp),
# and lone surrogates (Cs), which no file name can encode.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class _Replacements(dict):
    """str.translate's table: each code point looked up in unicodedata once, then remembered."""

    def __missing__(self, code: int) -> int | str:
        unsafe = chr(code) in "/\\" or unicodedata.category(chr(code)) in HIDDEN_CATEGORIES
        self[code] = found = REPLACEMENT if unsafe else code
        return found


_REPLACEMENTS = _Replacements()


def clean_text(text: str) -> str:
    """Replace path separators and characters that hide or disguise a name; trim surrounding spaces."""
    if text.isascii():  # most tags: one regex pass
        return _UNSAFE_ASCII.sub(REPLACEMENT, text).strip()
    return text.translate(_REPLACEMENTS).strip()


def join_fields(fields: Iterable[str | None], fallback: str) -> str:
    """Orthanc's `{A} - {B}` template, minus the dangling separators of empty fields.

    When every field is empty, `fallback` (typically the Orthanc ID) names the
    resource, so no entry is ever nameless.
    """
    parts = [clean_text(field or "") for field in fields]
    name = FIELD_SEPARATOR.join(part for part in parts if part)
    if name.strip(".") == "":  # "", "." and ".." are not names a directory may hold
        name = clean_text(fallback) or REPLACEMENT
    if name.startswith("."):  # ls and file managers would hide it
        name = REPLACEMENT + name[1:]
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
