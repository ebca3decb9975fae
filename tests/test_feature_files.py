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
