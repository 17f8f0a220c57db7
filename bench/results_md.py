"""bench/RESULTS.md sections: each bench owns the text between its two HTML-comment markers."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(begin: str, end: str, section: str) -> None:
    """Replace the section between `begin` and `end` (the markers are part of `section`), or append it."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "") + section.rstrip("\n") + "\n"
    RESULTS.write_text(text)
