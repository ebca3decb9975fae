"""The benchmark's figures, in one style (seaborn whitegrid; units on every axis): rate-accuracy per task,
rate-accuracy-drop of all tasks (paper Fig. 5), feature distributions with CDFs (Fig. 2), a feature block beside
its DCT magnitude (Fig. 3), the metric against feature MSE with the fitted line (the D-A analysis) and the
training curves of learned codecs."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.io import atomic_path

BPFP_LABEL = "bits per feature point (BPFP)"


def _metric_label(rows: pd.DataFrame, label: str | None) -> str:
    """The metric's axis label: the task's (Task.metric_label, which the rule passes), else the metric's name."""
    return label or str(rows["metric"].iloc[0])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def _log_rate_axis(ax) -> None:
    """BPFP on a log axis with plain-number ticks (0.1, 1, not 10^0); ticks at 1, 2 and 5 of each decade when
    the data span two decades or less, so that a narrow range still gets several labels."""
    import matplotlib.ticker

    ax.set_xscale("log")
    low, high = ax.dataLim.intervalx
    narrow = high > 0 and low > 0 and high / low <= 100
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(BPFP_LABEL)


def _save(fig, path: str | Path, dpi: int = 120, rect: tuple[float, float, float, float] | None = None) -> None:
    """Lay the figure out (within `rect` of it, leaving room for a figure legend or title) and write it
    atomically as PNG."""
    fig.tight_layout(rect=rect)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _legend_outside(ax) -> None:
    """The legend right of the axes, so it never hides a point."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


def _task_rows(table: pd.DataFrame, task: str) -> pd.DataFrame:
    """The rows of a task and of its variants' results (`task:variant`), each with its curve's name: the codec,
    or `codec variant`."""
    rows = table[table["task"].str.split(":").str[0] == task]
    if rows.empty:
        return rows.assign(curve=[])
    variant = rows["task"].str.partition(":")[2]
    return rows.assign(curve=np.where(variant == "", rows["codec"], rows["codec"] + " " + variant))


def plot_rate_accuracy(table: pd.DataFrame, task: str, path: str | Path, label: str | None = None) -> None:
    """Metric against BPFP and against EBPFP (log scale, side by side) for every codec of `task` (and each of its
    variants); the uncompressed metric as a dashed line. The two differ where a tensor's original dtype is not
    32-bit."""
    plt, sns = _pyplot()
    rows = _task_rows(table, task)
    if rows.empty:
        raise ValueError(f"the table has no rows for task '{task}'")
    original = rows[rows["codec"] == "original"]
    coded = rows[rows["codec"] != "original"].pipe(lambda r: r.assign(codec=r["curve"]))  # legend: codec (variant)
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4), sharey=True)
    for ax, rate in zip(axes, ("bpfp", "ebpfp"), strict=True):
        sns.lineplot(data=coded, x=rate, y="value", hue="codec", marker="o", ax=ax, sort=True, legend=rate == "ebpfp")
        for line in original.itertuples():
            name = "uncompressed" + (f" {line.curve.partition(' ')[2]}" if ":" in line.task else "")
            ax.axhline(float(line.value), color="gray", linestyle="--", label=name)
        _log_rate_axis(ax)
    axes[1].set_xlabel("equivalent bits per feature point (EBPFP, 32-bit based)")
    axes[0].set_ylabel(_metric_label(rows, label))
    fig.suptitle(f"{task}: rate-accuracy")
    _legend_outside(axes[1])
    _save(fig, path)


def plot_rate_accuracy_drop(table: pd.DataFrame, path: str | Path, labels: Mapping[str, str] | None = None) -> None:
    """One panel per task: accuracy drop (%) against BPFP per codec; where AD is undefined (an uncompressed
    metric of 0, as tti's FID against its own uncompressed images) the panel shows the metric itself."""
    plt, sns = _pyplot()
    tasks = sorted(table["task"].unique())
    columns = min(3, len(tasks))
    rows = math.ceil(len(tasks) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns + 1.8, 3.4 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        coded = table[(table["task"] == task) & (table["codec"] != "original")]
        defined = coded["accuracy_drop"].notna().all()
        y = "accuracy_drop" if defined else "value"
        sns.lineplot(data=coded, x="bpfp", y=y, hue="codec", marker="o", ax=ax, sort=True, legend=ax is axes.flat[0])
        if defined:
            ax.axhline(0.0, color="gray", linestyle="--", linewidth=1)
        _log_rate_axis(ax)
        ax.set_ylabel("accuracy drop (%)" if defined else _metric_label(coded, (labels or {}).get(task.split(":")[0])))
        ax.set_title(task if defined else f"{task} (AD undefined: uncompressed {coded['metric'].iloc[0]} is 0)")
    for ax in list(axes.flat)[len(tasks) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if axes.flat[0].get_legend():
        axes.flat[0].get_legend().remove()
    fig.legend(handles, labels, loc="upper right", frameon=False)
    fig.suptitle("Rate-accuracy drop (AD: percentage drop from the uncompressed metric; 1/RMSE for dpt)")
    _save(fig, path, rect=(0, 0, 1 - 1.6 / (4.2 * columns + 1.8), 0.95))


def plot_distortion_accuracy(
    table: pd.DataFrame, fits: pd.DataFrame, task: str, path: str | Path, label: str | None = None
) -> None:
    """The task metric against feature MSE per codec, with each codec's least-squares line and its R^2."""
    plt, sns = _pyplot()
    rows = _task_rows(table, task)
    coded = rows[rows["codec"] != "original"]
    if coded.empty:
        raise ValueError(f"the table has no coded points of task '{task}'")
    fig, ax = plt.subplots(figsize=(7.5, 4))
    palette = dict(
        zip(sorted(coded["curve"].unique()), sns.color_palette(n_colors=coded["curve"].nunique()), strict=True)
    )
    for (curve, result, codec), group in coded.groupby(["curve", "task", "codec"], sort=True):
        ax.plot(group["mse"], group["value"], "o", color=palette[curve], label=curve)
        fit = fits[(fits["task"] == result) & (fits["codec"] == codec)]
        if not fit.empty and np.isfinite(fit["r2"].iloc[0]):
            x = np.linspace(group["mse"].min(), group["mse"].max(), 50)
            ax.plot(x, fit["intercept"].iloc[0] + fit["slope"].iloc[0] * x, "-", color=palette[curve],
                    label=f"{curve} fit, R² = {fit['r2'].iloc[0]:.3f}")  # fmt: skip
    ax.set_xlabel("feature MSE")
    ax.set_ylabel(_metric_label(coded, label))
    ax.set_title(f"{task}: distortion-accuracy")
    _legend_outside(ax)
    _save(fig, path)


def plot_bit_shares(tensors: pd.DataFrame, path: str | Path) -> None:
    """Which tensor carries the rate: for every task with several named tensors, each tensor's share of a coded
    point's bits (the tensor table's `bit_share`), stacked, one bar per codec and point (by codec, then rate)."""
    plt, _ = _pyplot()
    tasks = [t for t, rows in tensors.groupby("task", sort=True) if rows["tensor"].nunique() > 1]
    fig, axes = plt.subplots(max(len(tasks), 1), 1, figsize=(11, 3.6 * max(len(tasks), 1)), squeeze=False)
    if not tasks:
        axes[0, 0].text(0.5, 0.5, "no task codes more than one tensor", ha="center", va="center")
        axes[0, 0].set_axis_off()
    for ax, task in zip(axes[:, 0], tasks, strict=False):
        rows = tensors[tensors["task"] == task].assign(bar=lambda r: r["codec"] + " " + r["point"].astype(str))
        rates = rows.groupby(["codec", "bar"])["bpfp"].sum().reset_index()  # a rate order within a codec
        order = rates.sort_values(["codec", "bpfp"], kind="stable")["bar"]
        shares = rows.pivot_table(index="bar", columns="tensor", values="bit_share", sort=True).reindex(order)
        (100 * shares).plot.bar(stacked=True, ax=ax, width=0.8, colormap="tab20", legend=False)
        ax.set_ylabel("share of the bits (%)")
        ax.set_xlabel("codec and point")
        ax.set_ylim(0, 100)
        ax.set_title(f"{task}: each tensor's share of a point's bits")
        ax.tick_params(axis="x", labelrotation=30)
        _legend_outside(ax)
    _save(fig, path)


CDF_POINTS = 4096


def tensor_kind(tensor: str) -> str:
    """A tensor's kind: its name less a trailing `.<index>` (a cache's layer, a crop, a view), so `key.3` is a
    `key` and `layer.2.1` (block 2, crop 1) a `layer.2`; SD3.5's calls of one text encoder (`text_encoder-item0.x`,
    the prompt, and `-item3.x`, the negative prompt) are the kind `text_encoder.x`, its VAE encoder's two outputs
    (`vae.encoder_f0`, `_f1`) the kind `vae.encoder_f`; any other name is its own kind."""
    name = re.sub(r"-item\d+(?=\.)", "", tensor)
    head, _, tail = name.rpartition(".")
    if head and tail.isdigit():
        return head
    numbered = re.fullmatch(r"(.+_f)\d+", name)
    return numbered[1] if numbered else name


def _kinds(names: list[str]) -> dict[str, list[str]]:
    """The names by kind (tensor_kind), kinds and members in their first order."""
    kinds: dict[str, list[str]] = {}
    for name in names:
        kinds.setdefault(tensor_kind(name), []).append(name)
    return kinds


def plot_feature_distribution(stats: pd.DataFrame, values: Mapping[str, np.ndarray], task: str, path: str | Path):
    """Per kind of tensor (tensor_kind: a cache's layers, a segmentation's crops, a depth task's views drawn
    together, one line each) and layer: the histogram of the values (log counts) and their CDF, with the
    truncation ranges of the task's profiles as vertical lines. (One row per tensor drew a language scenario's
    11 rows in 15 s, most of it matplotlib's layout of 44 axes.)"""
    plt, _ = _pyplot()
    rows = stats[stats["task"] == task].reset_index(drop=True)
    groups: dict[tuple[str, str], list] = {}
    for row in rows.itertuples():
        groups.setdefault((tensor_kind(row.tensor), row.layer), []).append(row)
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 2.8 * len(groups)), squeeze=False)
    profiles = sorted(c.removeprefix("lo_") for c in rows.columns if c.startswith("lo_"))
    for (hist, cdf), ((kind, layer), members) in zip(axes, groups.items(), strict=True):
        label = f"{kind}, layer {layer}" if layer != "all" else kind
        shown = [] if len(members) == 1 else [str(m.tensor) for m in members]
        for k, row in enumerate(members):
            x = np.asarray(values[f"{row.tensor}/{row.layer}"], dtype=np.float64)
            line = {"color": f"C{k}" if shown else "tab:blue", "label": shown[k] if shown else None}
            if shown:  # outlines, so that the members' histograms stay readable over each other
                hist.hist(x, bins=200, log=True, histtype="step", linewidth=0.9, **line)
            else:
                hist.hist(x, bins=200, log=True, histtype="stepfilled", linewidth=0, color=line["color"])
            # the CDF at most CDF_POINTS ranks (a line of a million vertices took most of the job's seconds)
            ranks = np.unique(np.linspace(0, x.size - 1, min(x.size, CDF_POINTS)).round().astype(np.int64))
            cdf.plot(np.sort(x)[ranks], (ranks + 1) / x.size, linewidth=1.0, **line)
        low, high = min(m.min for m in members), max(m.max for m in members)
        hist.set_xlabel("feature value")
        hist.set_ylabel("count (log)")
        hist.set_title(f"{task} {label}: observed [{low:.4g}, {high:.4g}]")
        cdf.set_xlabel("feature value")
        cdf.set_ylabel("cumulative share")
        cdf.set_title(f"{task} {label}: CDF")
        ranges: dict[tuple[float, float], list[str]] = {}
        for profile in profiles:  # profiles (and members) with the same range share one pair of lines
            for row in members:
                names = ranges.setdefault((getattr(row, f"lo_{profile}"), getattr(row, f"hi_{profile}")), [])
                if profile not in names:
                    names.append(profile)
        for k, ((lo, hi), names) in enumerate(sorted(ranges.items())):
            kwargs = {"color": f"C{len(shown) + k + 1}", "linestyle": "--", "linewidth": 1.2}
            for ax in (hist, cdf):
                ax.axvline(lo, label=f"truncation {', '.join(names)} [{lo:g}, {hi:g}]" if ax is cdf else None,
                           **kwargs)  # fmt: skip
                ax.axvline(hi, **kwargs)
        _legend_outside(cdf)
    _save(fig, path)


def plot_dct_block(arrays: Mapping[str, np.ndarray], task: str, path: str | Path) -> None:
    """Per kind of tensor (tensor_kind), its first tensor's (a cache's layer 0, the first crop or view): the
    first sample's packed 64 x 64 corner beside the log magnitude of its 2-D DCT."""
    plt, _ = _pyplot()
    kinds = _kinds(sorted({k.split("/")[0] for k in arrays}, key=_natural))
    fig, axes = plt.subplots(len(kinds), 2, figsize=(11, 4.4 * len(kinds)), squeeze=False)
    for (left, right), (kind, members) in zip(axes, kinds.items(), strict=True):
        tensor = members[0]
        name = tensor if len(members) == 1 else f"{tensor} (first of the {len(members)} {kind} tensors)"
        block, dct = arrays[f"{tensor}/block"], arrays[f"{tensor}/dct"]
        image = left.imshow(block, cmap="coolwarm", vmin=-np.abs(block).max(), vmax=np.abs(block).max())
        fig.colorbar(image, ax=left, label="feature value")
        left.set_title(f"{task} {name}: packed block {block.shape[0]} x {block.shape[1]}", fontsize="medium")
        magnitude = right.imshow(np.log10(dct + 1e-6), cmap="viridis")
        fig.colorbar(magnitude, ax=right, label="log10 |DCT coefficient|")
        right.set_title("log |2-D DCT-II| (low frequencies top left)", fontsize="medium")
        for ax, what in ((left, "packed"), (right, "frequency")):
            ax.set_xlabel(f"{what} column")
            ax.set_ylabel(f"{what} row")
            ax.grid(False)
    _save(fig, path)


def _natural(name: str) -> list:
    """Sort key: `key.10` after `key.9`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def plot_loss(loss_log: str | Path, png: str | Path, title: str) -> None:
    """The training curve: loss, and its rate and distortion terms, against the step."""
    plt, _ = _pyplot()
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
    _save(fig, png, dpi=100)
