"""The learned Hyperprior: one-channel network, training, real CompressAI bitstreams, determinism, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lamofc_lib import hyperprior as hp
from lamofc_lib.codecs import CodecError, get_codec
from lamofc_lib.coding import decode_point, encode_shard, preprocess_store, read_sidecars
from lamofc_lib.store import FeatureStore, write_store

SETTINGS = hp.TrainSettings(batch=4, crop=(64, 64), steps=30, lr=2e-3, log_every=10, seed=3)


def smooth_frames(count: int, shape=(150, 200), seed=0) -> list[np.ndarray]:
    """Frames with spatial structure (sums of random low-frequency waves), values in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    frames = []
    for _ in range(count):
        f = sum(np.sin(yy * rng.uniform(0.01, 0.2) + xx * rng.uniform(0.01, 0.2) + rng.uniform(0, 6)) for _ in range(4))
        frames.append(((f - f.min()) / (f.max() - f.min())).astype(np.float32))
    return frames


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two tiny models, at a low and a high lambda, trained on the same frames."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("hyperprior")
    frames = smooth_frames(3)
    models = {}
    for lam in (0.0005, 0.05):
        checkpoint, loss = folder / f"{lam}.pt", folder / f"{lam}.csv"
        hp.train(frames, lam, 16, 24, SETTINGS, checkpoint, loss, provenance={"task": "test"})
        models[lam] = checkpoint
    return frames, models, folder


def test_the_network_takes_and_gives_one_channel():
    net = hp.build_model(8, 12)
    assert net.g_a[0].in_channels == 1 and net.g_s[-1].out_channels == 1
    out = net(torch.rand(2, 1, 64, 128))
    assert out["x_hat"].shape == (2, 1, 64, 128)


def test_training_writes_checkpoint_and_loss_log(trained):
    frames, models, folder = trained
    log = pd.read_csv(folder / "0.05.csv")
    assert list(log["step"]) == [10, 20, 30]
    assert {"loss", "mse", "bpfp", "aux", "lr"} <= set(log.columns)
    assert np.isfinite(log[["loss", "mse", "bpfp"]].to_numpy()).all()
    net, record = hp.load_model(models[0.05])
    assert (record["N"], record["M"], record["lambda"], record["steps"], record["task"]) == (16, 24, 0.05, 30, "test")
    hp.plot_loss(folder / "0.05.csv", folder / "curve.png", "test")
    assert (folder / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_decoding_reproduces_the_forward_reconstruction(trained):
    frames, models, _ = trained
    net, _ = hp.load_model(models[0.05])
    frame = frames[0]  # 150 x 200: padded to 192 x 256 for coding, cropped back
    data = hp.compress(net, frame)
    decoded = hp.decompress(net, data, frame.shape)
    assert decoded.shape == frame.shape and decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, hp.reconstruct(net, frame))
    assert 0 < np.mean((decoded - frame) ** 2) < frame.var()


def test_same_bytes_twice_and_from_a_retrained_model(trained, tmp_path):
    frames, models, _ = trained
    first = hp.compress(hp.load_model(models[0.05])[0], frames[1])
    second = hp.compress(hp.load_model(models[0.05])[0], frames[1])
    assert first == second
    # Training is seeded: a second training run gives the same model and so the same bitstream.
    hp.train(smooth_frames(3), 0.05, 16, 24, SETTINGS, tmp_path / "again.pt", tmp_path / "again.csv")
    assert hp.compress(hp.load_model(tmp_path / "again.pt")[0], frames[1]) == first


def test_higher_lambda_spends_more_bits_for_less_error(trained):
    frames, models, _ = trained
    results = {}
    for lam, checkpoint in models.items():
        net, _ = hp.load_model(checkpoint)
        bits = sum(8 * len(hp.compress(net, f)) for f in frames)
        mse = np.mean([np.mean((hp.decompress(net, hp.compress(net, f), f.shape) - f) ** 2) for f in frames])
        results[lam] = (bits, mse)
    assert results[0.05][0] > results[0.0005][0]
    assert results[0.05][1] < results[0.0005][1]


def test_training_settings_are_checked():
    with pytest.raises(ValueError, match="multiple of 64"):
        hp.TrainSettings.from_config({"steps": 10, "crop": [64, 100]})
    with pytest.raises(ValueError, match="steps or epochs"):
        hp.TrainSettings.from_config({"crop": [64, 64]})
    assert hp.TrainSettings.from_config({"epochs": 3, "batch": 4, "crop": [64, 64]}).total_steps(10) == 9


def test_crops_pad_small_frames_and_visit_every_sample():
    frames = [np.full((20, 30), i, np.float32) for i in range(5)]
    sampler = hp.CropSampler(frames, (64, 64), seed=0)
    batch = sampler.batch(5)
    assert batch.shape == (5, 1, 64, 64)
    assert sorted(float(b.max()) for b in batch) == [0, 1, 2, 3, 4]  # one epoch: every sample once


def test_a_broken_checkpoint_is_named(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        hp.load_model(bad)
    torch.save({"weights": 1}, bad)
    with pytest.raises(ValueError, match="not a LaMoFC hyperprior checkpoint"):
        hp.load_model(bad)


@pytest.fixture()
def coded(trained, tmp_path):
    """A two-sample feature store coded at lambda 0.05 through the codec interface."""
    frames, models, _ = trained
    rng = np.random.default_rng(1)
    features = [rng.normal(0, 2, size=(1, 1, 37, 130)).astype(np.float32) for _ in range(2)]
    write_store(tmp_path / "f.zarr", ["a", "b"], [f.shape for f in features], iter(features), attrs={"task": "csr"})
    preprocess_store(tmp_path / "f.zarr", tmp_path / "frames.zarr", "csr", [-5, 5], "normalized", 10)
    codec = get_codec("hyperprior", {}, threads=1, model=models[0.05])
    encode_shard(tmp_path / "frames.zarr", tmp_path / "bits", codec, "0.05", range(2))
    return codec, tmp_path


def test_codec_writes_real_strings_and_counts_only_feature_points(coded):
    codec, folder = coded
    items = read_sidecars([folder / "bits"])
    for path, record in items:
        assert record.codec == "hyperprior" and record.input_kind == "normalized"
        assert record.feature_points == 37 * 130  # the 64 x 192 padded frame is not counted
        assert record.bytes == path.stat().st_size > hp.HEADER.size
        assert "lambda=0.05" in record.codec_version and "trained on test" in record.codec_version
    decode_point([folder / "bits"], folder / "rec.zarr", codec, samples=2)
    rec = FeatureStore(folder / "rec.zarr")
    assert rec.shapes == [(1, 1, 37, 130)] * 2
    assert np.abs(rec.read(0)).max() <= 5


def test_codec_refuses_a_model_of_another_lambda(coded):
    codec, folder = coded
    with pytest.raises(CodecError, match="trained at lambda 0.05, not at point 0.5"):
        encode_shard(folder / "frames.zarr", folder / "other", codec, "0.5", range(1))
    assert not (folder / "other").exists()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_bitstreams_fail_decoding(coded, damage):
    codec, folder = coded
    path = sorted((folder / "bits").glob("*.bin"))[1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(CodecError, match="truncated or altered|altered"):
        decode_point([folder / "bits"], folder / "rec.zarr", codec, samples=2)
    assert not (folder / "rec.zarr").exists()


def test_hyperprior_decoder_rejects_a_cut_bitstream_itself(coded):
    codec, folder = coded
    path = sorted((folder / "bits").glob("*.bin"))[0]
    cut = folder / "cut.bin"
    cut.write_bytes(path.read_bytes()[:6])
    with pytest.raises(CodecError, match="does not decode"):
        codec.decode(cut, (37, 130), folder)
