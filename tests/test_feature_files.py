"""Features from files: .npy files in the reference implementation's layout are imported into the store with
their sample ids and dtype, checked against the task's layout; selection keeps the samples that have a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from lamofc_lib.feature_files import FeatureFileError, import_features
from lamofc_lib.selection import SelectionError, run_selection
from lamofc_lib.sources import build_candidates
from lamofc_lib.store import FeatureStore
from lamofc_lib.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
CLS = DEMO["tasks"]["cls"]
IMAGES = ["astronaut", "coffee", "chelsea"]


def _write(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    folder.mkdir(exist_ok=True)
    for stem, array in arrays.items():
        np.save(folder / f"{stem}.npy", array)


def test_cls_features_in_the_reference_layout_are_imported_as_they_are(tmp_path):
    # The reference saves cls features as <image stem>.npy, 1 x 1 x 257 x D, float32.
    rng = np.random.default_rng(0)
    arrays = {name: rng.normal(0, 5, (1, 1, 257, 96)).astype(np.float32) for name in IMAGES}
    _write(tmp_path / "feature_test", arrays)
    candidates = build_candidates({"kind": "skimage", "images": ["camera", *IMAGES]})
    block = {"samples": 3, "selection": {"policy": "first_correct", "list": None}, "source": {},
             "features_from": str(tmp_path / "feature_test")}  # fmt: skip
    selection = run_selection("cls", candidates, block)  # the files decide; no model runs
    assert list(selection.manifest.sample_id) == IMAGES
    assert dict(zip(selection.report.sample_id, selection.report.reason, strict=True))["camera"] == "no feature file"
    task = get_task("cls")
    import_features(
        task, tmp_path / "feature_test", selection.manifest, CLS["model"], CLS["split"], tmp_path / "f.zarr"
    )
    store = FeatureStore(tmp_path / "f.zarr")
    assert store.sample_ids == IMAGES
    assert store.dtype == np.float32 and store.attrs["imported_from"] == str(tmp_path / "feature_test")
    for i, name in enumerate(IMAGES):
        np.testing.assert_array_equal(store.read(i), arrays[name])
    block["samples"] = 4
    with pytest.raises(SelectionError, match=r"task cls: 3 of the 4 candidates have a feature file .*asks for 4"):
        run_selection("cls", candidates, block)


def test_a_feature_of_the_wrong_shape_or_type_is_refused_naming_the_file(tmp_path):
    manifest = build_candidates({"kind": "skimage", "images": IMAGES})
    task = get_task("cls")
    good = np.zeros((1, 1, 257, 96), dtype=np.float32)
    _write(tmp_path / "a", {"astronaut": good, "coffee": good, "chelsea": np.zeros((1, 1, 256, 96), np.float32)})
    with pytest.raises(
        FeatureFileError, match=r"chelsea\.npy has shape 1 x 1 x 256 x 96, task cls expects 1 x 1 x 257 x 96"
    ):
        import_features(task, tmp_path / "a", manifest, CLS["model"], CLS["split"], tmp_path / "f.zarr")
    _write(tmp_path / "b", {"astronaut": good, "coffee": good})
    with pytest.raises(FeatureFileError, match=r"chelsea\.npy does not exist"):
        import_features(task, tmp_path / "b", manifest, CLS["model"], CLS["split"], tmp_path / "f.zarr")
    _write(tmp_path / "c", {"astronaut": good, "coffee": good, "chelsea": good.astype(np.int32)})
    with pytest.raises(FeatureFileError, match=r"chelsea\.npy holds int32 values"):
        import_features(task, tmp_path / "c", manifest, CLS["model"], CLS["split"], tmp_path / "f.zarr")
    bad = good.copy()
    bad[0, 0, 3, 5] = np.nan
    _write(tmp_path / "d", {"astronaut": good, "coffee": bad, "chelsea": good})
    with pytest.raises(FeatureFileError, match=r"coffee\.npy holds NaN or Inf"):
        import_features(task, tmp_path / "d", manifest, CLS["model"], CLS["split"], tmp_path / "f.zarr")
    assert not (tmp_path / "f.zarr").exists()


def test_float16_features_keep_their_dtype(tmp_path):
    manifest = build_candidates({"kind": "skimage", "images": IMAGES[:2]})
    arrays = {n: np.full((1, 1, 257, 96), 1.0009765625, dtype=np.float16) for n in IMAGES[:2]}
    _write(tmp_path / "h", arrays)
    import_features(get_task("cls"), tmp_path / "h", manifest, CLS["model"], CLS["split"], tmp_path / "f.zarr")
    store = FeatureStore(tmp_path / "f.zarr")
    assert store.read(1).dtype == np.float16
    np.testing.assert_array_equal(store.read(1), arrays["coffee"])


def _write_zst(folder: Path, objects: dict[str, object]) -> None:
    """LaMoFCBench's file format: torch.save, then zstd."""
    import io

    import torch
    import zstandard

    folder.mkdir(exist_ok=True)
    for stem, obj in objects.items():
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        (folder / f"{stem}.zst").write_bytes(zstandard.ZstdCompressor().compress(buffer.getvalue()))


def test_lamofcbench_zst_files_are_selected_and_imported_for_a_task(tmp_path):
    """A folder of `<sample id>.zst` files: selection keeps the candidates that have one, the import stores
    the one tensor a one-tensor task takes, bit for bit in its dtype; other tensor names or shapes are refused
    naming the folder and leave no store."""
    import torch

    torch.manual_seed(0)
    tensors = {name: torch.randn(1, 1, 257, 96).to(torch.bfloat16) for name in IMAGES}
    _write_zst(tmp_path / "zst", {name: {"feature": t} for name, t in tensors.items()})
    candidates = build_candidates({"kind": "skimage", "images": ["camera", *IMAGES]})
    block = {"samples": 3, "selection": {"policy": "first_correct", "list": None}, "source": {},
             "features_from": str(tmp_path / "zst")}  # fmt: skip
    selection = run_selection("cls", candidates, block)
    assert list(selection.manifest.sample_id) == IMAGES
    task = get_task("cls")
    import_features(task, tmp_path / "zst", selection.manifest, CLS["model"], CLS["split"], tmp_path / "f.zarr")
    store = FeatureStore(tmp_path / "f.zarr")
    assert store.tensors == ["feature"] and store.layout().dtype == "bfloat16"
    for i, name in enumerate(IMAGES):
        np.testing.assert_array_equal(store.read(i), tensors[name].float().numpy())
    _write_zst(tmp_path / "other", {name: {"output": t} for name, t in tensors.items()})
    with pytest.raises(FeatureFileError, match=r"hold tensors \['output'\]; task cls takes one tensor named 'feature'"):
        import_features(task, tmp_path / "other", selection.manifest, CLS["model"], CLS["split"], tmp_path / "g.zarr")
    _write_zst(tmp_path / "short", {name: {"feature": t[:, :, :256]} for name, t in tensors.items()})
    with pytest.raises(FeatureFileError, match=r"give sample astronaut the shape \(1, 1, 256, 96\)"):
        import_features(task, tmp_path / "short", selection.manifest, CLS["model"], CLS["split"], tmp_path / "g.zarr")
    assert not (tmp_path / "g.zarr").exists()
