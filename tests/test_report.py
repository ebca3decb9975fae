"""The report's tables and figures: BD-rate (hand-computed cases), accuracy drops, complexity, feature statistics
(against NumPy and an explicit DCT matrix), the Table 6 layout, provenance and the figures' files."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess

import numpy as np
import pandas as pd
import pytest
from store_helpers import write_one

from lamofc_lib import analysis, feature_stats, figures, provenance
from lamofc_lib.config import ConfigError, validate

PNG = b"\x89PNG\r\n\x1a\n"


def _rows(task, codec, points, metric="top1", higher=True):
    """Rate-accuracy rows of one codec: points are (bpfp, value) pairs."""
    return [
        {"task": task, "codec": codec, "point": str(i), "bpfp": r, "ebpfp": r, "mse": 1.0 / (i + 1),
         "quant_mse": 0.5 / (i + 1), "metric": metric, "value": v, "higher_is_better": higher}
        for i, (r, v) in enumerate(points)
    ]  # fmt: skip


def _table(*groups) -> pd.DataFrame:
    return pd.DataFrame([row for group in groups for row in group])


ANCHOR = [(0.1, 50.0), (0.2, 60.0), (0.4, 68.0), (0.8, 72.0)]


# --- BD-rate ------------------------------------------------------------------------------------------------------


def test_a_task_the_anchor_does_not_code_gets_undefined_bd_numbers_naming_why():
    """A codec may code some tasks only (codecs.<codec>.tasks): a task without the anchor's points keeps its
    codecs' rows, their BD numbers NaN with the reason."""
    table = _table(_rows("cls", "vvenc", ANCHOR), _rows("cls", "elic", ANCHOR), _rows("bench", "elic", ANCHOR))
    bd = analysis.bd_table(table, "vvenc")
    assert bd[bd["task"] == "cls"]["bd_rate"].iloc[0] == pytest.approx(0.0, abs=1e-9)
    row = bd[bd["task"] == "bench"].iloc[0]
    assert row["codec"] == "elic" and math.isnan(row["bd_rate"]) and math.isnan(row["bd_metric"])
    why = "the anchor vvenc does not code bench"
    assert row["note"] == f"BD-rate: {why} | BD-metric: {why}" and row["anchor_points"] == 0


@pytest.mark.parametrize("method", ["pchip", "akima", "cubic"])
def test_identical_curves_give_a_bd_rate_and_bd_metric_of_zero(method):
    table = _table(_rows("cls", "vvenc", ANCHOR), _rows("cls", "other", ANCHOR))
    bd = analysis.bd_table(table, "vvenc", method)
    assert list(bd["codec"]) == ["other"] and bd["note"].iloc[0] == ""
    assert bd[bd["task"] == "cls"]["bd_rate"].iloc[0] == pytest.approx(0.0, abs=1e-9)
    assert bd["bd_metric"].iloc[0] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", ["pchip", "akima", "cubic"])
def test_a_curve_at_half_the_rate_gives_minus_50_percent(method):
    # The same metric at half the BPFP everywhere: log10 rate is lower by log10(2) over the whole metric range,
    # so BD-rate = 10^(-log10 2) - 1 = -50 % whatever the interpolation.
    half = [(r / 2, v) for r, v in ANCHOR]
    bd = analysis.bd_table(_table(_rows("cls", "vvenc", ANCHOR), _rows("cls", "half", half)), "vvenc", method)
    assert bd["bd_rate"].iloc[0] == pytest.approx(-50.0, abs=1e-9)


@pytest.mark.parametrize("method", ["pchip", "akima", "cubic"])
def test_points_off_the_pareto_front_are_dropped_and_named(method):
    """A point that buys no better metric than a lower-rate point of its curve (a tie, or a dip) is dropped from
    BD-rate's curves, in the anchor and in the other curve: what is left is the half-rate curve, -50 % as above;
    with bd_points all, the ties leave no BD-rate. BD-metric keeps the tie and drops only the dip."""
    tied_anchor = [*ANCHOR, (1.6, 72.0)]
    half = [(r / 2, v) for r, v in ANCHOR] + [(0.3, 55.0)]  # below the 60 reached at rate 0.1
    table = _table(_rows("cls", "vvenc", tied_anchor), _rows("cls", "half", half))
    row = analysis.bd_table(table, "vvenc", method).iloc[0]
    assert row.bd_rate == pytest.approx(-50.0, abs=1e-9)
    assert (row.points, row.anchor_points) == (4, 4)
    assert row.note.split(" | ") == ["BD-rate: off the front: half 4, vvenc 4", "BD-metric: off the front: half 4"]
    assert math.isnan(analysis.bd_table(table, "vvenc", method, points="all")["bd_rate"].iloc[0])


@pytest.mark.parametrize("method", ["pchip", "akima"])
def test_a_tie_leaves_bd_rate_undefined_and_bd_metric_the_mean_gap(method):
    """Two points at one metric: no BD-rate (the rate is no function of the metric), but a BD-metric. Against an
    anchor linear in log10 rate (both piecewise methods interpolate it exactly) from 60 at 0.2 to 70 at 0.4 BPFP,
    a flat 60 over the same rates is on average 5 below it. The cubic fit (degree 3) needs four points."""
    linear = [(0.1, 50.0), (0.2, 60.0), (0.4, 70.0), (0.8, 80.0)]
    table = _table(_rows("cls", "vvenc", linear), _rows("cls", "flat", [(0.2, 60.0), (0.4, 60.0)]))
    row = analysis.bd_table(table, "vvenc", method).iloc[0]
    assert row.bd_metric == pytest.approx(-5.0, abs=1e-9)
    assert math.isnan(row.bd_rate) and row.note == "BD-rate: fewer than 2 points; off the front: flat 1"
    cubic = analysis.bd_table(table, "vvenc", "cubic").iloc[0]
    assert math.isnan(cubic.bd_metric) and "BD-metric: fewer than 4 points (cubic)" in cubic.note


def test_bd_metric_is_the_mean_metric_gain_and_keeps_the_metrics_direction():
    # +2 points of accuracy at every rate: BD-metric +2; the same BPFP, so BD-rate < 0 (fewer bits needed).
    better = [(r, v + 2) for r, v in ANCHOR]
    bd = analysis.bd_table(_table(_rows("cls", "vvenc", ANCHOR), _rows("cls", "better", better)), "vvenc")
    assert bd["bd_metric"].iloc[0] == pytest.approx(2.0, abs=1e-9) and bd["bd_rate"].iloc[0] < 0
    # RMSE (lower is better) 0.1 m lower at every rate: BD-metric -0.1 m, in the metric's own direction
    rmse = [(0.1, 0.9), (0.2, 0.7), (0.4, 0.6), (0.8, 0.55)]
    lower = [(r, v - 0.1) for r, v in rmse]
    table = _table(_rows("dpt", "vvenc", rmse, "rmse", False), _rows("dpt", "lower", lower, "rmse", False))
    bd = analysis.bd_table(table, "vvenc")
    assert bd["bd_metric"].iloc[0] == pytest.approx(-0.1, abs=1e-9) and bd["bd_rate"].iloc[0] < 0
    half = [(r / 2, v) for r, v in rmse]
    table = _table(_rows("dpt", "vvenc", rmse, "rmse", False), _rows("dpt", "half", half, "rmse", False))
    assert analysis.bd_table(table, "vvenc")["bd_rate"].iloc[0] == pytest.approx(-50.0, abs=1e-9)


def test_bd_rate_undefined_cases_give_nan_with_the_reason():
    noisy = [(0.1, 50.0), (0.2, 40.0), (0.4, 68.0)]  # the metric falls, then rises, with the rate
    apart = [(10.0, 95.0), (20.0, 97.0), (40.0, 98.0)]  # above every anchor metric: no overlap
    table = _table(_rows("cls", "vvenc", ANCHOR), _rows("cls", "noisy", noisy), _rows("cls", "apart", apart))
    bd = analysis.bd_table(table, "vvenc", points="all").set_index("codec")
    assert math.isnan(bd.loc["noisy", "bd_rate"]) and "does not improve strictly" in bd.loc["noisy", "note"]
    assert math.isfinite(bd.loc["noisy", "bd_metric"])  # a function of the rate, rising or not
    assert math.isnan(bd.loc["apart", "bd_rate"]) and "BD-rate: Curves do not overlap" in bd.loc["apart", "note"]
    same = [(0.1, 50.0), (0.1, 55.0)]
    bd = analysis.bd_table(_table(_rows("cls", "vvenc", ANCHOR), _rows("cls", "same", same)), "vvenc", points="all")
    assert math.isnan(bd["bd_metric"].iloc[0]) and "BD-metric: two points at the same rate" in bd["note"].iloc[0]
    missing = analysis.bd_table(table, "vtm")  # an anchor without points: every row NaN, naming why
    why = "the anchor vtm does not code cls"
    assert missing["bd_rate"].isna().all() and set(missing["note"]) == {f"BD-rate: {why} | BD-metric: {why}"}


# --- accuracy drop, selection counts -----------------------------------------------------------------------------


def test_the_rate_accuracy_table_gives_each_points_accuracy_drop_and_the_selection_counts():
    scores = [
        *_rows("seg", "original", [(32.0, 80.0)], "miou"),
        *_rows("seg", "vvenc", [(0.5, 60.0), (1.0, 72.0)], "miou"),
        *_rows("dpt", "original", [(32.0, 0.5)], "rmse", False),
        *_rows("dpt", "vvenc", [(0.5, 0.625)], "rmse", False),
        *_rows("tti", "original", [(32.0, 0.0)], "fid", False),
        *_rows("tti", "vvenc", [(0.5, 30.0)], "fid", False),
    ]
    summaries = [{"task": t, "kept": k, "candidates": c} for t, k, c in (("seg", 4, 9), ("dpt", 3, 3), ("tti", 6, 6))]
    table = analysis.rate_accuracy_table(scores, summaries).set_index(["task", "codec", "point"])
    # (80 - 60) / 80 and (80 - 72) / 80; dpt through 1/RMSE: (1/0.5 - 1/0.625) / (1/0.5) = 20 %
    assert table.loc[("seg", "vvenc", "0"), "accuracy_drop"] == pytest.approx(25.0)
    assert table.loc[("seg", "vvenc", "1"), "accuracy_drop"] == pytest.approx(10.0)
    assert table.loc[("dpt", "vvenc", "0"), "accuracy_drop"] == pytest.approx(20.0)
    assert math.isnan(table.loc[("tti", "vvenc", "0"), "accuracy_drop"])  # FID 0 uncompressed: undefined
    assert (table.xs("original", level="codec")["accuracy_drop"] == 0).all()
    assert table.loc[("seg", "vvenc", "1"), "samples"] == 4 and table.loc[("seg", "vvenc", "1"), "candidates"] == 9
    with pytest.raises(ValueError, match="no uncompressed score of task 'seg'"):
        analysis.rate_accuracy_table(scores[1:3])


def test_the_generalizability_matrix_has_table_6s_layout():
    long = pd.DataFrame(
        [
            {"trained_on": "seg", "applied_to": "seg", "accuracy_drop": 10.0, "value": 70.0, "metric": "miou"},
            {"trained_on": "seg", "applied_to": "seg", "accuracy_drop": 20.0, "value": 60.0, "metric": "miou"},
            {"trained_on": "tti", "applied_to": "seg", "accuracy_drop": 50.0, "value": 40.0, "metric": "miou"},
            {"trained_on": "seg", "applied_to": "tti", "accuracy_drop": float("nan"), "value": 30.0, "metric": "fid"},
            {"trained_on": "seg", "applied_to": "tti", "accuracy_drop": float("nan"), "value": 50.0, "metric": "fid"},
        ]
    ).assign(codec="hyperprior")
    elic = long.iloc[[0]].assign(codec="elic", accuracy_drop=5.0)  # another codec's models get rows of their own
    matrix = analysis.generalizability_matrix(pd.concat([long, elic])).set_index(["codec", "trained_on"])
    assert list(matrix.columns) == ["seg", "tti"]
    assert list(matrix.index) == [("elic", "seg"), ("hyperprior", "seg"), ("hyperprior", "tti")]
    assert matrix.loc[("hyperprior", "seg"), "seg"] == pytest.approx(15.0)
    assert matrix.loc[("hyperprior", "tti"), "seg"] == pytest.approx(50.0)
    assert matrix.loc[("hyperprior", "seg"), "tti"] == pytest.approx(40.0)  # AD undefined: the mean FID
    assert math.isnan(matrix.loc[("hyperprior", "tti"), "tti"])  # no such run
    assert matrix.loc[("elic", "seg"), "seg"] == pytest.approx(5.0) and math.isnan(matrix.loc[("elic", "seg"), "tti"])
    text = analysis.generalizability_markdown(matrix.reset_index(), long)
    assert "columns tti: the mean metric (fid)" in text and "| hyperprior | seg | 15 | 40 |" in text


# --- complexity ---------------------------------------------------------------------------------------------------


def _sidecar(folder, index, seconds, frame_shapes, decode_seconds=None):
    """A version-2 sidecar written out by hand, with an empty bitstream file per tensor."""
    tensors = []
    for k, shape in enumerate(frame_shapes):
        name = f"t{k}"
        (folder / f"{index:05d}.{name}.bin").write_bytes(b"x")
        tensors.append({"name": name, "bitstream": f"{index:05d}.{name}.bin", "bytes": 1, "sha256": "", "feature_shape":
                        list(shape), "feature_dtype": "float32", "feature_points": int(np.prod(shape)), "frame_shape":
                        list(shape), "packing": "plane", "truncation": [-1, 1], "quantizer": "floor"})  # fmt: skip
    record = {"sample_index": index, "sample_id": f"s{index}", "task": "cls", "codec": "vvenc", "codec_version": "v",
              "point": "22", "input_kind": "quantized", "bit_depth": 10, "tensors": tensors,
              "encode_seconds": seconds, "version": 2,
              **({"decode_seconds": decode_seconds} if decode_seconds is not None else {})}  # fmt: skip
    (folder / f"{index:05d}.json").write_text(json.dumps(record))


def test_complexity_is_the_jobs_own_times_per_sample_and_per_megapixel(tmp_path):
    point = tmp_path / "results" / "cls" / "vvenc" / "22"
    first, second = point / "bitstreams" / "000", point / "bitstreams" / "001"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    _sidecar(first, 0, 1.0, [(1000, 250), (250, 1000)], 0.5)  # two tensors: 0.5 Mpx
    _sidecar(first, 1, 3.0, [(1000, 500), (500, 1000)], 1.0)  # 1.0 Mpx
    _sidecar(second, 2, 2.0, [(1000, 500), (1000, 500)], 1.5)  # 1.0 Mpx
    table = analysis.complexity_table([first, second])
    row = table.iloc[0]
    assert (row.task, row.codec, row.points, row.samples) == ("cls", "vvenc", 1, 3)
    assert row.frame_mpixels == pytest.approx(2.5 / 3)
    assert row.encode_s_per_sample == pytest.approx(2.0) and row.decode_s_per_sample == pytest.approx(1.0)
    assert row.encode_s_per_mpixel == pytest.approx(6.0 / 2.5) and row.decode_s_per_mpixel == pytest.approx(3.0 / 2.5)
    _sidecar(second, 2, 2.0, [(1000, 500), (1000, 500)])  # a sidecar of an older LaMoFC: no decoding time
    with pytest.raises(ValueError, match="no decode time of 1 samples, e.g. cls/vvenc/22"):
        analysis.complexity_table([first, second])


# --- feature statistics -------------------------------------------------------------------------------------------


def test_feature_statistics_agree_with_numpy_per_layer(tmp_path):
    rng = np.random.default_rng(3)
    samples = [rng.normal(0, [[[[1.0]], [[4.0]]]], size=(2, 2, 30, 40)).astype("float32") for _ in range(3)]
    write_one(tmp_path / "f.zarr", ["a", "b", "c"], [s.shape for s in samples], samples)
    profiles = {"vvc": [[-2, 2], [-5, 5]], "learned": [-1, 1]}  # per layer, and one range for both layers
    table, values = feature_stats.feature_statistics(tmp_path / "f.zarr", "dpt", profiles)
    assert list(table["layer"]) == ["0", "1"]
    for layer, row in table.set_index("layer").iterrows():
        x = np.concatenate([s[:, int(layer)].ravel() for s in samples]).astype(np.float64)
        assert row["values"] == x.size and (row["min"], row["max"]) == (x.min(), x.max())
        assert row["mean"] == pytest.approx(x.mean(), rel=1e-12) and row["std"] == pytest.approx(x.std(), rel=1e-9)
        assert row["p50"] == pytest.approx(np.percentile(x, 50)) and row["p99.9"] == pytest.approx(
            np.percentile(x, 99.9)
        )
        lo, hi = profiles["vvc"][int(layer)]
        assert row["clipped_vvc"] == pytest.approx(np.mean((x < lo) | (x > hi)))
        assert row["clipped_learned"] == pytest.approx(np.mean((x < -1) | (x > 1)))
        assert (row["lo_vvc"], row["hi_vvc"]) == (lo, hi)
        np.testing.assert_array_equal(values[f"feature/{layer}"], x.astype(np.float32))  # all kept: few values
    whole, _ = feature_stats.feature_statistics(tmp_path / "f.zarr", "cls", {"vvc": [-2, 2]})
    assert list(whole["layer"]) == ["all"] and whole["values"].iloc[0] == 3 * 2 * 2 * 30 * 40


def test_the_subsample_is_one_even_stride_over_all_samples(tmp_path, monkeypatch):
    samples = [np.arange(i * 100, (i + 1) * 100, dtype="float32").reshape(1, 1, 10, 10) for i in range(3)]
    write_one(tmp_path / "f.zarr", ["a", "b", "c"], [s.shape for s in samples], samples)
    monkeypatch.setattr(feature_stats, "SUBSAMPLE", 40)
    _, values = feature_stats.feature_statistics(tmp_path / "f.zarr", "cls", {"vvc": [0, 1]})
    # 300 values, at most 40 kept: every 8th of the concatenation, across the sample boundaries
    np.testing.assert_array_equal(values["feature/all"], np.arange(0, 300, 8, dtype="float32"))


def test_the_dct_block_is_the_orthonormal_dct_ii_of_the_packed_corner(tmp_path):
    rng = np.random.default_rng(4)
    sample = rng.normal(size=(1, 1, 70, 80)).astype("float32")
    write_one(tmp_path / "f.zarr", ["a"], [sample.shape], [sample], packing="plane")
    arrays = feature_stats.dct_block(tmp_path / "f.zarr", block=64)
    n = np.arange(64)
    basis = np.sqrt(2 / 64) * np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / 128)  # DCT-II, row k
    basis[0] /= np.sqrt(2)
    corner = sample[0, 0, :64, :64].astype(np.float64)
    np.testing.assert_array_equal(arrays["feature/block"], corner)
    np.testing.assert_allclose(arrays["feature/dct"], np.abs(basis @ corner @ basis.T), atol=1e-10)


# --- provenance ---------------------------------------------------------------------------------------------------


def test_provenance_records_the_revision_and_whether_the_checkout_is_dirty(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pyproject.toml").write_text('[project]\ndependencies = ["numpy==1", "not-installed-anywhere==2"]\n')
    git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert provenance.git_state(repo) == {"revision": head, "dirty": False}
    (repo / "pyproject.toml").write_text((repo / "pyproject.toml").read_text() + "\n")
    assert provenance.git_state(repo) == {"revision": head, "dirty": True}
    assert provenance.git_state(tmp_path) == {"revision": None, "dirty": None}
    versions = provenance.package_versions(repo)
    assert versions["numpy"] == np.__version__ and versions["not-installed-anywhere"] is None
    head_file = tmp_path / "head.pt"
    head_file.write_bytes(b"weights")
    config = {"tasks": {"cls": {"model": {"id": "facebook/dinov2-giant"}}}, "run": {"tasks": ["cls"]}}
    versions = [("vvenc", "a"), ("vvenc", "a"), ("hyperprior", "m2"), ("hyperprior", "m1")]
    scores = [{"codec": codec, "codec_version": version} for codec, version in versions]
    record = provenance.provenance(config, scores, {"cls": head_file}, repo)
    assert record["codecs"] == {"hyperprior": ["m1", "m2"], "vvenc": ["a"]}
    assert record["models"]["cls"] == {"model": {"id": "facebook/dinov2-giant"},
                                       "head_sha256": hashlib.sha256(b"weights").hexdigest()}  # fmt: skip
    assert record["git"]["dirty"] is True and record["machine"]["cpus"] >= 1 and record["config"] == config


# --- config, figures ----------------------------------------------------------------------------------------------


def test_the_bd_anchor_defaults_to_the_first_codec_and_must_be_coded(tmp_path):
    import yaml

    from lamofc_lib.config import SCHEMA_PATH

    demo = yaml.safe_load((SCHEMA_PATH.parents[2] / "config" / "demo.yaml").read_text())
    assert validate(demo)["report"] == {
        "anchor": "vvenc", "bd_method": "pchip", "bd_points": "pareto", "tensor_accuracy": ["hyperprior_u"]
    }  # fmt: skip
    demo["report"] = {"anchor": "vtm"}
    with pytest.raises(ConfigError, match=r"report.anchor: 'vtm' is not coded in this run \(run.codecs: vvenc"):
        validate(demo)


def test_every_figure_is_written_as_a_png(tmp_path):
    table = analysis.rate_accuracy_table(
        [*_rows("cls", "original", [(32.0, 80.0)]), *_rows("cls", "vvenc", ANCHOR), *_rows("cls", "hp", ANCHOR[:3]),
         *_rows("tti", "original", [(32.0, 0.0)], "fid", False), *_rows("tti", "vvenc", ANCHOR, "fid", False)]
    )  # fmt: skip
    fits = analysis.da_r2(table)
    rng = np.random.default_rng(5)
    samples = [rng.normal(size=(1, 2, 8, 70)).astype("float32")]
    write_one(tmp_path / "f.zarr", ["a"], [samples[0].shape], samples)
    stats, values = feature_stats.feature_statistics(tmp_path / "f.zarr", "cls", {"vvc": [[-1, 1], [-2, 2]]})
    paths = {name: tmp_path / f"{name}.png" for name in ("ra", "ad", "da", "dist", "dct")}
    figures.plot_rate_accuracy(table, "cls", paths["ra"])
    figures.plot_rate_accuracy_drop(table, paths["ad"])
    figures.plot_distortion_accuracy(table, fits, "cls", paths["da"])
    figures.plot_feature_distribution(stats, values, "cls", paths["dist"])
    figures.plot_dct_block(feature_stats.dct_block(tmp_path / "f.zarr", block=8), "cls", paths["dct"])
    assert all(p.read_bytes()[:8] == PNG for p in paths.values())
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(p.name for p in paths.values())  # no temp files


def test_feature_figures_draw_a_caches_layers_as_one_kind(tmp_path):
    """A cache's layers (key.0, key.1), a segmentation's crops (layer.2.0, layer.2.1) are one kind each; a name
    without a trailing index is its own. The figures of such a store are written."""
    assert [figures.tensor_kind(n) for n in ("key.0", "key.12", "layer.2.1", "output", "ssm_state.4", "a.b")] == [
        "key", "key", "layer.2", "output", "ssm_state", "a.b"
    ]  # fmt: skip
    sd35 = [
        "text_encoder-item0.clip_prompt_embeds",
        "text_encoder-item3.clip_prompt_embeds",
        "vae.encoder_f1",
        "vae.decoder",
    ]
    assert [figures.tensor_kind(n) for n in sd35] == [
        "text_encoder.clip_prompt_embeds", "text_encoder.clip_prompt_embeds", "vae.encoder_f", "vae.decoder"
    ]  # fmt: skip
    from lamofc_lib.store import TensorLayout, write_store

    rng = np.random.default_rng(6)
    shapes = {"output": (1, 1, 5, 16), "key.0": (1, 2, 5, 8), "key.1": (1, 2, 5, 8), "value.0": (1, 2, 5, 8),
              "value.1": (1, 2, 5, 8)}  # fmt: skip
    layouts = {name: TensorLayout([shape, shape], "float32", {"packing": "tokens"}) for name, shape in shapes.items()}
    samples = [{name: rng.normal(size=shape).astype("float32") for name, shape in shapes.items()} for _ in "ab"]
    write_store(tmp_path / "f.zarr", ["a", "b"], layouts, samples)
    stats, values = feature_stats.feature_statistics(tmp_path / "f.zarr", "lm", {"learned": [-5, 5]})
    assert len(stats) == 5  # the table keeps a row per tensor
    figures.plot_feature_distribution(stats, values, "lm", tmp_path / "dist.png")
    figures.plot_dct_block(feature_stats.dct_block(tmp_path / "f.zarr", block=4), "lm", tmp_path / "dct.png")
    assert (tmp_path / "dist.png").read_bytes()[:8] == PNG == (tmp_path / "dct.png").read_bytes()[:8]
