"""lamofc_lib's modules import each other without cycles, counting imports inside functions too (a deferred
import hides a cycle from Python's loader, not from a reader)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lamofc_lib"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(name: str, modules: set[str]) -> str:
    """The module a dotted lamofc_lib name refers to: itself, or the module that defines it."""
    while name not in modules:
        name = name.rsplit(".", 1)[0]
    return name


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    graph: dict[str, set[str]] = {}
    for file in files:
        own = module_name(file)
        edges = graph.setdefault(own, set())
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "lamofc_lib":
                    target = resolve(name, modules)
                    if target != own:
                        edges.add(target)
    return graph


def test_the_graph_sees_deferred_imports():
    graph = import_graph()
    assert "lamofc_lib.codecs.hyperprior.codec" in graph
    # the codec imports the model module only inside its methods
    assert "lamofc_lib.codecs.hyperprior.model" in graph["lamofc_lib.codecs.hyperprior.codec"]
    assert "lamofc_lib.heads" in graph["lamofc_lib.tasks.dense"]  # `from lamofc_lib import heads`


def test_lamofc_lib_has_no_import_cycles():
    graph = import_graph()
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        raise AssertionError(f"import cycle: {' -> '.join(err.args[1])}") from None
