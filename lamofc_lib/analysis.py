"""Tables and figures over all operating points: the tidy rate-accuracy table, the distortion-accuracy R^2
table and the rate-accuracy plots."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.io import atomic_path

COLUMNS = ["task", "codec", "point", "bpfp", "mse", "metric", "value"]
METRIC_LABELS = {"top1": "top-1 accuracy (%)", "accuracy": "accuracy (%)"}
REFERENCE_NOTES = {
    "ground_truth": "scored against the data set's labels",
    "uncompressed": "scored against the uncompressed model's own predictions, not ground truth",
}


def rate_accuracy_table(scores: Iterable[Mapping]) -> pd.DataFrame:
    """One row per task x codec x point from the scores records, originals first, points in rate order."""
    table = pd.DataFrame([{k: s[k] for k in COLUMNS} for s in scores], columns=COLUMNS)
    if table.empty:
        raise ValueError("no scores to tabulate")
    table["point"] = table["point"].astype(str)
    table["_original"] = table["codec"] != "original"
    table = table.sort_values(["task", "_original", "codec", "bpfp"], kind="stable").drop(columns="_original")
    return table.reset_index(drop=True)


SELECTION_COLUMNS = ["task", "policy", "candidates", "kept", "skipped", "skipped_by_reason", "notes"]


def selection_table(summaries: Iterable[Mapping]) -> pd.DataFrame:
    """One row per task: its selection policy, candidates tried, samples kept and skipped (with reasons)."""
    rows = []
    for s in summaries:
        reasons = "; ".join(f"{k}: {v}" for k, v in sorted(s["skipped_by_reason"].items()))
        rows.append({**{k: s[k] for k in SELECTION_COLUMNS[:-2]}, "skipped_by_reason": reasons, "notes": _notes(s)})
    return pd.DataFrame(rows, columns=SELECTION_COLUMNS).sort_values("task", kind="stable").reset_index(drop=True)


def _notes(summary: Mapping) -> str:
    below = summary.get("scenes_below_minimum")
    if not below:
        return ""
    return "scenes with fewer than 3 images (all they have): " + ", ".join(f"{k} {v}" for k, v in sorted(below.items()))


def selection_note(summary: Mapping, reference: str | None) -> str:
    """One sentence on how a task's samples were selected, for the Markdown tables."""
    text = f"Samples: {summary['kept']} kept of {summary['candidates']} candidates (selection {summary['policy']}"
    if summary["skipped"]:
        reasons = ", ".join(f"{v} {k}" for k, v in sorted(summary["skipped_by_reason"].items()))
        text += f"; skipped: {reasons}"
    text += ")."
    if _notes(summary):
        text += f" Note: {_notes(summary)}."
    if summary["keeps_only_correct"] and reference == "ground_truth":
        text += " Only samples the uncompressed model gets right are kept, so its value is 100 % by construction."
    return text


def rate_accuracy_markdown(
    table: pd.DataFrame, references: Mapping[str, str] | None = None, selections: Mapping[str, Mapping] | None = None
) -> str:
    """The table in Markdown, one section per task, with the reference each metric was scored against and how
    the task's samples were selected."""
    lines = ["# Rate-accuracy", ""]
    for task, rows in table.groupby("task", sort=True):
        lines += [f"## {task}", ""]
        if references and task in references:
            lines += [f"Metric {rows['metric'].iloc[0]}, {REFERENCE_NOTES[references[task]]}.", ""]
        if selections and task in selections:
            lines += [selection_note(selections[task], (references or {}).get(task)), ""]
        lines += ["| codec | point | bpfp | mse | metric | value |", "|---|---|---:|---:|---|---:|"]
        for r in rows.itertuples():
            lines.append(f"| {r.codec} | {r.point} | {r.bpfp:.6g} | {r.mse:.6g} | {r.metric} | {r.value:.4g} |")
        lines.append("")
    return "\n".join(lines)


GENERALIZABILITY_COLUMNS = [
    "codec", "trained_on", "applied_to", "point", "bpfp", "mse", "metric", "value", "original_value", "accuracy_drop",
]  # fmt: skip


def generalizability_table(scores: Iterable[Mapping], pairs: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """Models trained on one task's features applied to another's (paper Table 6), beside the applied_to task's
    own models, each point with its accuracy drop against the uncompressed metric of the applied_to task.

    `scores` holds the score records of the uncompressed features ('original'), of the native runs (codec
    'hyperprior') and of the cross-task runs (codec 'hyperprior@<trained_on>').
    """
    from lamofc_lib.metrics import accuracy_drop

    scores = list(scores)
    originals = {s["task"]: s for s in scores if s["codec"] == "original"}
    pairs = list(pairs)
    rows = []
    for s in scores:
        if s["codec"] == "original":
            continue
        codec, _, source = str(s["codec"]).partition("@")
        source = source or s["task"]
        if source == s["task"] and not any(dst == s["task"] for _, dst in pairs):
            continue
        original = originals.get(s["task"])
        if original is None:
            raise ValueError(f"no uncompressed score of task '{s['task']}' to compare {s['codec']} with")
        if float(original["value"]) > 0:
            drop = accuracy_drop(s["value"], original["value"], bool(s.get("higher_is_better", True)))
        else:  # AD is a percentage of the uncompressed metric: undefined when it is 0 (tti's FID)
            drop = float("nan")
        rows.append({
            "codec": codec, "trained_on": source, "applied_to": s["task"], "point": str(s["point"]),
            "bpfp": s["bpfp"], "mse": s["mse"], "metric": s["metric"], "value": s["value"],
            "original_value": original["value"], "accuracy_drop": drop,
        })  # fmt: skip
    missing = [p for p in pairs if not any((r["trained_on"], r["applied_to"]) == p for r in rows)]
    if missing:
        raise ValueError(f"no scores for the generalizability pairs (trained_on, applied_to) {missing}")
    table = pd.DataFrame(rows, columns=GENERALIZABILITY_COLUMNS)
    table["_native"] = table["trained_on"] != table["applied_to"]
    table = table.sort_values(["applied_to", "_native", "trained_on", "bpfp"], kind="stable").drop(columns="_native")
    return table.reset_index(drop=True)


def da_r2(table: pd.DataFrame) -> pd.DataFrame:
    """R^2 of the least-squares line value = a + b * mse over each task x codec's coded points.

    The uncompressed rows (codec 'original') are not operating points and are left out. With fewer than two
    points, or when the metric or the MSE does not vary, R^2 is undefined and reported as NaN.
    """
    rows = []
    coded = table[table["codec"] != "original"]
    for (task, codec), group in coded.groupby(["task", "codec"], sort=True):
        x = group["mse"].to_numpy(dtype=float)
        y = group["value"].to_numpy(dtype=float)
        r2 = float("nan")
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        if len(x) >= 2 and np.ptp(x) > 0 and ss_tot > 0:
            slope, intercept = np.polyfit(x, y, 1)
            ss_res = float(np.sum((y - (intercept + slope * x)) ** 2))
            r2 = 1.0 - ss_res / ss_tot
        rows.append({"task": task, "codec": codec, "r2": r2})
    return pd.DataFrame(rows, columns=["task", "codec", "r2"])


def plot_rate_accuracy(table: pd.DataFrame, task: str, path: str | Path) -> None:
    """Metric against BPFP (log scale) for every codec of `task`; the uncompressed metric as a dashed line."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = table[table["task"] == task]
    if rows.empty:
        raise ValueError(f"the table has no rows for task '{task}'")
    coded = rows[rows["codec"] != "original"]
    original = rows[rows["codec"] == "original"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    sns.lineplot(data=coded, x="bpfp", y="value", hue="codec", marker="o", ax=ax, sort=True)
    if not original.empty:
        ax.axhline(float(original["value"].iloc[0]), color="gray", linestyle="--", label="uncompressed")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("bits per feature point (BPFP)")
    ax.set_ylabel(METRIC_LABELS.get(str(rows["metric"].iloc[0]), str(rows["metric"].iloc[0])))
    ax.set_title(f"{task}: rate-accuracy")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def plot_loss(loss_log: str | Path, png: str | Path, title: str) -> None:
    """The training curve: loss, and its rate and distortion terms, against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.read_csv(loss_log)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    labels = ("loss", "estimated BPFP", "MSE (normalized)")
    splits = table.groupby("split") if "split" in table else [("train", table)]
    for ax, column, label in zip(axes, ("loss", "bpfp", "mse"), labels, strict=True):
        for split, part in splits:
            ax.plot(part["step"], part[column], label=split)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        if column == "mse":
            ax.set_yscale("log")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
