"""The project's documents live in the project: every link resolves, nothing points outside.

The README once cited a reliability document that was never part of the repository; users
following it found nothing.  These tests keep docs/ and the README self-contained and keep
docs/limits.md in step with the config's limits.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from gateway.config.model import LimitsConfig, PeeringConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Written in pieces so that this file does not name them itself.
OUTSIDE = ["RELIABILITY" + ".md", "ARCHITECTURE" + ".md", "../" + "shared", "/work/" + "shared"]
PROJECT_TEXT = ("*.py", "*.md", "*.toml", "*.txt", "*.cfg", "*.ini", "*.sh")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _project_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "pyproject.toml", *(ROOT / "scripts").iterdir()]
    for top in ("gateway", "overlay", "discovery", "tests", "scripts", "configs", "docs"):
        for pattern in PROJECT_TEXT:
            files += (ROOT / top).rglob(pattern)
    return sorted({f for f in files if f.is_file()})


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {
        _slug(line.lstrip("#"))
        for line in path.read_text("utf-8").splitlines()
        if line.startswith("#")
    }


def test_there_is_a_docs_index_and_a_limits_page() -> None:
    assert (ROOT / "docs" / "index.md").is_file()
    assert (ROOT / "docs" / "limits.md").is_file()


def test_no_file_refers_to_documents_outside_the_project() -> None:
    files = _project_files()
    assert len(files) > 100  # the walk found the project
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in OUTSIDE
        if name in path.read_text("utf-8", "replace")
    ]
    assert offenders == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = []
    for target in LINK.findall(doc.read_text("utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # an absolute URL (https:, mailto:)
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        anchor_missing = anchor and linked.suffix == ".md" and anchor not in _anchors(linked)
        if not linked.exists() or anchor_missing:
            broken.append(target)
    assert broken == []


@pytest.mark.parametrize("config", [LimitsConfig, PeeringConfig], ids=lambda c: c.__name__)
def test_limits_page_names_every_setting(config: type) -> None:
    page = (ROOT / "docs" / "limits.md").read_text("utf-8")
    missing = [f.name for f in dataclasses.fields(config) if f"`{f.name}`" not in page]
    missing = [m for m in missing if not re.search(rf"\b{m}\b", page)]
    assert missing == []


def test_the_readme_points_to_the_docs() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    assert "docs/index.md" in readme and "docs/limits.md" in readme
