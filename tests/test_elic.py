"""ELIC (CompressAI's Elic2022Official, one channel) as a learned codec: trained by the training loop the
Hyperprior uses, on LaMoFCBench's K-means frames, coded to real CompressAI strings and back; and users'
pretrained checkpoints in the DT-UFC layout, for ELIC and the Hyperprior."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from store_helpers import write_one

from lamofc_lib.bitstreams import read_sidecars
from lamofc_lib.codecs import get_codec
from lamofc_lib.codecs.hyperprior import model as hp
from lamofc_lib.codecs.hyperprior import training
from lamofc_lib.coding import decode_point, encode_shard
from lamofc_lib.preprocess import preprocess_store, store_frames
from lamofc_lib.quantizers.kmeans import calibrate_store, codes
from lamofc_lib.store import FeatureStore

N, M = 16, 144  # small; ELIC's latent needs M > 128 (its channel groups 16, 16, 32, 64 and M - 128)
SETTINGS = training.TrainSettings(batch=2, crop=(64, 64), steps=6, lr=1e-3, log_every=3, seed=1)


@pytest.fixture(scope="module")
def elic_run(tmp_path_factory):
    """A trained ELIC at lambda 0.01 and a two-sample feature store's K-means frames coded with it."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("elic")
    rng = np.random.default_rng(0)
    features = [np.cumsum(rng.normal(0, 1, (1, 1, 40, 100)), axis=-1).astype(np.float32) for _ in range(3)]
    write_one(
        folder / "f.zarr", ["a", "b", "c"], [f.shape for f in features], features, {"task": "csr"}, packing="plane"
    )
    calibrate_store(folder / "f.zarr", folder / "calibration", "csr", samples=2)
    frames = store_frames(folder / "f.zarr", "normalized", None, folder / "calibration", "csr")
    training.train(frames, 0.01, N, M, SETTINGS, folder / "m.pt", folder / "loss.csv", architecture="elic")
    preprocess_store(folder / "f.zarr", folder / "frames.zarr", "csr", None, "normalized", 10, folder / "calibration")
    codec = get_codec("elic", {}, threads=1, model=folder / "m.pt")
    encode_shard(folder / "frames.zarr", folder / "bits", codec, "0.01", range(3))
    decode_point([folder / "bits"], folder / "rec.zarr", codec, samples=3)
    return codec, folder, features


def test_the_network_is_elic_with_one_channel_in_and_out():
    net = hp.build_model(N, M, architecture="elic")
    assert type(net).__name__ == "Elic2022Official" and net.groups == [16, 16, 32, 64, M - 128]
    assert net.g_a[0].in_channels == 1 and net.g_s[-1].out_channels == 1
    assert net(torch.rand(1, 1, 64, 128))["x_hat"].shape == (1, 1, 64, 128)
    with pytest.raises(ValueError, match="ELIC needs M > 128"):
        hp.build_model(N, 128, architecture="elic")


def test_elic_bitstreams_are_its_eleven_strings_and_decode_to_the_networks_reconstruction(elic_run):
    codec, folder, _ = elic_run
    frames = FeatureStore(folder / "frames.zarr")
    for path, record in read_sidecars([folder / "bits"]):
        tensor = record.tensors[0]
        data = (path / tensor.bitstream).read_bytes()
        frame = frames.read(record.sample_index)
        with torch.no_grad():
            out = codec.net.compress(hp._network_input(frame))
        strings = [s[0] for s in out["strings"]]
        assert len(strings) == 11
        # the file: the strings last first, each but the final one after its 4-byte length
        expected = b"".join(hp.HEADER.pack(len(s)) + s for s in strings[::-1][:-1]) + strings[0]
        assert data == expected and tensor.bytes == len(data)
        assert "Elic2022Official N=16 M=144 lambda=0.01" in record.codec_version
        with torch.no_grad():
            x_hat = codec.net.decompress(out["strings"], out["shape"])["x_hat"]
        np.testing.assert_array_equal(codec.decode(path / tensor.bitstream, frame.shape, folder),
                                      hp.crop_window(x_hat, frame.shape))  # fmt: skip


def test_elic_reconstructions_are_centres_of_the_kmeans_mapping(elic_run):
    """Decoded values are K-means centres (round(y * 256) looked up), in the feature's dtype."""
    codec, folder, features = elic_run
    rec = FeatureStore(folder / "rec.zarr")
    (_, record), *_ = read_sidecars([folder / "bits"])
    centres = np.asarray(record.tensors[0].centres, np.float32)
    frames = FeatureStore(folder / "frames.zarr")
    for i, x in enumerate(features):
        got = rec.read(i)
        assert got.dtype == np.float32 and got.shape == x.shape
        assert np.isin(got, centres).all()
        np.testing.assert_array_equal(frames.read(i), codes(x, centres)[0, 0] / np.float32(256))


def test_kmeans_quantization_and_total_mse_equal_hand_computations(elic_run):
    """The quantization MSE: each value against the largest centre <= it (searchsorted, the first centre below
    all), no codec; the total MSE: against the decoded features; both as the scores compute them."""
    from lamofc_lib.coding import quantization_errors
    from lamofc_lib.distortion import feature_errors

    _, folder, features = elic_run
    original, rec = FeatureStore(folder / "f.zarr"), FeatureStore(folder / "rec.zarr")
    sidecars = [record for _, record in read_sidecars([folder / "bits"])]
    centres = np.asarray(sidecars[0].tensors[0].centres, np.float32)
    quant = quantization_errors(original, sidecars)
    total = feature_errors(original, rec)
    for i, x in enumerate(features):
        floor = centres[np.clip(np.searchsorted(centres, x, side="right") - 1, 0, 255)]
        expected_q = np.mean((x.astype(np.float64) - floor) ** 2)
        expected = np.mean((x.astype(np.float64) - rec.read(i)) ** 2)
        assert quant["quant_mse"][i] == pytest.approx(expected_q, rel=1e-9) and expected_q > 0
        assert quant["quant_mse.feature"][i] == pytest.approx(expected_q, rel=1e-9)
        assert total["mse"][i] == pytest.approx(expected, rel=1e-9)


def test_the_same_bytes_twice(elic_run, tmp_path):
    codec, folder, _ = elic_run
    encode_shard(folder / "frames.zarr", tmp_path / "again", codec, "0.01", range(3))
    for name in ("00000.feature.bin", "00002.feature.bin"):
        assert (tmp_path / "again" / name).read_bytes() == (folder / "bits" / name).read_bytes()


@pytest.mark.parametrize("architecture, codec_name", [("elic", "elic"), ("hyperprior", "hyperprior")])
def test_a_pretrained_dt_ufc_checkpoint_loads_with_its_sizes_from_the_weights(tmp_path, architecture, codec_name):
    """A checkpoint as DT-UFC's train.py saves one (epoch, state_dict, loss, optimizer, ...): N and M come from
    the weights, the load is strict, the entropy tables are rebuilt; its strings decode."""
    sizes = (24, 160) if architecture == "elic" else (24, 40)
    net = hp.build_model(*sizes, seed=4, architecture=architecture)
    net.update(force=True)
    path = tmp_path / f"{architecture}_lambda0.004_best.pth.tar"
    torch.save({"epoch": 7, "state_dict": net.state_dict(), "loss": 1.5, "optimizer": {}}, path)
    codec = get_codec(codec_name, {"pretrained": {"0.004": str(path)}}, model=path)
    assert (codec.record["N"], codec.record["M"]) == sizes
    assert "pretrained" in codec.version()
    frame = np.random.default_rng(2).random((70, 90), dtype=np.float32)
    codec.encode(frame, "0.004", tmp_path / "x.bin", tmp_path)
    assert codec.decode(tmp_path / "x.bin", frame.shape, tmp_path).shape == frame.shape


def test_a_pretrained_checkpoint_that_does_not_fit_names_the_file_and_keys(tmp_path):
    net = hp.build_model(24, 160, architecture="elic")
    state = net.state_dict()
    state["g_s.99.weight"] = torch.zeros(1)
    del state["latent_codec.hyper.h_a.0.bias"]
    path = tmp_path / "elic.pth.tar"
    torch.save({"network": state}, path)
    codec = get_codec("elic", {"pretrained": {"0.01": str(path)}}, model=path)
    fits = r"elic.pth.tar does not fit the network \(missing: \['latent_codec.hyper.h_a.0.bias'\]; unexpected: "
    with pytest.raises(ValueError, match=fits + r"\['g_s.99.weight'\]\)"):
        codec.encode(np.zeros((64, 64), np.float32), "0.01", tmp_path / "x.bin", tmp_path)
    torch.save({"weights": state}, path)
    with pytest.raises(ValueError, match="none of the keys"):
        get_codec("elic", {"pretrained": {"0.01": str(path)}}, model=path).version()
