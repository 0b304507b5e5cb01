"""The docs stay true to the code: the repository stands alone, cited sections exist, links, paths and
dotted names in README.md and docs/*.md resolve."""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CITED_PAGES = ("nvinfer-semantics.md", "pyds-notes.md")


def tracked_text_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    suffixes = {".py", ".md", ".ipynb", ".txt", ".toml", ".yml", ".yaml", ".cfg", ""}
    return [REPO / p for p in out if Path(p).suffix in suffixes and (REPO / p).is_file()]


def test_nothing_points_outside_the_repository():
    outside = re.compile("|".join(["\\.\\./" + "shared", "shared/" + "reference"]))
    bad = [
        f"{p.relative_to(REPO)}:{i}"
        for p in tracked_text_files()
        for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
        if outside.search(line)
    ]
    assert not bad, f"cite docs/ instead of the notes outside the repository: {bad}"


def test_cited_sections_exist():
    """``docs/nvinfer-semantics.md §1.6`` (or ``pyds-notes.md §2, §3``) anywhere in the repository
    names a heading that page has."""
    headings = {
        page: set(re.findall(r"^#+ (\d+(?:\.\d+)?)\.? ", (REPO / "docs" / page).read_text(), re.M))
        for page in CITED_PAGES
    }
    cite = re.compile(
        r"("
        + "|".join(re.escape(p) for p in CITED_PAGES)
        + r")[`)\]]*((?:,? ?(?:and )?§\d+(?:\.\d+)?)+)"
    )
    missing, seen = [], 0
    for p in tracked_text_files():
        for m in cite.finditer(p.read_text(errors="replace")):
            for section in re.findall(r"§(\d+(?:\.\d+)?)", m.group(2)):
                seen += 1
                if section not in headings[m.group(1)]:
                    missing.append(f"{p.relative_to(REPO)}: {m.group(1)} §{section}")
    assert seen > 20, seen
    assert not missing, missing


def test_relative_links_and_repository_paths_exist():
    bad = []
    for doc in DOCS:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", text):
            if not (doc.parent / target).exists():
                bad.append(f"{doc.name}: link {target}")
        for path in re.findall(
            r"`((?:dsprobe|tests|benchmarks|examples|notebooks|tools)/[\w./-]*)`", text
        ):
            if not (REPO / path.rstrip("/")).exists():
                bad.append(f"{doc.name}: path {path}")
    assert not bad, bad


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for name in parts[i:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


def test_dotted_names_in_docs_resolve():
    """``dsprobe.notebook.ab_difference``, ``python -m dsprobe.cli.demo`` and the like name real
    modules and attributes (a renamed module leaves no stale name behind)."""
    bad = [
        f"{doc.name}: {m.group(0)}"
        for doc in DOCS
        for m in re.finditer(r"(?<![\w/])dsprobe(?:\.[A-Za-z_]\w*)+", doc.read_text())
        if not resolves(m.group(0))
    ]
    assert not bad, bad
