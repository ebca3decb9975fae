"""The README and the docs name files and modules that exist: every repository path they cite (in backticks or
as a Markdown link) and every `python -m` module they tell the reader to run."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# The top-level folders whose files the docs cite; results/, logs/ and benchmarks/ hold what a run writes.
TRACKED = ("lamofc_lib/", "workflow/", "config/", "envs/", "tests/", "docs/", ".ci/")
TOP_FILES = ("Snakefile", "README.md", "LICENSE", "pyproject.toml")
PATH = re.compile(r"`([^`\s]+)`|\]\(([^)\s#]+)\)")
MODULE = re.compile(r"python -m ([A-Za-z_][\w.]*)")


def cited_paths(text: str) -> set[str]:
    found = set()
    for match in PATH.finditer(text):
        path = (match.group(1) or match.group(2)).rstrip(".,:;")
        if path.startswith(("http://", "https://")):
            continue
        if path.startswith(TRACKED) or path in TOP_FILES:
            found.add(path)
    return found


def test_the_docs_exist():
    assert all(doc.is_file() for doc in DOCS) and len(DOCS) >= 5


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_path_a_doc_cites_exists(doc):
    text = doc.read_text()
    paths = cited_paths(text)
    # patterns name files a stage writes per task or codec ({task}, <codec>, *): their folder must exist
    missing = [p for p in sorted(paths) if not (REPO / re.split(r"[{<*]", p)[0]).exists()]
    assert missing == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_module_a_doc_runs_exists(doc):
    modules = set(MODULE.findall(doc.read_text()))
    missing = [m for m in sorted(modules) if importlib.util.find_spec(m) is None]
    assert missing == []


def test_the_checker_finds_a_missing_path_and_module():
    """The checks above read what they should: a made-up path and module are caught."""
    text = "see `lamofc_lib/no_such_module.py` and [the guide](docs/nowhere.md); run python -m lamofc_lib.nowhere"
    assert cited_paths(text) == {"lamofc_lib/no_such_module.py", "docs/nowhere.md"}
    assert MODULE.findall(text) == ["lamofc_lib.nowhere"]
    assert importlib.util.find_spec("lamofc_lib.nowhere") is None
