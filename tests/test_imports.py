"""lamofc_lib's modules import each other without cycles, counting imports inside functions too (a deferred
import hides a cycle from Python's loader, not from a reader)."""

from __future__ import annotations

import graphlib
import subprocess
import sys
from pathlib import Path

from lamofc_lib import code_hash

PACKAGE = Path(__file__).resolve().parents[1] / "lamofc_lib"


def import_graph() -> dict[str, set[str]]:
    return code_hash.import_graph(PACKAGE)


def test_the_graph_sees_deferred_imports():
    graph = import_graph()
    assert "lamofc_lib.codecs.hyperprior.codec" in graph
    # the codec imports the model module only inside its methods
    assert "lamofc_lib.codecs.hyperprior.model" in graph["lamofc_lib.codecs.hyperprior.codec"]
    assert "lamofc_lib.tasks.lamofc.heads" in graph["lamofc_lib.tasks.lamofc.dense"]  # from-import of a module


def test_lamofc_lib_has_no_import_cycles():
    graph = import_graph()
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        raise AssertionError(f"import cycle: {' -> '.join(err.args[1])}") from None


def test_config_and_the_task_registry_import_no_torch():
    """The Snakefile imports lamofc_lib.config at every start, and config validation reads the task classes'
    attributes: the task registry, like the codec registry, imports torch (seconds) and the model libraries only
    inside the functions that run models."""
    heavy = ("torch", "torchvision", "transformers", "diffusers", "compressai", "zarr")
    code = (
        "import sys, lamofc_lib.config, lamofc_lib.tasks, lamofc_lib.codecs\n"
        f"loaded = [m for m in {heavy!r} if m in sys.modules]\n"
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stderr
