"""The README's table of contents lists every section, in order, with working anchors.

On a failure the assertion message is the block to paste between the contents markers.
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- contents:start -->", "<!-- contents:end -->"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def expected_contents(text: str) -> str:
    """One bullet per ``##`` heading (``###`` nested), outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced:
            continue
        match = re.match(r"^(##|###) (.+)$", line)
        if match and match.group(2) != "Contents":
            indent = "  " if match.group(1) == "###" else ""
            title = match.group(2).strip()
            lines.append(f"{indent}- [{title}](#{github_anchor(title)})")
    return "\n".join(lines)


def test_readme_contents_match_its_sections():
    text = README.read_text()
    assert START in text and END in text, f"README needs a contents block between {START} and {END}"
    current = text.split(START, 1)[1].split(END, 1)[0].strip()
    expected = expected_contents(text)
    assert current == expected, "README contents are stale; replace the block with:\n" + expected


def test_anchor_rule():
    assert github_anchor("Where the time goes: `mixgrpo bench`") == "where-the-time-goes-mixgrpo-bench"
    assert github_anchor("Run in the cloud (RunPod)") == "run-in-the-cloud-runpod"
