"""Text from users and from Orthanc, made safe to show as one line.

File names in uploads/ and ZIP entry names are chosen by whoever writes them, and
Orthanc's error texts are not ours either: a newline in any of them could forge a
line of ORTHANCFS-REPORT.txt ("stored as instance ... (Success)") or of the log.
Every reason, name and entry shown in the report, an xattr, a WebDAV property or
the log goes through `one_line`.
"""

from __future__ import annotations

NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def one_line(text: str) -> str:
    """`text` with every character that is not printable written as an escape (`\\n`, `\\x1b`,
    `\\u202e`) and backslashes doubled, so that an escape cannot be faked either.

    Not printable, for Python, covers what could end or disguise a line: controls (C0, C1, DEL),
    line and paragraph separators, and format characters such as bidirectional overrides.
    """
    if text.isprintable() and "\\" not in text:
        return text  # nearly always: one pass in C
    return "".join(_escaped(c) for c in text)


def _escaped(char: str) -> str:
    if char in NAMED:
        return NAMED[char]
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
