"""Samples that carry different numbers of batch items (ADE20K's slide crops: most images 2, wide ones more):
every item any sample may have is a named tensor, and a sample without it has it absent (a batch of no items).
Through the store, pre-processing, the real VVenC, the rate, decoding and the distortion: an absent tensor has no
bitstream, 0 bits and 0 points, comes back absent, and leaves the other tensors' numbers as if it were not
declared at all (checked against the same samples coded without the slot)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lamofc_lib.bitstreams import rate, read_sidecars
from lamofc_lib.codecs import get_codec
from lamofc_lib.coding import decode_point, encode_shard, quantization_measures
from lamofc_lib.distortion import feature_errors
from lamofc_lib.preprocess import preprocess_store
from lamofc_lib.quantizers.kmeans import calibrate_store
from lamofc_lib.store import FeatureStore, TensorLayout, write_store

T, D = 12, 16
TRUNCATION = [-3, 3]
POINT = "32"


def _items(seed: int, crops: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"layer.0.{k}": rng.normal(0, 1, (1, 1, T, D)).astype(np.float32) for k in range(crops)}


def _write(path, samples: list[dict], slots: int) -> None:
    names = [f"layer.0.{k}" for k in range(slots)]
    tensors = {
        n: TensorLayout([(1, 1, T, D) if n in s else (0, 1, T, D) for s in samples], "float32",
                        {"packing": "tokens", "calibration": "layer.0"})
        for n in names
    }  # fmt: skip
    write_store(path, [f"s{i}" for i in range(len(samples))], tensors, iter(samples))


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    root = tmp_path_factory.mktemp("absent")
    samples = [_items(0, 2), _items(1, 3), _items(2, 2)]  # the middle image has a third crop
    codec = get_codec("vvenc", {"preset": "faster", "bit_depth": 10})
    for label, chosen, slots in (("ragged", samples, 3), ("plain", [samples[0], samples[2]], 2)):
        folder = root / label
        _write(folder / "features.zarr", chosen, slots)
        preprocess_store(folder / "features.zarr", folder / "frames.zarr", "t", TRUNCATION, codec.input_kind, 10)
        encode_shard(folder / "frames.zarr", folder / "bits", codec, POINT, range(len(chosen)))
        decode_point([folder / "bits"], folder / "reconstructed.zarr", codec)
    return root, samples


def test_an_absent_tensor_is_stored_read_and_listed_as_absent(coded):
    root, samples = coded
    store = FeatureStore(root / "ragged" / "features.zarr")
    assert store.tensors == ["layer.0.0", "layer.0.1", "layer.0.2"]
    assert [store.has(i, "layer.0.2") for i in range(3)] == [False, True, False]
    assert sorted(store.sample(0)) == ["layer.0.0", "layer.0.1"]
    np.testing.assert_array_equal(store.read(1, "layer.0.2"), samples[1]["layer.0.2"])
    assert store.points(0) == 2 * T * D and store.points(1) == 3 * T * D


def test_an_absent_tensor_has_no_bitstream_no_bits_and_decodes_absent(coded):
    root, _ = coded
    ragged, plain = root / "ragged", root / "plain"
    items = read_sidecars([ragged / "bits"])
    record = items[0][1]
    (absent,) = [t for t in record.tensors if t.name == "layer.0.2"]
    assert absent.absent and absent.bytes == 0 and absent.feature_points == 0
    assert not (ragged / "bits" / "00000.layer.0.2.bin").exists()
    rows, plain_rows = rate([ragged / "bits"]), rate([plain / "bits"])
    # the two-crop images: the same bits and BPFP as coded without the third slot; its own BPFP undefined
    for ours, theirs in ((rows[0], plain_rows[0]), (rows[2], plain_rows[1])):
        assert ours["bits"] == theirs["bits"] and ours["bpfp"] == theirs["bpfp"]
        assert ours["bits.layer.0.2"] == 0 and math.isnan(ours["bpfp.layer.0.2"])
    bits = sum(8 * (ragged / "bits" / f"00001.layer.0.{k}.bin").stat().st_size for k in range(3))
    assert rows[1]["bits"] == bits and rows[1]["bpfp"] == pytest.approx(bits / (3 * T * D))
    rec = FeatureStore(ragged / "reconstructed.zarr")
    assert [rec.has(i, "layer.0.2") for i in range(3)] == [False, True, False]
    plain_rec = FeatureStore(plain / "reconstructed.zarr")
    np.testing.assert_array_equal(rec.read(2, "layer.0.1"), plain_rec.read(1, "layer.0.1"))


def test_the_mse_of_a_sample_pools_the_tensors_it_has(coded):
    root, _ = coded
    original = FeatureStore(root / "ragged" / "features.zarr")
    errors = feature_errors(original, FeatureStore(root / "ragged" / "reconstructed.zarr"))
    plain = feature_errors(FeatureStore(root / "plain" / "features.zarr"),
                           FeatureStore(root / "plain" / "reconstructed.zarr"))  # fmt: skip
    assert errors.loc[0, "mse"] == plain.loc[0, "mse"] and math.isnan(errors.loc[0, "mse.layer.0.2"])
    quant = quantization_measures(original, [r for _, r in read_sidecars([root / "ragged" / "bits"])])
    assert math.isnan(quant.loc[2, "quant_mse.layer.0.2"]) and quant.loc[1, "quant_mse.layer.0.2"] > 0


def test_k_means_centres_of_a_level_are_fitted_on_its_items_pooled(coded, tmp_path):
    """The three slots share one level's centres, fitted on every item the calibration samples have (the third
    slot only in s1): the same centres as a one-tensor store of those items' values in a row (slot by slot)."""
    root, samples = coded
    centres = calibrate_store(root / "ragged" / "features.zarr", tmp_path / "mapping", "t", 2)
    assert all(np.array_equal(centres["layer.0.0"], centres[f"layer.0.{k}"]) for k in (1, 2))
    # slot by slot, the calibration samples in name order within a slot
    pooled = np.concatenate([samples[0]["layer.0.0"], samples[1]["layer.0.0"], samples[0]["layer.0.1"],
                             samples[1]["layer.0.1"], samples[1]["layer.0.2"]], axis=2)  # fmt: skip
    write_store(tmp_path / "one.zarr", ["s0"], {"x": TensorLayout([pooled.shape], "float32", {"packing": "tokens"})},
                iter([{"x": pooled}]))  # fmt: skip
    one = calibrate_store(tmp_path / "one.zarr", tmp_path / "one", "t", 1)
    np.testing.assert_array_equal(centres["layer.0.2"], one["x"])
