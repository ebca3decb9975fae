"""The code hash in a job's params: a hash of the workflow script the job runs and of the library modules it runs,
found in lamofc_lib's import graph (imports inside functions too), so an edit to them reruns that job, and only the
jobs that run the edited code (workflow/rules/common.smk's script_code)."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
from pathlib import Path

from lamofc_lib.registry import GROUPS, defined_members, plugin_file

# A registry module (the tasks' or the codecs' __init__) imports every task or codec; a job runs one of them, so
# its hash covers the registry and the one member the job runs (EVERY: all members; None: none).
REGISTRIES = {"task": "lamofc_lib.tasks", "codec": "lamofc_lib.codecs", "quantizer": "lamofc_lib.quantizers"}
EVERY = "*"


def module_name(package: Path, path: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stamp(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path), stat.st_mtime_ns, stat.st_size


@functools.cache
def _parsed(stamp: tuple[str, int, int]) -> ast.Module:
    """A file's syntax tree, parsed once per content stamp (path, mtime, size): the workflow hashes dozens of
    (script, task, codec) combinations at start, all from the same few files."""
    path = Path(stamp[0])
    return ast.parse(path.read_text(), str(path))


def _imported(tree: ast.AST, modules: set[str]) -> set[str]:
    """The lamofc_lib modules a parsed file imports, at any depth (deferred imports inside functions too)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "lamofc_lib":
                continue
            while name not in modules:  # `from lamofc_lib.x import f`: the module x
                name = name.rsplit(".", 1)[0]
            found.add(name)
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the lamofc_lib modules it imports (a package's own __init__ counts for its submodules)."""
    return _graph(tuple(_stamp(f) for f in sorted(package.rglob("*.py"))), package)


@functools.cache
def _graph(stamps: tuple[tuple[str, int, int], ...], package: Path) -> dict[str, set[str]]:
    """The import graph of the files with these stamps, built once per state of the package (callers only read
    it)."""
    files = [Path(stamp[0]) for stamp in stamps]
    modules = frozenset(module_name(package, f) for f in files)
    return {
        module_name(package, f): _file_imports(s, modules) - {module_name(package, f)}
        for f, s in zip(files, stamps, strict=True)
    }


@functools.cache
def _file_imports(stamp: tuple[str, int, int], modules: frozenset[str]) -> set[str]:
    return _imported(_parsed(stamp), modules)


def registered_modules(package: Path, registry: str) -> dict[str, str]:
    """Member name -> the module under the registry's package that defines its class (a class body assigning
    `name = "<member>"`, e.g. tasks.lamofc.seg for "seg", codecs.hyperprior.codec for "hyperprior")."""
    folder = module_file(package, registry).parent
    return _registered(tuple(_stamp(f) for f in sorted(folder.rglob("*.py"))), folder, registry)


@functools.cache
def _registered(stamps: tuple[tuple[str, int, int], ...], folder: Path, registry: str) -> dict[str, str]:
    """registered_modules, read once per state of the registry's files (callers only read it)."""
    return {name: module for name, (module, _) in defined_members(folder, registry).items()}


def _member_modules(registry: str, module: str) -> set[str]:
    """A member's module with the packages between the registry and it, which Python runs on import."""
    parts = module.split(".")
    return {".".join(parts[:k]) for k in range(len(registry.split(".")) + 1, len(parts) + 1)}


def _members(package: Path, registry: str, choice: str | None) -> set[str]:
    """The registry's member modules a job runs: the chosen member's (none for None or a member another package
    registers, whose file `plugin_files` adds), or every member's (EVERY). The registry finds its members by
    reading its modules, so its own imports do not name them."""
    members = registered_modules(package, registry)
    if choice == EVERY:
        return set().union(*(_member_modules(registry, m) for m in members.values()))
    if choice is None or choice in _plugins(registry):
        return set()
    if choice not in members:
        raise KeyError(f"{registry} registers no '{choice}'; it registers {', '.join(sorted(members))}")
    return _member_modules(registry, members[choice])


def _plugins(registry: str) -> dict[str, type]:
    """The members other installed packages add to a registry (tasks and codecs; quantizers have none)."""
    if registry not in GROUPS:
        return {}
    members = importlib.import_module(registry).REGISTRY
    return {name: cls for name, cls in members.items() if plugin_file(cls) is not None}


def plugin_files(task: str | None, codec: str | None) -> list[Path]:
    """The source files of the task and codec a job runs where another installed package registers them: their
    code is hashed like the library's own modules."""
    chosen = ((REGISTRIES["task"], task), (REGISTRIES["codec"], codec))
    return [plugin_file(cls) for registry, choice in chosen for name, cls in _plugins(registry).items()
            if choice in (name, EVERY)]  # fmt: skip


def script_modules(
    package: Path,
    script: Path,
    task: str | None = EVERY,
    codec: str | None = EVERY,
    quantizer: str | None = EVERY,
) -> list[str]:
    """The library modules a workflow script runs: the closure of its imports in the import graph, where the
    task registry stands for `task` alone, the codec registry for `codec` alone and the quantizer registry for
    `quantizer` alone (see REGISTRIES)."""
    graph = import_graph(package)
    start = _file_imports(_stamp(script), frozenset(graph))
    chosen = {
        REGISTRIES[kind]: _members(package, REGISTRIES[kind], choice)
        for kind, choice in (("task", task), ("codec", codec), ("quantizer", quantizer))
    }
    seen, todo = set(), list(start)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        edges = graph[module]
        if module in chosen:
            edges = {m for m in edges if not m.startswith(module + ".")} | chosen[module]
        todo.extend(edges)
    return sorted(seen)


def module_file(package: Path, module: str) -> Path:
    path = package.parent / Path(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def script_code_version(
    package: Path,
    script: Path,
    task: str | None = EVERY,
    codec: str | None = EVERY,
    quantizer: str | None = EVERY,
) -> str:
    """A hash of `script` and of the library modules it runs for `task` and `codec` (see script_modules). The
    script counts too: Snakemake's own code trigger ignores a rule's script file."""
    digest = hashlib.sha256(script.name.encode() + script.read_bytes())
    for module in script_modules(package, script, task, codec, quantizer):
        digest.update(module.encode() + module_file(package, module).read_bytes())
    for path in plugin_files(task, codec):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]
