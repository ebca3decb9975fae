"""Every public function and class of lamofc_lib is used by the workflow, the documented Python API (README.md)
or other library code: code that only tests call is dead and gets deleted."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lamofc_lib"


def public_definitions() -> list[tuple[Path, str, int]]:
    """(file, name, line) of every top-level public function and class of lamofc_lib."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                found.append((path, node.name, node.lineno))
    return found


def uses(text: str, name: str) -> int:
    return len(re.findall(rf"\b{re.escape(name)}\b", text))


def test_every_public_function_and_class_has_a_user_besides_the_tests():
    workflow = [REPO / "Snakefile", *sorted((REPO / "workflow").rglob("*.smk")), *(REPO / "workflow").rglob("*.py")]
    outside = "\n".join(p.read_text() for p in [*workflow, REPO / "README.md"])
    library = {path: path.read_text() for path in PACKAGE.rglob("*.py")}
    unused = []
    for path, name, line in public_definitions():
        # its own module counts beyond the definition itself (a helper called by another function there)
        in_library = sum(uses(text, name) for text in library.values()) - 1
        if not uses(outside, name) and in_library < 1:
            unused.append(f"{path.relative_to(REPO)}:{line} {name}")
    assert not unused, "used only by tests (delete, or use it): " + ", ".join(unused)
