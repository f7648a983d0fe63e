"""bench/RESULTS.md is written in sections, one per benchmark, so that running one keeps the others
and the explanations written between them."""

from __future__ import annotations

from pathlib import Path


def write_section(path: Path, name: str, body: str) -> None:
    """Put `body` between `<!-- name -->` and `<!-- /name -->` in `path`: in place of what stood
    there, or at the end the first time."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    section = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        text = text[: text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)
