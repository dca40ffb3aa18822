"""README.md and docs/ point only at files a clone of the repository has."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_markdown_links_resolve_inside_the_repository() -> None:
    broken = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(REPO) or not path.exists():
                broken.append(f"{doc.relative_to(REPO)}: {target}")
    assert broken == []


def test_no_path_leaves_the_repository() -> None:
    """A clone has no ../shared/ (or anything else above it) to point at."""
    outside = [f"{doc.relative_to(REPO)}:{n}: {line.strip()}"
               for doc in DOCS for n, line in enumerate(doc.read_text().splitlines(), 1)
               if "../" in line]
    assert outside == []
