"""The notes the code cites are in the repository (docs/), and every link between them resolves."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*ROOT.glob("spgnet/**/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("docs/*.md"), ROOT / "README.md"])


def test_every_cited_docs_page_exists():
    cited = {}
    for path in SOURCES:
        for name in re.findall(r"docs/[\w.-]+\.md", path.read_text(encoding="utf-8")):
            cited.setdefault(name, path.relative_to(ROOT).as_posix())
    assert {"docs/architecture.md", "docs/architecture-counts.md", "docs/table1-peers.md"} <= set(cited)
    missing = {name: where for name, where in cited.items() if not (ROOT / name).is_file()}
    assert not missing, missing


def test_no_source_cites_notes_outside_the_repository():
    outside = [path.relative_to(ROOT).as_posix() for path in SOURCES if path != Path(__file__).resolve()
               and "shared/notes" in path.read_text(encoding="utf-8")]
    assert not outside, outside


def test_relative_links_in_docs_resolve():
    for page in ROOT.glob("docs/*.md"):
        for target in re.findall(r"\]\(([^)#:]+)\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_code_paths_named_in_docs_exist():
    for page in ROOT.glob("docs/*.md"):
        for path in re.findall(r"`((?:spgnet|params|tests|reports|workflow)/[\w./-]*\w)`", page.read_text(encoding="utf-8")):
            if "*" not in path:
                assert (ROOT / path).exists(), f"{page.name}: {path}"
