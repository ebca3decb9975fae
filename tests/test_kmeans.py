"""LaMoFCBench's K-means quantizer: centres against scikit-learn fitted here, codes against an independent floor
assignment on float32, float16 and bfloat16 tensors, the codec input and the reconstruction by hand, and the
mapping folders in the reference's layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sklearn
import torch
from sklearn.cluster import KMeans

from lamofc_lib.preprocess import TensorSpec, from_frame, preprocess_store, to_frame
from lamofc_lib.quantizers.kmeans import (
    MappingError,
    calibrate_store,
    calibration_indices,
    codes,
    fit_centres,
    read_mapping,
    write_mapping,
)
from lamofc_lib.store import FeatureStore, TensorLayout, write_store


def floor_codes(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The reference's rule, written independently: the index of the largest centre <= x, 0 below the first."""
    return np.clip(np.searchsorted(centres, x.astype(np.float32), side="right") - 1, 0, 255)


def sklearn_centres(values: np.ndarray) -> np.ndarray:
    """KMeans as the reference calls it (256 clusters, random_state 42, the library's defaults otherwise), on one
    thread as the calibration fits (its sums depend on the threads)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        model = KMeans(n_clusters=256, random_state=42).fit(values.astype(np.float32).reshape(-1, 1))
    return np.sort(model.cluster_centers_[:, 0]).astype(np.float32)


@pytest.fixture(scope="module")
def heavy_tailed():
    """Feature-like values: mostly small, a few channels far out (as transformer activations)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 200, 64)).astype(np.float32)
    x[..., 3] *= 40
    return x


@pytest.fixture(scope="module")
def centres(heavy_tailed):
    return fit_centres(heavy_tailed)


def test_centres_equal_scikit_learns_kmeans_fitted_the_same_way(heavy_tailed, centres):
    np.testing.assert_array_equal(centres, sklearn_centres(heavy_tailed.ravel()))
    assert centres.dtype == np.float32 and centres.shape == (256,) and (np.diff(centres) > 0).all()


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_codes_are_the_floor_assignment_on_each_dtype(centres, dtype):
    """Values below the first centre, above the last, exactly on centres and between them."""
    rng = np.random.default_rng(1)
    between = rng.uniform(centres[0] - 5, centres[-1] + 5, 4000).astype(np.float32)
    x = np.concatenate([between, centres, [centres[0] - 1, centres[-1] + 1]]).astype(np.float32)
    # the store holds bfloat16 widened to float32 (exact); so does the quantizer
    x = torch.from_numpy(x).to(torch.bfloat16).float().numpy() if dtype == "bfloat16" else x.astype(dtype)
    got = codes(x, centres)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, floor_codes(x, centres))
    brute = np.array([max([k for k, c in enumerate(centres) if c <= v], default=0) for v in x[:300]])
    np.testing.assert_array_equal(got[:300], brute)
    if dtype != "bfloat16":  # bf16 rounding moves centres off themselves; fp16 keeps the float32 test values
        assert codes(centres, centres).tolist() == list(range(256))


def test_a_tensor_frame_is_code_over_256_and_decodes_to_its_centres(heavy_tailed, centres):
    spec = TensorSpec("tokens", None, "kmeans", tuple(map(float, centres)))
    frame = to_frame(heavy_tailed, spec, "normalized", 8)
    expected_codes = floor_codes(heavy_tailed, centres)
    np.testing.assert_array_equal(frame, expected_codes[0, 0].astype(np.float32) / 256)
    assert frame.dtype == np.float32 and frame.max() <= 255 / 256
    # a codec's error below half a code step gives the same codes back; beyond [0, 1] the codes clamp
    noisy = frame + np.float32(0.45 / 256) * np.sign(np.random.default_rng(2).standard_normal(frame.shape))
    back = from_frame(noisy.astype(np.float32), spec, heavy_tailed.shape, "normalized", 8)
    np.testing.assert_array_equal(back, centres[expected_codes])
    ends = from_frame(np.array([[-0.3, 1.4]], np.float32), spec, (1, 1, 1, 2), "normalized", 8)
    np.testing.assert_array_equal(ends, [[[[centres[0], centres[255]]]]])


def test_vvc_input_is_refused_for_kmeans_codes(heavy_tailed, centres):
    spec = TensorSpec("tokens", None, "kmeans", tuple(map(float, centres)))
    with pytest.raises(ValueError, match="learned codecs only"):
        to_frame(heavy_tailed, spec, "quantized", 10)


def test_calibration_uses_the_first_samples_in_name_order(tmp_path):
    """Samples stored as c, a, d, b: calibration on 2 takes a and b; the centres of each tensor equal
    scikit-learn's on exactly those values, and calibration.json records the samples and the versions."""
    rng = np.random.default_rng(3)
    ids = ["c", "a", "d", "b"]
    key = [rng.standard_normal((1, 2, 40, 8)).astype(np.float16) * (i + 1) for i in range(4)]
    state = [rng.gamma(2.0, 3.0, (1, 1, 24, 24)).astype(np.float32) for _ in range(4)]
    tensors = {
        "key": TensorLayout([k.shape for k in key], "float16", {"packing": "tokens"}),
        "state": TensorLayout([s.shape for s in state], "float32", {"packing": "plane"}),
    }
    samples = ({"key": k, "state": s} for k, s in zip(key, state, strict=True))
    write_store(tmp_path / "features.zarr", ids, tensors, samples, attrs={"task": "kv"})
    assert calibration_indices(ids, 2) == [1, 3]
    got = calibrate_store(tmp_path / "features.zarr", tmp_path / "mapping", "kv", samples=2)
    np.testing.assert_array_equal(got["key"], sklearn_centres(np.concatenate([key[1].ravel(), key[3].ravel()])))
    np.testing.assert_array_equal(got["state"], sklearn_centres(np.concatenate([state[1].ravel(), state[3].ravel()])))
    about = json.loads((tmp_path / "mapping" / "calibration.json").read_text())
    assert about["samples"] == ["a", "b"] and about["scikit_learn"] == sklearn.__version__
    assert about["kmeans"]["random_state"] == 42
    # the reference's layout: handler -> {tensor -> file relative to mapping.json}, one sorted array per file
    mapping = json.loads((tmp_path / "mapping" / "mapping.json").read_text())
    assert mapping == {"kv": {"key": "key.json", "state": "state.json"}}
    np.testing.assert_array_equal(
        np.array(json.loads((tmp_path / "mapping" / "key.json").read_text()), np.float32), got["key"]
    )
    # the frames: K-means codes of every tensor, the centres recorded with them
    preprocess_store(
        tmp_path / "features.zarr", tmp_path / "frames.zarr", "kv", None, "normalized", 8, tmp_path / "mapping"
    )
    frames = FeatureStore(tmp_path / "frames.zarr")
    assert frames.layout("state").attrs["quantizer"] == "kmeans"
    assert frames.layout("state").attrs["centres"] == [float(c) for c in got["state"]]
    np.testing.assert_array_equal(frames.read(0, "state"), floor_codes(state[0], got["state"])[0, 0] / 256)
    with pytest.raises(ValueError, match="needs 5 samples; the store holds 4"):
        calibrate_store(tmp_path / "features.zarr", tmp_path / "m5", "kv", samples=5)
    # a tensor of fewer values than centres in its calibration samples is named (a pooled embedding of 1 x 32)
    small = {"pooled": TensorLayout([(1, 1, 1, 32)] * 2, "float32", {"packing": "plane"})}
    rows = ({"pooled": rng.standard_normal((1, 1, 1, 32)).astype(np.float32)} for _ in range(2))
    write_store(tmp_path / "small.zarr", ["a", "b"], small, rows, attrs={"task": "kv"})
    with pytest.raises(ValueError, match=r"calibration of \['pooled'\]: 32 values .* fewer than the 256 centres"):
        calibrate_store(tmp_path / "small.zarr", tmp_path / "m1", "kv", samples=1)


def test_user_mappings_match_tensor_names_exactly(tmp_path, centres):
    """A key `layer.9` does not serve tensor `layer.9.1` (the reference's substring match would)."""
    write_mapping(tmp_path, "dinov3", {"layer.9": centres, "layer.39": centres + 1}, {})
    got = read_mapping(tmp_path / "mapping.json", "dinov3", ["layer.39"])
    np.testing.assert_array_equal(got["layer.39"], centres + 1)
    with pytest.raises(MappingError, match=r"no centres for tensor\(s\) \['layer.9.1'\]; names match exactly"):
        read_mapping(tmp_path, "dinov3", ["layer.9.1"])
    with pytest.raises(MappingError, match="no handler 'qwen'"):
        read_mapping(tmp_path, "qwen", ["layer.9"])


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        (list(range(255)), "expected 256 centres"),
        (list(range(256))[::-1], "not sorted ascending"),
        ([float("nan")] + list(range(255)), "NaN or Inf"),
    ],
)
def test_malformed_centres_are_refused_naming_the_file(tmp_path, values, problem):
    (tmp_path / "mapping.json").write_text(json.dumps({"h": {"t": "sub/t.json"}}))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "t.json").write_text(json.dumps(values))
    with pytest.raises(MappingError, match=rf"tensor 't' \(.*sub/t.json\).*{problem}"):
        read_mapping(tmp_path, "h", ["t"])


def test_a_missing_mapping_is_named(tmp_path):
    with pytest.raises(MappingError, match=r"mapping .*nowhere/mapping.json does not exist"):
        read_mapping(tmp_path / "nowhere", "h", ["t"])
