"""Tables over all operating points (CSV and Markdown): rate-accuracy with accuracy drops and sample selection,
distortion-accuracy fits (R^2, slope, intercept), generalizability (long and in Table 6's layout), BD-rate against
an anchor codec, complexity and feature statistics. The figures are in lamofc_lib.figures."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.io import atomic_path, read_json

COLUMNS = [
    "task", "codec", "point", "bpfp", "ebpfp", "entropy", "bpfp_injected", "mse", "quant_mse", "metric", "value",
    "higher_is_better",
]  # fmt: skip
# entropy: the zero-order entropy of the quantizer's symbols (bits per feature point), a memoryless coder's rate
# floor beside the codec's BPFP; bit_share: the tensor's share of the point's bits
TENSOR_COLUMNS = ["task", "codec", "point", "tensor", "dtype", "bpfp", "entropy", "bit_share", "mse", "quant_mse"]
REFERENCE_NOTES = {
    "ground_truth": "scored against the data set's labels",
    "uncompressed": "scored against the uncompressed model's own predictions, not ground truth",
}


def read_scores(paths: Iterable[str | Path], coded_alone: bool = False) -> list[dict]:
    """The score records in score files: the uncompressed features' (one record per file) and each task and
    codec's (a list of one record per operating point and variant). `coded_alone`: instead, the records of one
    tensor group coded alone (`coded`; scoring.Scorer.score_groups)."""
    records = []
    for path in paths:
        data = read_json(path)
        records.extend(r for r in (data if isinstance(data, list) else [data]) if ("coded" in r) == coded_alone)
    return records


TENSOR_ACCURACY_COLUMNS = [
    "task", "codec", "point", "coded", "coded_tensors", "bpfp_coded", "mse_coded", "metric", "value", "value_all",
    "value_uncompressed", "higher_is_better",
]  # fmt: skip


def tensor_accuracy_table(groups: Iterable[Mapping], table: pd.DataFrame) -> pd.DataFrame:
    """Which tensor carries the accuracy: one row per task (or variant's result), codec, point and tensor group
    coded alone (the others uncompressed), with the point's metric with every tensor coded (`value_all`, from the
    rate-accuracy table) and the uncompressed metric beside it."""
    rows = pd.DataFrame(
        [{**{k: g.get(k) for k in TENSOR_ACCURACY_COLUMNS}, "coded_tensors": " ".join(g["coded_tensors"])}
         for g in groups], columns=TENSOR_ACCURACY_COLUMNS,
    )  # fmt: skip
    if rows.empty:
        return rows
    rows["point"] = rows["point"].astype(str)
    values = table.set_index(["task", "codec", "point"])["value"]
    rows["value_all"] = [values.get((r.task, r.codec, r.point), math.nan) for r in rows.itertuples()]
    rows["value_uncompressed"] = [values.get((r.task, "original", "original"), math.nan) for r in rows.itertuples()]
    return rows.sort_values(["task", "codec", "point", "coded"], kind="stable").reset_index(drop=True)


def rate_accuracy_table(scores: Iterable[Mapping], summaries: Iterable[Mapping] = ()) -> pd.DataFrame:
    """One row per task x codec x point from the scores records, originals first, points in rate order, with the
    accuracy drop against the task's uncompressed metric (see `accuracy_drops`) and, from the selection
    summaries, the task's samples kept and candidates."""
    # scores written before bpfp_injected existed put every tensor back: their bpfp; before entropy: unknown
    defaults = {"bpfp_injected": lambda s: s["bpfp"], "entropy": lambda s: math.nan}
    table = pd.DataFrame(
        [{k: s[k] if k in s or k not in defaults else defaults[k](s) for k in COLUMNS} for s in scores],
        columns=COLUMNS,
    )
    if table.empty:
        raise ValueError("no scores to tabulate")
    table["point"] = table["point"].astype(str)
    table["accuracy_drop"] = accuracy_drops(table)
    counts = {s["task"]: (s["kept"], s["candidates"]) for s in summaries}
    if counts:  # a variant's result (task:variant) has its task's samples
        table["samples"] = [counts[t.split(":")[0]][0] for t in table["task"]]
        table["candidates"] = [counts[t.split(":")[0]][1] for t in table["task"]]
    table["_original"] = table["codec"] != "original"
    table = table.sort_values(["task", "_original", "codec", "bpfp"], kind="stable").drop(columns="_original")
    return table.reset_index(drop=True)


def tensor_table(scores: Iterable[Mapping]) -> pd.DataFrame:
    """One row per task x codec x point x named tensor of the coded points: the tensor's original dtype, its
    BPFP (its own bits over its own points), the zero-order entropy of its quantized symbols, total MSE and
    quantization MSE, each the mean over samples (as LaMoFCBench reports its per-tensor numbers), and its share
    of the point's bits (all samples')."""
    rows = [  # a task's variants share its point's tensors: one row each, under the task
        {"task": s["task"].split(":")[0], "codec": s["codec"], "point": str(s["point"]), "tensor": name, **values}
        for s in scores
        for name, values in s.get("tensors", {}).items()
    ]
    table = pd.DataFrame(rows, columns=TENSOR_COLUMNS).drop_duplicates(["task", "codec", "point", "tensor"])
    return table.sort_values(["task", "codec", "point", "tensor"], kind="stable").reset_index(drop=True)


def accuracy_drops(table: pd.DataFrame) -> list[float]:
    """AD (%) of every row against its task's uncompressed row (metrics.accuracy_drop: 1/metric for
    lower-is-better metrics); 0 for the uncompressed rows; NaN where the uncompressed metric is 0 (tti's FID
    against its own uncompressed images), where AD is undefined."""
    originals = table[table["codec"] == "original"].set_index("task")["value"].to_dict()
    drops = []
    for row in table.itertuples():
        original = originals.get(row.task)
        if original is None:
            raise ValueError(f"no uncompressed score of task '{row.task}' to measure the accuracy drop against")
        drops.append(0.0 if row.codec == "original" else _drop(row.value, original, bool(row.higher_is_better)))
    return drops


def _drop(value: float, original: float, higher_is_better: bool) -> float:
    """metrics.accuracy_drop, NaN where the uncompressed metric is 0 (AD is a percentage of it)."""
    from lamofc_lib.metrics import accuracy_drop

    return accuracy_drop(value, original, higher_is_better) if float(original) > 0 else float("nan")


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
        base = task.split(":")[0]  # a variant's result has its task's selection
        if references and task in references:
            lines += [f"Metric {rows['metric'].iloc[0]}, {REFERENCE_NOTES[references[task]]}.", ""]
        if selections and base in selections:
            lines += [selection_note(selections[base], (references or {}).get(task)), ""]
        injected = "bpfp_injected" in rows and bool((rows["bpfp_injected"] != rows["bpfp"]).any())
        if injected:
            lines += ["bpfp covers every coded tensor (as LaMoFCBench reports it), bpfp injected those put back.", ""]
        lines += [
            f"| codec | point | bpfp |{' bpfp injected |' if injected else ''} ebpfp | entropy | mse | quant mse "
            "| metric | value | AD (%) |",
            f"|---|---|---:|{'---:|' if injected else ''}---:|---:|---:|---:|---|---:|---:|",
        ]
        for r in rows.itertuples():
            drop = "" if math.isnan(r.accuracy_drop) else f"{r.accuracy_drop:.3g}"
            extra = f" {r.bpfp_injected:.6g} |" if injected else ""
            entropy = "" if math.isnan(r.entropy) else f"{r.entropy:.4g}"
            lines.append(
                f"| {r.codec} | {r.point} | {r.bpfp:.6g} |{extra} {r.ebpfp:.6g} | {entropy} | {r.mse:.6g} | "
                f"{r.quant_mse:.6g} | {r.metric} | {r.value:.4g} | {drop} |"
            )
        lines.append("")
    return "\n".join(lines)


GENERALIZABILITY_COLUMNS = [
    "codec", "trained_on", "applied_to", "point", "bpfp", "mse", "metric", "value", "original_value", "accuracy_drop",
]  # fmt: skip


def generalizability_table(scores: Iterable[Mapping], pairs: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """Models trained on one task's features applied to another's (paper Table 6), beside the applied_to task's
    own models, each point with its accuracy drop against the uncompressed metric of the applied_to task.

    `scores` holds the score records of the uncompressed features ('original'), of the native runs of trained
    codecs (e.g. codec 'hyperprior') and of the cross-task runs (codec 'hyperprior@<trained_on>').
    """
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
        drop = _drop(s["value"], original["value"], bool(s.get("higher_is_better", True)))
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


def generalizability_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """The generalizability table in paper Table 6's layout: one row per (codec and) trained_on task, one column
    per applied_to task, each cell the mean accuracy drop (%) over the points of the models trained on the row's
    task applied to the column's features (the diagonal: the column task's own models), or the mean metric where
    the drop is undefined (tti's FID)."""
    keys = ["codec", "trained_on"]
    cells = {}
    for (*row, target), group in table.groupby([*keys, "applied_to"], sort=True):
        drops = group["accuracy_drop"].to_numpy(dtype=float)
        cells[(tuple(row), target)] = float(drops.mean()) if np.isfinite(drops).all() else float(group["value"].mean())
    rows = sorted({r for r, _ in cells})
    columns = sorted({t for _, t in cells})
    matrix = pd.DataFrame(
        [[*r, *(cells.get((r, c), float("nan")) for c in columns)] for r in rows], columns=[*keys, *columns]
    )
    return matrix


def generalizability_markdown(matrix: pd.DataFrame, table: pd.DataFrame) -> str:
    metrics = table.groupby("applied_to")["metric"].first().to_dict()
    undefined = sorted(t for t, g in table.groupby("applied_to") if not np.isfinite(g["accuracy_drop"]).all())
    note = (
        f"; columns {', '.join(undefined)}: the mean metric ({', '.join(metrics[t] for t in undefined)})"
        if undefined
        else ""
    )
    lines = ["# Generalizability", "", "Rows: the codec and the task its model was trained on; columns: the task whose "
             "features it coded (the diagonal: that task's own models). Each cell is the mean accuracy drop (%) "
             f"over the trained_on task's lambdas{note}.", ""]  # fmt: skip
    return "\n".join(lines + markdown_table(matrix) + [""])


def da_r2(table: pd.DataFrame) -> pd.DataFrame:
    """The least-squares line value = intercept + slope * mse over each task x codec's coded points, and its R^2.

    The uncompressed rows (codec 'original') are not operating points and are left out. With fewer than two
    points, or when the metric or the MSE does not vary, R^2 is undefined and reported as NaN.
    """
    rows = []
    coded = table[table["codec"] != "original"]
    for (task, codec), group in coded.groupby(["task", "codec"], sort=True):
        x = group["mse"].to_numpy(dtype=float)
        y = group["value"].to_numpy(dtype=float)
        r2 = slope = intercept = float("nan")
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        if len(x) >= 2 and np.ptp(x) > 0 and ss_tot > 0:
            slope, intercept = (float(v) for v in np.polyfit(x, y, 1))
            ss_res = float(np.sum((y - (intercept + slope * x)) ** 2))
            r2 = 1.0 - ss_res / ss_tot
        rows.append({"task": task, "codec": codec, "points": len(x), "r2": r2, "slope": slope, "intercept": intercept})
    return pd.DataFrame(rows, columns=["task", "codec", "points", "r2", "slope", "intercept"])


def da_markdown(table: pd.DataFrame) -> str:
    lines = [
        "# Distortion-accuracy",
        "",
        "Least-squares line metric = intercept + slope x feature MSE over each task "
        "and codec's coded points (the uncompressed point is not one of them), and its R^2.",
        "",
    ]
    return "\n".join(lines + markdown_table(table) + [""])


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def markdown_table(table: pd.DataFrame, digits: int = 4) -> list[str]:
    """A DataFrame as Markdown table lines: numbers to `digits` significant digits, NaN as an empty cell, a `|`
    inside a text cell escaped (the BD notes join their reasons with one)."""

    def cell(value) -> str:
        if isinstance(value, float | np.floating):
            return "" if not np.isfinite(value) else f"{value:.{digits}g}"
        return str(value).replace("|", "\\|")

    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]
    lines = ["| " + " | ".join(map(str, table.columns)) + " |"]
    lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return lines


def write_markdown(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# --------------------------------------------------------------------------------------------------------------------
# BD-rate: the bjontegaard package (Herglotz et al., FAU), BPFP as the rate and the task metric as the quality


BD_COLUMNS = ["task", "codec", "anchor", "metric", "bd_rate", "bd_metric", "points", "anchor_points", "method", "note"]


def _curve(
    rows: pd.DataFrame, points: str, strict: bool, least: int = 2
) -> tuple[np.ndarray, np.ndarray, str, list[str]]:
    """(rate, quality) of one codec's points sorted by rate, quality = the metric, negated when lower is
    better; why the curve cannot take part ('' if it can); and the points dropped from it.

    `points` pareto keeps the rate-quality front: a point is dropped when a point of lower or equal rate has a
    better quality, or, `strict` (BD-rate, whose rate is a function of the metric), an equal one too; all keeps
    every point. A curve needs `least` points (two; four for the cubic fit, a polynomial of degree 3), rates
    that rise strictly and, `strict`, qualities that rise strictly (BD-metric's metric is a function of the
    rate, so ties and dips do not stop it)."""
    rows = rows.assign(_q=rows["value"] if bool(rows["higher_is_better"].iloc[0]) else -rows["value"])
    rows = rows.sort_values(["bpfp", "_q"], ascending=[True, False])
    dropped: list[str] = []
    if points == "pareto":
        best, last_rate = -np.inf, None
        keep = []
        for rate, q in zip(rows["bpfp"].to_numpy(float), rows["_q"].to_numpy(float), strict=True):
            keep.append(q > best or (not strict and q == best and rate != last_rate))
            if keep[-1]:
                last_rate = rate
            best = max(best, q)
        dropped = [f"{rows['codec'].iloc[0]} {p}" for p in rows["point"][~np.array(keep)]]
        rows = rows[np.array(keep)]
    elif points != "all":
        raise ValueError(f"BD points {points!r}: choose pareto or all (report.bd_points)")
    rate, quality = rows["bpfp"].to_numpy(float), rows["_q"].to_numpy(float)
    if len(rows) < least:
        return rate, quality, f"fewer than {least} points" + (" (cubic)" if least > 2 else ""), dropped
    if not np.all(np.diff(rate) > 0):
        return rate, quality, "two points at the same rate", dropped
    if strict and not np.all(np.diff(quality) > 0):
        return rate, quality, "the metric does not improve strictly with the rate", dropped
    return rate, quality, "", dropped


def _bd(function, a_rate, a_quality, rate, quality, method) -> tuple[float, str]:
    """One bjontegaard number and the warning it gave ('' if none): no overlap gives NaN and says so."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(function(a_rate, a_quality, rate, quality, method, False, min_overlap=0))
    return value, " ".join(str(w.message) for w in caught)


def bd_table(table: pd.DataFrame, anchor: str, method: str = "pchip", points: str = "pareto") -> pd.DataFrame:
    """BD-rate (%) and BD-metric of every codec against `anchor` per task, from the rate-accuracy table.

    BD-rate: the mean difference of log10 BPFP over the overlapping metric range, as a percentage (negative:
    fewer bits for the same metric). BD-metric: the mean metric difference over the overlapping log10 BPFP range
    (positive: better for a higher-is-better metric; for RMSE and FID the difference of the metric itself, so
    negative is better). Curves interpolated with `method` (bjontegaard: 'pchip', 'akima' or 'cubic'). Each
    number has its own curve (see _curve): BD-rate needs a metric that improves strictly with the rate, BD-metric
    only rates that rise, so a tie between two points (common with few samples) leaves BD-metric defined. A
    number that cannot be computed (too few points, no overlap) is NaN with the reason in `note`, which also
    names the points dropped from each curve. `points`/`anchor_points`: the points of the BD-rate curves."""
    import bjontegaard

    coded = table[table["codec"] != "original"]
    least = 4 if method == "cubic" else 2
    rows = []
    for task, group in coded.groupby("task", sort=True):
        metric, higher = str(group["metric"].iloc[0]), bool(group["higher_is_better"].iloc[0])
        if anchor not in set(group["codec"]):  # a codec may code some tasks only (codecs.<codec>.tasks)
            why = f"the anchor {anchor} does not code {task}"
            rows += [{"task": task, "codec": codec, "anchor": anchor, "metric": metric, "bd_rate": float("nan"),
                      "bd_metric": float("nan"), "points": int((group["codec"] == codec).sum()), "anchor_points": 0,
                      "method": method, "note": f"BD-rate: {why} | BD-metric: {why}"}
                     for codec in sorted(set(group["codec"]))]  # fmt: skip
            continue
        anchor_rows = group[group["codec"] == anchor]
        for codec, rows_of in group.groupby("codec", sort=True):
            if codec == anchor:
                continue
            values, notes, counts = {}, [], {}
            for name, function, strict in (("BD-rate", bjontegaard.bd_rate, True),
                                           ("BD-metric", bjontegaard.bd_psnr, False)):  # fmt: skip
                a_rate, a_quality, a_note, a_dropped = _curve(anchor_rows, points, strict, least)
                rate, quality, note, dropped = _curve(rows_of, points, strict, least)
                counts[name] = (len(rate), len(a_rate))
                note = note or (a_note and f"anchor: {a_note}")
                value = float("nan")
                if not note:
                    value, note = _bd(function, a_rate, a_quality, rate, quality, method)
                values[name] = value
                if dropped or a_dropped:
                    note = "; ".join(n for n in [note, "off the front: " + ", ".join(dropped + a_dropped)] if n)
                if note:
                    notes.append(f"{name}: {note}")
            bd_metric = values["BD-metric"] if higher else -values["BD-metric"]
            rows.append({"task": task, "codec": codec, "anchor": anchor, "metric": metric,
                         "bd_rate": values["BD-rate"], "bd_metric": bd_metric, "points": counts["BD-rate"][0],
                         "anchor_points": counts["BD-rate"][1], "method": method,
                         "note": " | ".join(notes)})  # fmt: skip
    return pd.DataFrame(rows, columns=BD_COLUMNS)


def bd_markdown(table: pd.DataFrame, method: str) -> str:
    lines = [
        "# BD-rate",
        "",
        f"Each codec against the anchor per task: BPFP as the rate, the task metric as the "
        f"quality, curves interpolated with {method} (the `bjontegaard` package); BD-rate in percent of the "
        "anchor's BPFP at equal metric (negative: fewer bits), BD-metric in the metric's unit at equal BPFP.",
        "",
    ]
    return "\n".join(lines + markdown_table(table) + [""])


# --------------------------------------------------------------------------------------------------------------------
# Complexity: the code jobs' per-sample encoding and decoding times (sidecars)

COMPLEXITY_COLUMNS = [
    "task", "codec", "points", "samples", "frame_mpixels", "encode_s_per_sample", "decode_s_per_sample",
    "encode_s_per_mpixel", "decode_s_per_mpixel",
]  # fmt: skip


def complexity_table(bitstream_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """Mean encoding and decoding seconds per sample, and per million frame samples (all of a sample's frames),
    per task and codec over its points, as the code jobs recorded them in the sidecars. Each folder is
    `.../{task}/{codec}/{point}/bitstreams/{shard}`."""
    from lamofc_lib.bitstreams import read_sidecars

    by_point: dict[tuple, list[Path]] = {}
    for folder in map(Path, bitstream_dirs):
        by_point.setdefault(tuple(folder.parts[-5:-2]), []).append(folder)  # task, codec, point
    samples = {}
    for key, record in ((k, r) for k, dirs in by_point.items() for _, r in read_sidecars(dirs)):
        pixels = sum(int(np.prod(t.frame_shape)) for t in record.tensors)
        samples[(*key, record.sample_index)] = {
            "encode": record.encode_seconds,
            "decode": record.decode_seconds,
            "mpixels": pixels / 1e6,
        }
    frame = pd.DataFrame([{"task": k[0], "codec": k[1], "point": k[2], **v} for k, v in samples.items()])
    if frame.empty:
        raise ValueError("no coded samples to time")
    missing = frame[frame["decode"].isna()]
    if len(missing):
        first = missing.iloc[0]
        raise ValueError(
            f"no decode time of {len(missing)} samples, e.g. {first.task}/{first.codec}/{first.point} (sidecars of "
            "an older LaMoFC: rerun its code jobs)"
        )
    rows = []
    for (task, codec), group in frame.groupby(["task", "codec"], sort=True):
        mpixels = group["mpixels"].sum()
        rows.append({
            "task": task, "codec": codec, "points": group["point"].nunique(), "samples": len(group),
            "frame_mpixels": float(group["mpixels"].mean()),
            "encode_s_per_sample": float(group["encode"].mean()), "decode_s_per_sample": float(group["decode"].mean()),
            "encode_s_per_mpixel": float(group["encode"].sum() / mpixels),
            "decode_s_per_mpixel": float(group["decode"].sum() / mpixels),
        })  # fmt: skip
    return pd.DataFrame(rows, columns=COMPLEXITY_COLUMNS)


def complexity_markdown(table: pd.DataFrame) -> str:
    lines = [
        "# Complexity",
        "",
        "Mean seconds per sample and per million frame samples (all frames of a sample), "
        "over each codec's points, as the code jobs timed each sample's encoder and decoder runs (recorded in "
        "the sidecars), on the machine that ran them.",
        "",
    ]
    return "\n".join(lines + markdown_table(table) + [""])


def feature_statistics_markdown(table: pd.DataFrame) -> str:
    lines = ["# Feature statistics", "", "Per task, tensor and layer: observed range, mean, standard deviation, "
             "percentiles (of an evenly strided subsample of at most 1,000,000 values) and the share of values "
             "outside each truncation profile's range (clipped_<profile>).", ""]  # fmt: skip
    columns = [c for c in table.columns if not c.startswith(("lo_", "hi_"))]
    return "\n".join(lines + markdown_table(table[columns]) + [""])
