"""The registries of what a contributor adds: tasks (`lamofc_lib.tasks`) and codecs (`lamofc_lib.codecs`).

A member is a class with a `name`. The package's own members are found by reading its modules: a module
under the registry's package whose class body assigns `name = "..."` defines that member, and only those
modules are imported (so a new task or codec is one module, with no list to edit, and a module that imports
torch at its top is never imported by a registry). Members of other installed packages are found through entry
points: a distribution declares, e.g. in its pyproject.toml,

    [project.entry-points."lamofc.codecs"]
    mycodec = "my_package.codec:MyCodec"

and the registry loads the class it names. Two members of one name stop the registry, naming both.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
from functools import cache
from pathlib import Path

GROUPS = {"lamofc_lib.tasks": "lamofc.tasks", "lamofc_lib.codecs": "lamofc.codecs"}
"""Registry package -> the entry-point group through which other packages add members."""


class RegistryError(RuntimeError):
    """Two members of one name, or an entry point that does not name a member class."""


def defined_members(package_dir: Path, package: str) -> dict[str, tuple[str, str]]:
    """Member name -> (module, class) of the classes defined in the modules under `package_dir` (the folder
    of the package `package`) whose body assigns `name = "<member>"`, read without importing them."""
    found: dict[str, tuple[str, str]] = {}
    for file in sorted(Path(package_dir).rglob("*.py")):
        parts = file.relative_to(package_dir).with_suffix("").parts
        module = ".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)])
        for node in ast.parse(file.read_text(), str(file)).body:
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if (
                    isinstance(item, ast.Assign)
                    and [getattr(t, "id", None) for t in item.targets] == ["name"]
                    and isinstance(item.value, ast.Constant)
                    and isinstance(item.value.value, str)
                ):
                    if item.value.value in found:
                        raise RegistryError(
                            f"{package}: '{item.value.value}' is defined twice, in {found[item.value.value][0]} and "
                            f"{module}"
                        )
                    found[item.value.value] = (module, node.name)
    return found


def load(package: str, base: type) -> dict[str, type]:
    """The members of a registry package: its own modules' member classes, then those that installed
    distributions add through the package's entry-point group (GROUPS), each a subclass of `base`."""
    folder = Path(importlib.import_module(package).__file__).parent
    members = {}
    for name, (module, cls) in defined_members(folder, package).items():
        members[name] = getattr(importlib.import_module(module), cls)
    for entry in sorted(_entry_points(GROUPS[package]), key=lambda e: e.name):
        where = f"entry point '{entry.name} = {entry.value}' (group {GROUPS[package]}, distribution {_dist(entry)})"
        try:
            cls = entry.load()
        except Exception as err:  # a plugin that fails to import: say which one
            raise RegistryError(f"{where} failed to load: {type(err).__name__}: {err}") from err
        if not (isinstance(cls, type) and issubclass(cls, base) and cls.name):
            raise RegistryError(f"{where} does not name a {base.__name__} subclass with a name")
        if cls.name in members:
            other = members[cls.name]
            raise RegistryError(f"{where} registers '{cls.name}', which {other.__module__}.{other.__name__} has")
        members[cls.name] = cls
    return members


def plugin_file(cls: type) -> Path | None:
    """The source file of a member class that another package registers (None for lamofc_lib's own)."""
    module = importlib.import_module(cls.__module__)
    if cls.__module__.split(".")[0] == __name__.split(".")[0]:
        return None
    return Path(module.__file__)


@cache
def _entry_points(group: str) -> tuple:
    return tuple(importlib.metadata.entry_points(group=group))


def _dist(entry) -> str:
    return entry.dist.name if getattr(entry, "dist", None) else "?"
