"""Tests for lamofc_lib.analysis: the rate-accuracy table, its Markdown, the distortion-accuracy R^2 and the plot."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lamofc_lib.analysis import (
    COLUMNS,
    da_r2,
    rate_accuracy_markdown,
    rate_accuracy_table,
    tensor_table,
    write_table,
)
from lamofc_lib.figures import plot_rate_accuracy

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(task, codec, point, bpfp, mse, value, metric="top1", **extra):
    return {
        "task": task,
        "codec": codec,
        "point": point,
        "bpfp": bpfp,
        "ebpfp": 2 * bpfp,
        "mse": mse,
        "quant_mse": mse / 2,
        "metric": metric,
        "value": value,
        "higher_is_better": True,
        **extra,
    }


def _table(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS)


# --- da_r2 ------------------------------------------------------------------------------------------------------


def test_da_r2_by_hand():
    table = _table(
        [
            # The uncompressed row must be left out: with it (x=0, y=10) the fit would change.
            _row("cls", "original", "original", 32.0, 0.0, 10.0),
            # x = mse = [0, 1, 2], y = value = [1, 3, 2]: mean x 1, mean y 2,
            # Sxy = (-1)(-1) + 0*1 + 1*0 = 1, Sxx = 2, Syy = 1 + 1 + 0 = 2,
            # slope = Sxy/Sxx = 0.5, R^2 = Sxy^2 / (Sxx * Syy) = 1/4.
            _row("cls", "vvenc", "42", 0.1, 2.0, 2.0),
            _row("cls", "vvenc", "22", 0.9, 0.0, 1.0),
            _row("cls", "vvenc", "32", 0.4, 1.0, 3.0),
            # x = [0, 1, 2, 3], y = [0, 2, 1, 3]: mean x = mean y = 1.5,
            # dx = [-1.5, -0.5, 0.5, 1.5], dy = [-1.5, 0.5, -0.5, 1.5],
            # Sxy = 2.25 - 0.25 - 0.25 + 2.25 = 4, Sxx = Syy = 5, R^2 = 16/25 = 0.64.
            _row("csr", "original", "original", 32.0, 0.0, 0.5, metric="accuracy"),
            _row("csr", "vvenc", "22", 1.0, 0.0, 0.0, metric="accuracy"),
            _row("csr", "vvenc", "27", 0.8, 1.0, 2.0, metric="accuracy"),
            _row("csr", "vvenc", "32", 0.6, 2.0, 1.0, metric="accuracy"),
            _row("csr", "vvenc", "37", 0.4, 3.0, 3.0, metric="accuracy"),
        ]
    )
    r2 = da_r2(table)
    assert list(r2.columns) == ["task", "codec", "points", "r2", "slope", "intercept"]
    assert list(zip(r2["task"], r2["codec"], strict=True)) == [("cls", "vvenc"), ("csr", "vvenc")]
    assert r2["r2"].iloc[0] == pytest.approx(0.25, abs=1e-12)
    assert r2["r2"].iloc[1] == pytest.approx(0.64, abs=1e-12)
    # cls: slope Sxy/Sxx = 0.5, intercept mean y - slope * mean x = 2 - 0.5 = 1.5;
    # csr: slope 4/5 = 0.8, intercept 1.5 - 0.8 * 1.5 = 0.3
    assert list(r2["points"]) == [3, 4]
    assert r2["slope"].to_list() == pytest.approx([0.5, 0.8], abs=1e-12)
    assert r2["intercept"].to_list() == pytest.approx([1.5, 0.3], abs=1e-12)


def test_da_r2_original_row_is_excluded():
    coded = [_row("cls", "vvenc", p, 1.0, x, y) for p, x, y in [("22", 0.0, 1.0), ("32", 1.0, 3.0), ("42", 2.0, 2.0)]]
    with_original = da_r2(_table([_row("cls", "original", "original", 32.0, 0.0, 10.0), *coded]))
    without = da_r2(_table(coded))
    assert with_original["r2"].iloc[0] == without["r2"].iloc[0]
    assert with_original["r2"].iloc[0] == pytest.approx(0.25, abs=1e-12)
    assert len(with_original) == 1
    assert "original" not in set(with_original["codec"])


def test_da_r2_collinear_points_give_one():
    # value = 1 - 2 * mse exactly.
    rows = [_row("cls", "vvenc", str(qp), 1.0, mse, 1.0 - 2.0 * mse) for qp, mse in [(22, 0.0), (32, 0.25), (42, 0.5)]]
    r2 = da_r2(_table(rows))
    assert r2["r2"].iloc[0] == pytest.approx(1.0, abs=1e-12)


def test_da_r2_two_points_give_one():
    rows = [_row("cls", "vvenc", "22", 1.0, 0.1, 0.9), _row("cls", "vvenc", "42", 0.1, 0.7, 0.2)]
    assert da_r2(_table(rows))["r2"].iloc[0] == pytest.approx(1.0, abs=1e-12)


def test_da_r2_undefined_cases_are_nan():
    table = _table(
        [
            _row("cls", "original", "original", 32.0, 0.0, 0.9),
            # A single point.
            _row("cls", "vvenc", "22", 1.0, 0.1, 0.8),
            # A metric that does not vary.
            _row("csr", "vvenc", "22", 1.0, 0.1, 0.5),
            _row("csr", "vvenc", "32", 0.5, 0.2, 0.5),
            _row("csr", "vvenc", "42", 0.2, 0.4, 0.5),
            # An MSE that does not vary.
            _row("dpt", "vvenc", "22", 1.0, 0.3, 0.1),
            _row("dpt", "vvenc", "32", 0.5, 0.3, 0.2),
        ]
    )
    r2 = da_r2(table)
    assert list(r2["task"]) == ["cls", "csr", "dpt"]
    assert all(math.isnan(v) for v in r2["r2"])


def test_da_r2_one_row_per_task_and_codec():
    rows = []
    for task in ("csr", "cls"):
        rows.append(_row(task, "original", "original", 32.0, 0.0, 1.0))
        for codec in ("vvenc", "hyperprior"):
            for i in range(3):
                rows.append(_row(task, codec, str(i), 1.0 / (i + 1), float(i), float(i * i)))
    r2 = da_r2(_table(rows))
    assert list(r2.columns) == ["task", "codec", "points", "r2", "slope", "intercept"]
    assert list(zip(r2["task"], r2["codec"], strict=True)) == [
        ("cls", "hyperprior"),
        ("cls", "vvenc"),
        ("csr", "hyperprior"),
        ("csr", "vvenc"),
    ]
    # y = x^2 on x = [0, 1, 2]: mean y = 5/3, Sxy = 4, Sxx = 2, Syy = (25 + 4 + 49)/9 = 78/9,
    # R^2 = Sxy^2 / (Sxx * Syy) = 16 * 9 / 156 = 12/13.
    assert r2["r2"].to_list() == pytest.approx([12 / 13] * 4, abs=1e-12)


def test_da_r2_of_only_originals_is_empty():
    r2 = da_r2(_table([_row("cls", "original", "original", 32.0, 0.0, 1.0)]))
    assert r2.empty
    assert list(r2.columns) == ["task", "codec", "points", "r2", "slope", "intercept"]


# --- rate_accuracy_table ----------------------------------------------------------------------------------------


def _scores():
    extra = {"samples": 8, "reference": "uncompressed", "codec_version": "vvenc 1.x"}
    return [
        _row("csr", "vvenc", "32", 0.2, 5.0, 0.5, metric="accuracy", **extra),
        _row("cls", "vvenc", 42, 0.05, 0.3, 0.6, **extra),
        _row("cls", "hyperprior", 0.0017, 0.5, 0.01, 0.95, **extra),
        _row("cls", "vvenc", 22, 0.8, 0.01, 1.0, **extra),
        _row("csr", "original", "original", 32.0, 0.0, 1.0, metric="accuracy", samples=20, reference="uncompressed"),
        _row("cls", "vvenc", 32, 0.3, 0.1, 0.875, **extra),
        _row("cls", "original", "original", 32.0, 0.0, 1.0, samples=8, reference="uncompressed"),
        _row("csr", "vvenc", "22", 0.7, 1.0, 0.95, metric="accuracy", **extra),
    ]


def test_rate_accuracy_table_order_and_columns():
    table = rate_accuracy_table(_scores())
    assert list(table.columns) == [
        "task", "codec", "point", "bpfp", "ebpfp", "entropy", "bpfp_injected", "mse", "quant_mse", "metric",
        "value", "higher_is_better", "accuracy_drop",
    ]  # fmt: skip
    assert table["entropy"].isna().all()  # scores written before the entropy column: unknown, not 0
    assert list(table.index) == list(range(8))
    assert list(zip(table["task"], table["codec"], table["point"], strict=True)) == [
        ("cls", "original", "original"),
        ("cls", "hyperprior", "0.0017"),
        ("cls", "vvenc", "42"),
        ("cls", "vvenc", "32"),
        ("cls", "vvenc", "22"),
        ("csr", "original", "original"),
        ("csr", "vvenc", "32"),
        ("csr", "vvenc", "22"),
    ]
    assert all(isinstance(p, str) for p in table["point"])
    assert table["value"].to_list() == [1.0, 0.95, 0.6, 0.875, 1.0, 1.0, 0.5, 0.95]


def test_rate_accuracy_table_original_first_even_with_lower_bpfp():
    scores = [
        _row("cls", "vvenc", "22", 40.0, 0.0, 1.0),  # above the uncompressed 32 bits
        _row("cls", "aaa", "1", 50.0, 0.0, 1.0),  # sorts before "original" by name
        _row("cls", "original", "original", 32.0, 0.0, 1.0),
    ]
    table = rate_accuracy_table(scores)
    assert table["codec"].to_list() == ["original", "aaa", "vvenc"]


def test_rate_accuracy_table_empty_raises():
    with pytest.raises(ValueError, match="no scores"):
        rate_accuracy_table([])


def test_rate_accuracy_table_missing_key_raises():
    score = _row("cls", "vvenc", "22", 1.0, 0.1, 0.9)
    del score["mse"]
    with pytest.raises(KeyError):
        rate_accuracy_table([score])


def test_csv_round_trip_keeps_points_and_r2(tmp_path):
    table = rate_accuracy_table(_scores())
    path = tmp_path / "out" / "rate_accuracy.csv"
    write_table(table, path)
    back = pd.read_csv(path, dtype={"point": str})
    assert back["point"].to_list() == table["point"].to_list()
    pd.testing.assert_frame_equal(da_r2(back), da_r2(table))
    assert [p.name for p in path.parent.iterdir()] == ["rate_accuracy.csv"]


def test_the_tensor_table_has_one_row_per_coded_tensor():
    kv = {"key": {"dtype": "bfloat16", "bpfp": 0.5, "entropy": 3.5, "bit_share": 0.6, "mse": 0.2, "quant_mse": 0.1},
          "hidden": {"dtype": "float32", "bpfp": 0.25, "entropy": 2.0, "bit_share": 0.4, "mse": 0.4,
                     "quant_mse": 0.3}}  # fmt: skip
    scores = [
        _row("kv", "original", "original", 32.0, 0.0, 1.0),  # no tensors: not coded
        _row("kv", "elic@hybrid", 0.004, 0.3, 0.3, 0.9, tensors=kv),
    ]
    table = tensor_table(scores)
    assert list(table.columns) == [
        "task", "codec", "point", "tensor", "dtype", "bpfp", "entropy", "bit_share", "mse", "quant_mse"
    ]  # fmt: skip
    assert table.values.tolist() == [
        ["kv", "elic@hybrid", "0.004", "hidden", "float32", 0.25, 2.0, 0.4, 0.4, 0.3],
        ["kv", "elic@hybrid", "0.004", "key", "bfloat16", 0.5, 3.5, 0.6, 0.2, 0.1],
    ]


# --- rate_accuracy_markdown -------------------------------------------------------------------------------------


def test_rate_accuracy_markdown_sections_and_notes():
    table = rate_accuracy_table(_scores())
    text = rate_accuracy_markdown(table, {"cls": "uncompressed", "csr": "ground_truth"})
    lines = text.splitlines()
    assert lines[0] == "# Rate-accuracy"
    assert lines.count("## cls") == 1
    assert lines.count("## csr") == 1
    assert lines.index("## cls") < lines.index("## csr")
    # The notes a reader gets, written out here (not taken from the module's constants).
    assert "Metric top1, scored against the uncompressed model's own predictions, not ground truth." in lines
    assert "Metric accuracy, scored against the data set's labels." in lines
    # bpfp, ebpfp (here 2 x bpfp), mse, quantization mse (here mse / 2)
    # bpfp, ebpfp, the symbols' entropy where the scores give it (empty where not), mse, quant mse, ...
    assert "| vvenc | 22 | 0.8 | 1.6 |  | 0.01 | 0.005 | top1 | 1 | 0 |" in lines
    assert "| hyperprior | 0.0017 | 0.5 | 1 |  | 0.01 | 0.005 | top1 | 0.95 | 5 |" in lines  # AD (1 - 0.95) / 1
    assert "| vvenc | 42 | 0.05 | 0.1 |  | 0.3 | 0.15 | top1 | 0.6 | 40 |" in lines
    assert "| original | original | 32 | 64 |  | 0 | 0 | accuracy | 1 | 0 |" in lines
    with_entropy = rate_accuracy_table([_row("cls", "original", "original", 32.0, 0.0, 1.0),
                                        _row("cls", "vvenc", 22, 0.8, 0.01, 1.0, entropy=1.23456)])  # fmt: skip
    assert "| vvenc | 22 | 0.8 | 1.6 | 1.235 | 0.01 | 0.005 | top1 | 1 | 0 |" in rate_accuracy_markdown(with_entropy)
    # One table line per row, plus a header and a rule per task.
    assert sum(line.startswith("| ") for line in lines) == len(table) + 2
    # Rows stay in the table's order within a section.
    cls = lines[lines.index("## cls") : lines.index("## csr")]
    assert [line.split(" | ")[1] for line in cls if line.startswith("| ") and "---" not in line][1:] == [
        "original",
        "0.0017",
        "42",
        "32",
        "22",
    ]


def test_rate_accuracy_markdown_without_references_has_no_note():
    text = rate_accuracy_markdown(rate_accuracy_table(_scores()))
    assert "## cls" in text and "## csr" in text
    assert "Metric" not in text and "scored against" not in text


# --- plot_rate_accuracy -----------------------------------------------------------------------------------------


def test_plot_rate_accuracy_writes_png(tmp_path):
    table = rate_accuracy_table(_scores())
    path = tmp_path / "figures" / "cls.png"
    plot_rate_accuracy(table, "cls", path)
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 1000
    # Written atomically: no partial file is left beside it.
    assert [p.name for p in path.parent.iterdir()] == ["cls.png"]


def test_plot_rate_accuracy_unknown_task_raises(tmp_path):
    table = rate_accuracy_table(_scores())
    path = tmp_path / "seg.png"
    with pytest.raises(ValueError, match="seg"):
        plot_rate_accuracy(table, "seg", path)
    assert not path.exists()


def _score(task, codec, point, bpfp, value, higher=True):
    return {"task": task, "codec": codec, "point": point, "bpfp": bpfp, "mse": 1.0 / (bpfp + 1), "metric": "m",
            "value": value, "higher_is_better": higher}  # fmt: skip


def test_generalizability_table_sets_cross_task_runs_beside_native_ones():
    from lamofc_lib.analysis import generalizability_table

    scores = [
        _score("seg", "original", "original", 32, 80.0),
        _score("seg", "hyperprior", "0.01", 0.5, 60.0),
        _score("seg", "hyperprior@cls", "0.01", 0.7, 40.0),
        _score("seg", "hyperprior@cls", "0.1", 1.2, 72.0),
        _score("dpt", "original", "original", 32, 0.5, higher=False),
        _score("dpt", "hyperprior@cls", "0.1", 1.0, 0.625, higher=False),
        _score("cls", "hyperprior", "0.1", 1.0, 50.0),  # cls is no applied_to task: left out
    ]
    table = generalizability_table(scores, [("cls", "seg"), ("cls", "dpt")])
    rows = list(table[["trained_on", "applied_to", "point"]].itertuples(index=False, name=None))
    assert rows == [("cls", "dpt", "0.1"), ("seg", "seg", "0.01"), ("cls", "seg", "0.01"), ("cls", "seg", "0.1")]
    drop = dict(
        zip(zip(table.trained_on, table.applied_to, table.point, strict=True), table.accuracy_drop, strict=True)
    )
    assert drop[("seg", "seg", "0.01")] == pytest.approx(25.0)  # (80 - 60) / 80
    assert drop[("cls", "seg", "0.01")] == pytest.approx(50.0)
    assert drop[("cls", "dpt", "0.1")] == pytest.approx(20.0)  # 1 - 0.5 / 0.625: 1/RMSE for lower-is-better
    assert set(table.codec) == {"hyperprior"}
    assert (table.original_value[table.applied_to == "seg"] == 80.0).all()


def test_generalizability_table_names_missing_pairs():
    from lamofc_lib.analysis import generalizability_table

    scores = [_score("seg", "original", "original", 32, 80.0), _score("seg", "hyperprior@cls", "0.1", 1.0, 70.0)]
    with pytest.raises(ValueError, match=r"\('dpt', 'seg'\)"):
        generalizability_table(scores, [("cls", "seg"), ("dpt", "seg")])


def test_selection_table_and_notes_state_the_counts_and_the_100_percent_by_construction():
    from lamofc_lib.analysis import selection_note, selection_table

    summaries = [
        {"task": "dpt", "policy": "scene_quota", "candidates": 10, "kept": 7, "skipped": 3,
         "skipped_by_reason": {"scene quota": 3}, "keeps_only_correct": False,
         "scenes_below_minimum": {"foyer": 2}},
        {"task": "cls", "policy": "first_correct", "candidates": 633, "kept": 500, "skipped": 133,
         "skipped_by_reason": {"incorrect": 120, "beyond samples": 13}, "keeps_only_correct": True},
    ]  # fmt: skip
    table = selection_table(summaries)
    assert list(table.task) == ["cls", "dpt"]
    assert table.loc[0, "skipped_by_reason"] == "beyond samples: 13; incorrect: 120"
    assert table.loc[1, "notes"] == "scenes with fewer than 3 images (all they have): foyer 2"
    cls_note = selection_note(summaries[1], "ground_truth")
    assert cls_note.startswith("Samples: 500 kept of 633 candidates (selection first_correct; skipped: 13 beyond")
    assert "100 % by construction" in cls_note
    assert "100 % by construction" not in selection_note(summaries[1], "uncompressed")
    assert "foyer 2" in selection_note(summaries[0], "ground_truth")


def test_a_markdown_cell_keeps_its_pipe_escaped_so_the_row_keeps_its_columns():
    from lamofc_lib.analysis import markdown_table

    table = pd.DataFrame({"codec": ["vvenc"], "value": [1.5], "note": ["BD-rate: one point | BD-metric: none"]})
    header, _, row = markdown_table(table)
    assert row == "| vvenc | 1.5 | BD-rate: one point \\| BD-metric: none |"
    assert row.replace("\\|", "").count("|") == header.count("|")
