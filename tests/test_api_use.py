"""Every public function and class of lamofc_lib is used by the workflow, the documented Python API (README.md)
or other library code: code that only tests call is dead and gets deleted. A registry's member classes (tasks,
codecs: found by lamofc_lib.registry, which reads their modules rather than naming them) are live.

Uses are names in code, read with `ast` (a name, an attribute, an import): a mention in a docstring, a comment
or an error message is no use. The workflow's rule files (Snakemake, not Python) and README.md count a name
written there as a word. Library code counts when it runs for one of those users: a function called only by
another dead function is dead too. Methods are out of scope."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lamofc_lib"
DEFINITION = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def code_names(node: ast.AST) -> set[str]:
    """Names that code under `node` uses: variables, attributes, imported names."""
    names = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            names.add(child.id)
        elif isinstance(child, ast.Attribute):
            names.add(child.attr)
        elif isinstance(child, ast.alias):
            names.add(child.name.rpartition(".")[2])
    return names


def library():
    """(definitions, module_level): each top-level function and class of lamofc_lib as (file, name, line) with
    the names its body uses, and the names the package's module-level code uses (it runs on import)."""
    definitions, module_level = {}, set()
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, DEFINITION):
                definitions[path, node.name, node.lineno] = code_names(node)
            else:
                module_level |= code_names(node)
    return definitions, module_level


def outside_uses(names: set[str]) -> set[str]:
    """The names the workflow (Snakefile, rules, scripts) and README.md use."""
    used = set()
    for script in sorted((REPO / "workflow").rglob("*.py")):
        used |= code_names(ast.parse(script.read_text(), str(script)))
    rules = [REPO / "Snakefile", *sorted((REPO / "workflow").rglob("*.smk")), REPO / "README.md"]
    text = "\n".join(path.read_text() for path in rules)
    return used | {name for name in names if re.search(rf"\b{re.escape(name)}\b", text)}


def registered_classes() -> set[str]:
    from lamofc_lib.registry import GROUPS, defined_members

    return {
        cls
        for package in GROUPS
        for _, cls in defined_members(PACKAGE.parent / Path(*package.split(".")), package).values()
    }


def unused_definitions() -> list[str]:
    definitions, module_level = library()
    by_name: dict[str, list[set[str]]] = {}
    for (_, name, _), uses in definitions.items():
        by_name.setdefault(name, []).append(uses)
    # Live: what the workflow, README.md, module-level code or a registry names, and what live definitions use.
    live, todo = set(), outside_uses(set(by_name)) | module_level | registered_classes()
    while todo:
        name = todo.pop()
        if name not in live:
            live.add(name)
            for uses in by_name.get(name, []):
                todo |= uses - live
    return [
        f"{path.relative_to(REPO)}:{line} {name}"
        for path, name, line in definitions
        if not name.startswith("_") and name not in live
    ]


def test_code_names_ignore_docstrings_comments_and_strings():
    tree = ast.parse('def f():\n    """calls g"""\n    # h\n    raise ValueError("i failed")\n    return j.k(m)\n')
    assert code_names(tree) == {"ValueError", "j", "k", "m"}


def test_every_public_function_and_class_has_a_user_besides_the_tests():
    unused = unused_definitions()
    assert not unused, "used only by tests (delete, or use it): " + ", ".join(unused)
