"""Windows-safe names, for Explorer and Finder clients of the WebDAV export.

The mapping is stable and readable: each character Windows forbids becomes its
full-width look-alike (`:` -> `：`, `*` -> `＊`...), a trailing dot or space becomes
its full-width twin, and a reserved device name (CON, PRN, AUX, NUL, COM1-9,
LPT1-9, with or without extension) gets a `_` appended.  Frontends keep the
reverse mapping per listing, so no name has to be decoded.
"""

from __future__ import annotations

import re

FORBIDDEN = {c: chr(0xFF00 + ord(c) - 0x20) for c in '<>:"|?*'}
TRAILING = {".": "．", " ": "\u3000"}
RESERVED = re.compile(r"^(CON|PRN|AUX|NUL|COM[1-9]|LPT[1-9])(\..*)?$", re.IGNORECASE)


NEEDS_MAPPING = re.compile(r'[<>:"|?*]|[. ]\Z')


def windows_safe(name: str) -> str:
    if not NEEDS_MAPPING.search(name) and not RESERVED.match(name):
        return name  # most names: one regex pass instead of a generator over every character
    mapped = "".join(FORBIDDEN.get(c, c) for c in name)
    if mapped and mapped[-1] in TRAILING:
        mapped = mapped[:-1] + TRAILING[mapped[-1]]
    stem, dot, rest = mapped.partition(".")
    if RESERVED.match(mapped):
        mapped = f"{stem}_{dot}{rest}"
    return mapped
