"""Sample selection: which candidates of a task's source enter the benchmark.

The paper keeps samples the uncompressed model gets right (cls, csr) and curated subsets (seg, dpt); its
reference implementation does it as follows, and so do these policies (`tasks.<task>.selection.policy`):

* ``first_correct`` (cls): candidates in their order (ImageNet: the first val image of each class, in class
  order); a candidate is kept when the uncompressed model's prediction equals its label, until `samples` are kept.
* ``correct_longest`` (csr): the candidates the uncompressed model answers correctly; of those, the `samples`
  with the longest prompts (characters of the prompt string; ties: earlier in the file), kept in file order.
* ``class_coverage`` (seg): VOC2012 val images in list order that give two sliding windows (the paper's
  2 x 1370 x 1536; square images give one and are skipped, reported). First pass: an image is kept when its label map
  holds an object class (1-20) no kept image holds yet, until every class present in the pool is covered; then
  the list is filled in order up to `samples`. Fails when `samples` cannot cover every class.
* ``scene_quota`` (dpt): NYU-Depth-v2 test images grouped by scene category (the first folder of the rgb
  path, e.g. ``bathroom/rgb_00045.jpg``). Every category gets min(3, its candidates) images, then one more in
  turn (categories in order of first appearance) while it has fewer than 8 and candidates left, until
  `samples`; inside a category the picks are evenly spread over its list order.
* ``first``: the first `samples` candidates (tti: COCO images in annotation order with their longest caption;
  the demo's unlabelled images).

An explicit list (`selection.list`: one sample id per line) overrides the policy. With features imported from
files (`tasks.<task>.features_from`), the candidates whose feature file exists are kept, in candidate order.

Every selection writes a report: one row per candidate tried (kept or skipped, and why).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.sources.images import image_size, load_label_map

MODEL_POLICIES = ("first_correct", "correct_longest")
POLICIES = ("first", "first_correct", "correct_longest", "class_coverage", "scene_quota")
# The source kinds a policy needs (lamofc_lib.config refuses another); "first" takes any source.
POLICY_SOURCES = {
    "first_correct": ("imagenet",),
    "correct_longest": ("arc", "arc_demo"),
    "class_coverage": ("voc2012",),
    "scene_quota": ("nyu_depth_v2",),
}
VOC_OBJECT_CLASSES = range(1, 21)
SCENE_MIN, SCENE_MAX = 3, 8
SEG_WINDOWS = 2  # the paper's seg feature: 2 x 1 x 1370 x 1536


class SelectionError(ValueError):
    """The candidates cannot give the configured samples; the message names the task and the counts."""


@dataclass
class Selection:
    manifest: pd.DataFrame
    report: pd.DataFrame  # sample_id, kept, reason (one row per candidate considered)
    notes: dict = field(default_factory=dict)  # what the policy could not meet, e.g. scenes below 3 images

    def summary(self, task: str, policy: str) -> dict:
        reasons = self.report.loc[~self.report["kept"], "reason"].value_counts()
        return {
            "task": task,
            "policy": policy,
            "candidates": int(len(self.report)),
            "kept": int(self.report["kept"].sum()),
            "skipped": int((~self.report["kept"]).sum()),
            "skipped_by_reason": {str(k): int(v) for k, v in reasons.items()},
            # the model-run policies keep only the samples the uncompressed model gets right
            "keeps_only_correct": needs_model(policy),
            **self.notes,
        }


def needs_model(policy: str) -> bool:
    return policy in MODEL_POLICIES


def selection_mode(selection: Mapping, features_from: str | None) -> str:
    """What makes a task's manifest: an explicit list wins, then feature files, then the policy."""
    if selection.get("list"):
        return "list"
    if features_from:
        return "files"
    return selection["policy"]


def _first(eligible: Sequence[bool], samples: int) -> list[bool]:
    """The first `samples` eligible candidates, in candidate order."""
    kept, count = [], 0
    for ok in eligible:
        kept.append(bool(ok) and count < samples)
        count += kept[-1]
    return kept


def _report(candidates: pd.DataFrame, kept: Sequence[bool], reasons: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": list(candidates["sample_id"]), "kept": list(kept), "reason": list(reasons)})


def _too_few(task: str, what: str, have: int, samples: int) -> SelectionError:
    return SelectionError(f"task {task}: {what} gives {have} samples, tasks.{task}.samples asks for {samples}")


def _pick(candidates: pd.DataFrame, kept: Sequence[bool], reasons: Sequence[str]) -> Selection:
    mask = np.asarray(kept, dtype=bool)
    return Selection(candidates[mask].reset_index(drop=True), _report(candidates, mask, reasons))


def select_first(task: str, candidates: pd.DataFrame, samples: int) -> Selection:
    if len(candidates) < samples:
        raise _too_few(task, f"the source's {len(candidates)} candidates", len(candidates), samples)
    kept = [i < samples for i in range(len(candidates))]
    return _pick(candidates, kept, ["" if k else "beyond samples" for k in kept])


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


def select_correct(
    task: str, candidates: pd.DataFrame, correct: Sequence[bool], samples: int, policy: str
) -> Selection:
    """first_correct or correct_longest from per-candidate correctness of the uncompressed model."""
    correct = list(map(bool, correct))
    if len(correct) != len(candidates):
        raise ValueError(f"task {task}: {len(correct)} correctness values for {len(candidates)} candidates")
    if sum(correct) < samples:
        raise _too_few(
            task, f"the uncompressed model answering {sum(correct)} of {len(candidates)} candidates correctly",
            sum(correct), samples,
        )  # fmt: skip
    if policy == "first_correct":
        kept = _first(correct, samples)
        reasons = [
            "" if k else ("incorrect" if not ok else "beyond samples") for k, ok in zip(kept, correct, strict=True)
        ]
        return _pick(candidates, kept, reasons)
    if policy == "correct_longest":
        lengths = candidates["text"].str.len().to_numpy()
        order = sorted((i for i in range(len(correct)) if correct[i]), key=lambda i: (-lengths[i], i))
        chosen = set(order[:samples])
        kept = [i in chosen for i in range(len(correct))]
        reasons = [
            "" if k else ("incorrect" if not ok else "shorter prompt") for k, ok in zip(kept, correct, strict=True)
        ]
        return _pick(candidates, kept, reasons)
    raise ValueError(f"policy {policy!r} does not select by correctness")


def select_class_coverage(
    task: str,
    candidates: pd.DataFrame,
    samples: int,
    classes_of: Callable[[str], set[int]] | None = None,
    windows_of: Callable[[str], int] | None = None,
) -> Selection:
    """seg: cover every object class of the pool first, then fill in list order (see the module docstring).
    Candidates whose image gives another number of sliding windows than SEG_WINDOWS (a square VOC image gives
    one) are skipped and reported, so every frame has the paper's 2 x 1370 x 1536 shape."""
    classes_of = classes_of or _label_classes
    windows_of = windows_of or _seg_windows
    windows = [windows_of(source) for source in candidates["source"]]
    usable = [w == SEG_WINDOWS for w in windows]
    if sum(usable) < samples:
        raise _too_few(task, f"the {sum(usable)} candidates with {SEG_WINDOWS} sliding windows", sum(usable), samples)
    present = [
        classes_of(label) & set(VOC_OBJECT_CLASSES) if ok else set()
        for label, ok in zip(candidates["label"], usable, strict=True)
    ]
    pool = set().union(*present)
    missing = sorted(set(VOC_OBJECT_CLASSES) - pool)
    if missing:
        raise SelectionError(
            f"task {task}: no usable candidate holds object classes {missing}, so no selection covers all 20 "
            f"(check the label maps, or set tasks.{task}.selection.policy to first)"
        )
    covered: set[int] = set()
    kept = [False] * len(candidates)
    for i, classes in enumerate(present):
        if covered == pool:
            break
        if classes - covered:
            kept[i], covered = True, covered | classes
    if sum(kept) > samples:
        raise SelectionError(
            f"task {task}: covering the {len(pool)} object classes of the pool takes {sum(kept)} images in list "
            f"order, tasks.{task}.samples asks for {samples}"
        )
    for i in range(len(kept)):
        if sum(kept) >= samples:
            break
        kept[i] = kept[i] or usable[i]
    reasons = [
        "" if k else ("beyond samples" if ok else f"{w} sliding window(s), not {SEG_WINDOWS}")
        for k, ok, w in zip(kept, usable, windows, strict=True)
    ]
    return _pick(candidates, kept, reasons)


def _label_classes(label_path: str) -> set[int]:
    return {int(c) for c in np.unique(load_label_map(label_path))}


def _seg_windows(source: str) -> int:
    from lamofc_lib.tasks.dinov2 import seg_geometry

    return len(seg_geometry(*image_size(source))["windows"])


def scene_of(source: str, root: str | None = None) -> str:
    """The NYU scene category of an rgb path: its first folder below the data root (``bathroom/rgb_00045.jpg``)."""
    path = Path(source)
    if root is not None:
        with contextlib.suppress(ValueError):  # a source outside the root keeps its own first folder
            path = path.relative_to(root)
    return path.parts[0] if len(path.parts) > 1 else ""


def select_scene_quota(task: str, candidates: pd.DataFrame, samples: int, scenes: Sequence[str]) -> Selection:
    """dpt: 3 to 8 images per scene category, evenly spread (see the module docstring)."""
    if len(candidates) < samples:
        raise _too_few(task, f"the source's {len(candidates)} candidates", len(candidates), samples)
    members: dict[str, list[int]] = {}
    for i, scene in enumerate(scenes):
        members.setdefault(scene, []).append(i)
    quota = {s: min(SCENE_MIN, len(m)) for s, m in members.items()}
    if sum(quota.values()) > samples:
        raise SelectionError(
            f"task {task}: {len(members)} scene categories need {sum(quota.values())} images at {SCENE_MIN} each, "
            f"tasks.{task}.samples asks for {samples}"
        )
    while sum(quota.values()) < samples:
        grown = False
        for s, m in members.items():
            if sum(quota.values()) < samples and quota[s] < min(SCENE_MAX, len(m)):
                quota[s] += 1
                grown = True
        if not grown:
            raise SelectionError(
                f"task {task}: at most {SCENE_MAX} images per scene over {len(members)} categories give "
                f"{sum(quota.values())} samples, tasks.{task}.samples asks for {samples}"
            )
    chosen = set()
    for s, m in members.items():
        k = quota[s]
        chosen.update(m[math.floor((j + 0.5) * len(m) / k)] for j in range(k))
    kept = [i in chosen for i in range(len(candidates))]
    selection = _pick(candidates, kept, ["" if k else "scene quota" for k in kept])
    selection.notes["images_per_scene"] = dict(quota)
    below = {s: q for s, q in quota.items() if q < SCENE_MIN}
    if below:  # reported, not refused: such a scene gives all it has
        selection.notes["scenes_below_minimum"] = below
    return selection


def select(
    task: str,
    candidates: pd.DataFrame,
    samples: int,
    policy: str,
    id_list: str | Path | None = None,
    correct: Sequence[bool] | None = None,
    source: Mapping | None = None,
) -> Selection:
    """Apply `policy` (or the explicit `id_list`) to the candidates; `correct` for the model policies."""
    if id_list:
        selection = select_list(task, candidates, read_id_list(id_list), str(id_list))
        if len(selection.manifest) != samples:
            raise SelectionError(
                f"task {task}: {id_list} lists {len(selection.manifest)} samples, tasks.{task}.samples is {samples}"
            )
        return selection
    if policy == "first":
        return select_first(task, candidates, samples)
    if policy in MODEL_POLICIES:
        if correct is None:
            raise ValueError(f"policy {policy} needs the uncompressed model's correctness per candidate")
        return select_correct(task, candidates, correct, samples, policy)
    if policy == "class_coverage":
        return select_class_coverage(task, candidates, samples)
    if policy == "scene_quota":
        root = (source or {}).get("root")
        return select_scene_quota(task, candidates, samples, [scene_of(s, root) for s in candidates["source"]])
    raise SelectionError(f"tasks.{task}.selection.policy {policy!r} is unknown; expected one of {', '.join(POLICIES)}")


def select_files(
    task: str, candidates: pd.DataFrame, samples: int, stems: Sequence[str], folder: str, suffix: str = ".npy"
) -> Selection:
    """The candidates whose feature file (`stems`: each candidate's file stem, then `suffix`) exists in
    `folder`."""
    have = {p.stem for p in Path(folder).glob(f"*{suffix}")}
    if not have:
        raise SelectionError(
            f"task {task}: feature folder {folder} holds no {suffix} files (tasks.{task}.features_from)"
        )
    kept = _first([stem in have for stem in stems], samples)
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
    return _pick(candidates, kept, reasons)


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
) -> Selection:
    """The selection of one task from its candidates and its configuration block (`settings`: samples,
    selection, features_from, source)."""
    samples, policy = int(settings["samples"]), settings["selection"]["policy"]
    id_list = settings["selection"].get("list")
    folder = settings.get("features_from")
    mode = selection_mode(settings["selection"], folder)
    if mode == "files":
        from lamofc_lib.tasks import get_task

        if any(Path(folder).glob("*.zst")):  # LaMoFCBench's files are named by the sample id
            return select_files(task_name, candidates, samples, list(candidates["sample_id"]), folder, ".zst")
        task = get_task(task_name)
        stems = [task.reference_stem(s) for s in candidates["sample_id"]]
        return select_files(task_name, candidates, samples, stems, folder)
    correct = None
    if needs_model(mode):
        from lamofc_lib.tasks import get_task

        task = get_task(task_name, device=device, threads=threads)
        correct = uncompressed_correct(task, candidates, model or {}, split, head)
    return select(task_name, candidates, samples, policy, id_list, correct, settings.get("source"))
