"""The documentation the code cites lives in the repository, and every cited section exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
SOURCE_GLOBS = ("neurolm/**/*.py", "ray_jobs/*.py", "tests/**/*.py", "benchmarks/*.py", "configs/**/*.yaml",
                "cluster/**/*")  # fmt: skip

# `docs/reference.md §6.3-7`, `docs/platform.md §4`, and further sections in the same parenthesis: `§4.3, §5`.
CITATION = re.compile(r"docs/(\w[\w-]*)\.md((?:[ ,]*(?:and )?§[0-9]+(?:\.[0-9]+)?(?:-[0-9]+)?)+)")
SECTION = re.compile(r"§([0-9]+(?:\.[0-9]+)?)(?:-([0-9]+))?")


def _sources() -> list[Path]:
    files = {p for g in SOURCE_GLOBS for p in REPO.glob(g) if p.is_file() and ".venv" not in p.parts}
    return sorted(files)


def _sections(page: Path) -> tuple[set[str], set[str]]:
    """Numbered headings (``## 4.`` / ``### 6.3 …``) and numbered items under ``### 6.3`` of a page."""
    text = page.read_text(encoding="utf-8")
    headings = set(re.findall(r"^#+ ([0-9]+(?:\.[0-9]+)?)[. ]", text, flags=re.M))
    items: set[str] = set()
    current = None
    for line in text.splitlines():
        heading = re.match(r"^#+ ([0-9]+(?:\.[0-9]+)?)[. ]", line)
        if heading:
            current = heading.group(1)
        elif current and (item := re.match(r"^([0-9]+)\. ", line)):
            items.add(f"{current}-{item.group(1)}")
    return headings, items


def test_every_cited_docs_section_exists() -> None:
    missing = []
    for path in _sources():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for match in CITATION.finditer(text):
            page = DOCS / f"{match.group(1)}.md"
            if not page.exists():
                missing.append(f"{path.relative_to(REPO)}: docs/{match.group(1)}.md does not exist")
                continue
            headings, items = _sections(page)
            for number, item in SECTION.findall(match.group(2)):
                cited = f"{number}-{item}" if item else number
                if cited not in (items if item else headings):
                    missing.append(f"{path.relative_to(REPO)}: docs/{match.group(1)}.md has no §{cited}")
    assert not missing, "\n".join(sorted(set(missing)))


@pytest.mark.parametrize("page", ["architecture", "reference", "checkpoint-layout", "platform", "data",
                                  "contributing"])  # fmt: skip
def test_readme_links_every_docs_page(page: str) -> None:
    assert (DOCS / f"{page}.md").exists()
    assert f"(docs/{page}.md)" in (REPO / "README.md").read_text(encoding="utf-8")


def test_docs_links_resolve() -> None:
    broken = []
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+\.md)\)", page.read_text(encoding="utf-8")):
            if not (page.parent / target).exists():
                broken.append(f"{page.name} → {target}")
    assert not broken, broken


OUTSIDE = re.compile(
    r"\b[Ss]pec §|STACK\.md|STYLE\.md|DATA\.md|DESIGN\.md|official-checkpoint-layout\.md|neurolm-reference\.md"
    r"|shared/spec"
)


def test_no_citation_points_outside_the_repository() -> None:
    offenders = []
    for path in [p for p in _sources() if p != Path(__file__).resolve()] + [REPO / "README.md"]:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            continue
        offenders += [
            f"{path.relative_to(REPO)}:{n}: {line.strip()}" for n, line in enumerate(lines, 1) if OUTSIDE.search(line)
        ]
    assert not offenders, "cite docs/ instead:\n" + "\n".join(offenders)
