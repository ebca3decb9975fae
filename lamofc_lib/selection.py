"""Sample selection: which candidates of a task's source enter the benchmark.

A policy (`tasks.<task>.selection.policy`) is a `Policy` class: `first` (here) takes the first `samples`
candidates, for every task; a task offers its own in `Task.policies`, which live in its module (cls's
first_correct, csr's correct_longest, seg's class_coverage, dpt's scene_quota), so a policy is found through the
task registry, by name. A task's `reference_policy` is the one used when none is configured. The policies that
keep what the uncompressed model gets right (`needs_model`) are given each candidate's correctness
(`uncompressed_correct`, the same feature, head and comparison code as scoring).

An explicit list (`selection.list`: one sample id per line) overrides the policy. With features imported from
files (`tasks.<task>.features_from`), the candidates whose feature file exists are kept, in candidate order.

Every selection writes a report: one row per candidate tried (kept or skipped, and why).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from lamofc_lib.tasks.base import Task


class SelectionError(ValueError):
    """The candidates cannot give the configured samples; the message names the task and the counts."""


@dataclass
class Selection:
    manifest: pd.DataFrame
    report: pd.DataFrame  # sample_id, kept, reason (one row per candidate considered)
    notes: dict = field(default_factory=dict)  # what the policy could not meet, e.g. scenes below 3 images

    def summary(self, task: str, policy: str, kind: str | None = None) -> dict:
        """`task`: the config block; `kind`: its registered task (a profile's), by default the same."""
        reasons = self.report.loc[~self.report["kept"], "reason"].value_counts()
        return {
            "task": task,
            "policy": policy,
            "candidates": int(len(self.report)),
            "kept": int(self.report["kept"].sum()),
            "skipped": int((~self.report["kept"]).sum()),
            "skipped_by_reason": {str(k): int(v) for k, v in reasons.items()},
            # the model-run policies keep only the samples the uncompressed model gets right
            "keeps_only_correct": needs_model(kind or task, policy),
            **self.notes,
        }


class Policy:
    """A selection policy: `select` picks `samples` of the candidates (a Selection with its report). The class
    attributes are read by config validation."""

    # Its name in tasks.<task>.selection.policy.
    policy: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # The source kinds it needs (empty: any), and whether it keeps what the uncompressed model gets right (it is
    # then given each candidate's correctness).
    kinds: ClassVar[tuple[str, ...]] = ()
    needs_model: ClassVar[bool] = False

    @classmethod
    def select(
        cls, task: str, candidates: pd.DataFrame, samples: int, source: Mapping, correct: Sequence[bool] | None
    ) -> Selection:
        raise NotImplementedError(f"policy {cls.policy} has no select()")


class First(Policy):
    policy = "first"
    description = "the first samples, in the source's order"

    @classmethod
    def select(cls, task, candidates, samples, source, correct):
        return select_first(task, candidates, samples)


def policies(task: type[Task]) -> dict[str, type[Policy]]:
    """The policies a task offers: `first` and its own (`Task.policies`)."""
    return {p.policy: p for p in (First, *task.policies)}


def all_policies(tasks: Mapping | None = None) -> dict[str, type[Policy]]:
    """The policies of `tasks` (default: every registered task) by name (the schema's enum); one name is one
    class."""
    from lamofc_lib.registry import RegistryError

    if tasks is None:
        from lamofc_lib.tasks import REGISTRY as tasks

    found: dict[str, type[Policy]] = {}
    for task in tasks.values():
        for name, cls in policies(task).items():
            other = found.setdefault(name, cls)
            if other is not cls:
                raise RegistryError(
                    f"selection policy '{name}' is defined twice: {other.__module__}.{other.__name__} and "
                    f"{cls.__module__}.{cls.__name__} (task {task.name})"
                )
    return found


def needs_model(task: str, policy: str) -> bool:
    """Does the task's policy run the uncompressed model on the candidates (a list or feature files do not)?"""
    from lamofc_lib.tasks import REGISTRY

    found = policies(REGISTRY[task]).get(policy) if task in REGISTRY else None
    return bool(found and found.needs_model)


def selection_mode(selection: Mapping, features_from: str | None) -> str:
    """What makes a task's manifest: an explicit list wins, then feature files, then the policy."""
    if selection.get("list"):
        return "list"
    if features_from:
        return "files"
    return selection["policy"]


def first_eligible(eligible: Sequence[bool], samples: int) -> list[bool]:
    """The first `samples` eligible candidates, in candidate order."""
    kept, count = [], 0
    for ok in eligible:
        kept.append(bool(ok) and count < samples)
        count += kept[-1]
    return kept


def _report(candidates: pd.DataFrame, kept: Sequence[bool], reasons: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": list(candidates["sample_id"]), "kept": list(kept), "reason": list(reasons)})


def too_few(task: str, what: str, have: int, samples: int) -> SelectionError:
    return SelectionError(f"task {task}: {what} gives {have} samples, tasks.{task}.samples asks for {samples}")


def pick(candidates: pd.DataFrame, kept: Sequence[bool], reasons: Sequence[str]) -> Selection:
    mask = np.asarray(kept, dtype=bool)
    return Selection(candidates[mask].reset_index(drop=True), _report(candidates, mask, reasons))


def select_first(task: str, candidates: pd.DataFrame, samples: int) -> Selection:
    if len(candidates) < samples:
        raise too_few(task, f"the source's {len(candidates)} candidates", len(candidates), samples)
    kept = [i < samples for i in range(len(candidates))]
    return pick(candidates, kept, ["" if k else "beyond samples" for k in kept])


def select_list(task: str, candidates: pd.DataFrame, ids: Sequence[str], where: str) -> Selection:
    """The listed samples, in list order."""
    known = dict(zip(candidates["sample_id"], range(len(candidates)), strict=True))
    missing = [i for i in ids if i not in known]
    if missing:
        raise SelectionError(
            f"task {task}: {where} lists {len(missing)} sample ids the source does not have, e.g. {missing[:5]}"
        )
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if list(ids).count(i) > 1})
        raise SelectionError(f"task {task}: {where} lists sample ids more than once: {dup[:5]}")
    listed = set(ids)
    report = _report(
        candidates, [s in listed for s in candidates["sample_id"]],
        ["" if s in listed else "not in the list" for s in candidates["sample_id"]],
    )  # fmt: skip
    manifest = candidates.iloc[[known[i] for i in ids]].reset_index(drop=True)
    return Selection(manifest, report)


def read_id_list(path: str | Path) -> list[str]:
    """Sample ids, one per line (the first whitespace-separated field; blank lines and # comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise SelectionError(f"sample list {path} does not exist (selection.list)")
    lines = [line.strip() for line in path.read_text().splitlines()]
    ids = [line.split()[0] for line in lines if line and not line.startswith("#")]
    if not ids:
        raise SelectionError(f"sample list {path} holds no sample ids (selection.list)")
    return ids


def check_correct(task: str, candidates: pd.DataFrame, correct: Sequence[bool], samples: int) -> list[bool]:
    """The per-candidate correctness of the uncompressed model, checked to cover the candidates and to give
    `samples` correct ones."""
    correct = list(map(bool, correct))
    if len(correct) != len(candidates):
        raise ValueError(f"task {task}: {len(correct)} correctness values for {len(candidates)} candidates")
    if sum(correct) < samples:
        raise too_few(
            task, f"the uncompressed model answering {sum(correct)} of {len(candidates)} candidates correctly",
            sum(correct), samples,
        )  # fmt: skip
    return correct


def select(
    task: str,
    candidates: pd.DataFrame,
    samples: int,
    policy: str,
    id_list: str | Path | None = None,
    correct: Sequence[bool] | None = None,
    source: Mapping | None = None,
    kind: str | None = None,
) -> Selection:
    """Apply `policy` (or the explicit `id_list`) to the candidates; `correct` for the model policies. `kind`:
    the registered task of block `task` (a profile's), by default `task`."""
    if id_list:
        selection = select_list(task, candidates, read_id_list(id_list), str(id_list))
        if len(selection.manifest) != samples:
            raise SelectionError(
                f"task {task}: {id_list} lists {len(selection.manifest)} samples, tasks.{task}.samples is {samples}"
            )
        return selection
    from lamofc_lib.tasks import REGISTRY

    offered = policies(REGISTRY[kind or task])
    if policy not in offered:
        raise SelectionError(
            f"tasks.{task}.selection.policy {policy!r} is unknown; task {task} offers {', '.join(offered)}"
        )
    chosen = offered[policy]
    if chosen.needs_model and correct is None:
        raise ValueError(f"policy {policy} needs the uncompressed model's correctness per candidate")
    return chosen.select(task, candidates, samples, source or {}, correct)


def select_files(
    task: str, candidates: pd.DataFrame, samples: int, stems: Sequence[str], folder: str, suffix: str = ".npy"
) -> Selection:
    """The candidates whose feature file (`stems`: each candidate's file stem, then `suffix`) exists in
    `folder`."""
    have = {p.stem for p in Path(folder).glob(f"*{suffix}")}
    if suffix == ".npy":  # a task with named tensors: a folder per sample holding one .npy per tensor
        have |= {p.name for p in Path(folder).iterdir() if p.is_dir() and any(p.glob("*.npy"))}
    if not have:
        raise SelectionError(
            f"task {task}: feature folder {folder} holds no {suffix} files (tasks.{task}.features_from)"
        )
    kept = first_eligible([stem in have for stem in stems], samples)
    if sum(kept) < samples:
        found = sum(stem in have for stem in stems)
        raise SelectionError(
            f"task {task}: {found} of the {len(stems)} candidates have a feature file in {folder} "
            f"(tasks.{task}.features_from), tasks.{task}.samples asks for {samples}"
        )
    reasons = [
        "" if k else ("no feature file" if s not in have else "beyond samples")
        for k, s in zip(kept, stems, strict=True)
    ]
    return pick(candidates, kept, reasons)


def uncompressed_correct(task, candidates: pd.DataFrame, model: Mapping, split, head: str | Path) -> list[bool]:
    """Per candidate: does the uncompressed model with its head get it right? The same feature, head and
    comparison code as scoring, run on the candidates without storing their features."""
    extraction = task.features(candidates, model, split).named(task.packing)
    samples = (task.head_input(sample) for sample in extraction.samples)
    outputs = task.head_outputs(Path(head), samples, extraction.attrs)
    _, rows = task.compare(outputs, task.ground_truth(candidates))
    return [bool(row["correct"]) for row in rows]


def run_selection(
    task_name: str,
    candidates: pd.DataFrame,
    settings: Mapping,
    model: Mapping | None = None,
    split=None,
    head: str | Path | None = None,
    device: str = "cpu",
    threads: int | None = None,
    kind: str | None = None,
) -> Selection:
    """The selection of one task from its candidates and its configuration block (`settings`: samples,
    selection, features_from, source); `kind`: the block's registered task (a profile's), by default the same."""
    from lamofc_lib.tasks import get_task

    kind = kind or task_name
    samples, policy = int(settings["samples"]), settings["selection"]["policy"]
    id_list = settings["selection"].get("list")
    folder = settings.get("features_from")
    mode = selection_mode(settings["selection"], folder)
    if mode == "files":
        if any(Path(folder).glob("*.zst")):  # LaMoFCBench's files are named by the sample id
            return select_files(task_name, candidates, samples, list(candidates["sample_id"]), folder, ".zst")
        task = get_task(task_name, kind=kind)
        stems = [task.reference_stem(s) for s in candidates["sample_id"]]
        return select_files(task_name, candidates, samples, stems, folder)
    correct = None
    if needs_model(kind, mode):
        task = get_task(task_name, device=device, threads=threads, kind=kind)
        correct = uncompressed_correct(task, candidates, model or {}, split, head)
    return select(task_name, candidates, samples, policy, id_list, correct, settings.get("source"), kind=kind)
