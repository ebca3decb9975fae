"""The learned Hyperprior: one-channel network, training, real CompressAI bitstreams, determinism, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from store_helpers import write_one

from lamofc_lib.bitstreams import read_sidecars
from lamofc_lib.codecs import CodecError, get_codec
from lamofc_lib.codecs.hyperprior import model as hp
from lamofc_lib.codecs.hyperprior import training
from lamofc_lib.coding import code_shard, decode_point, encode_shard
from lamofc_lib.figures import plot_loss
from lamofc_lib.preprocess import preprocess_store
from lamofc_lib.store import FeatureStore


def reconstruct(net, frame: np.ndarray, padding: str = "zero") -> np.ndarray:
    """The network's own eval-mode forward pass (quantized latents, no entropy coding), clamped to [0, 1] and
    cropped: what decompress(compress(frame)) must reproduce."""
    with torch.no_grad():
        x_hat = net(hp._network_input(frame, padding))["x_hat"].clamp(0, 1)
    return hp.crop_window(x_hat, frame.shape)


SETTINGS = training.TrainSettings(batch=4, crop=(64, 64), steps=30, lr=2e-3, log_every=10, seed=3)


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
        training.train(frames, lam, 16, 24, SETTINGS, checkpoint, loss, provenance={"task": "test"})
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
    train, held_out = log[log["split"] == "train"], log[log["split"] == "validation"]
    assert list(train["step"]) == [10, 20, 30]
    # 3 frames: 1 held out (10 %, at least one), 2 to train on at batch 4: an epoch is 1 step.
    assert list(held_out["step"]) == list(range(1, 31)) and list(held_out["epoch"]) == list(range(1, 31))
    assert {"loss", "mse", "bpfp", "aux", "lr", "epoch"} <= set(log.columns)
    assert np.isfinite(log[["loss", "mse", "bpfp"]].to_numpy()).all()
    net, record = hp.load_model(models[0.05])
    assert (record["N"], record["M"], record["lambda"], record["steps"], record["task"]) == (16, 24, 0.05, 30, "test")
    assert (record["epochs"], record["train_samples"], len(record["validation_samples"])) == (30, 2, 1)
    assert "seconds" not in record["final"] and record["final"]["loss"] == pytest.approx(held_out["loss"].iloc[-1])
    plot_loss(folder / "0.05.csv", folder / "curve.png", "test")
    assert (folder / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_decoding_reproduces_the_forward_reconstruction(trained):
    frames, models, _ = trained
    net, _ = hp.load_model(models[0.05])
    frame = frames[0]  # 150 x 200: padded to 192 x 256 for coding, cropped back
    data = hp.compress(net, frame)
    decoded = hp.decompress(net, data, frame.shape)
    assert decoded.shape == frame.shape and decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, reconstruct(net, frame))


def test_same_bytes_twice_and_from_a_retrained_model(trained, tmp_path):
    frames, models, _ = trained
    first = hp.compress(hp.load_model(models[0.05])[0], frames[1])
    second = hp.compress(hp.load_model(models[0.05])[0], frames[1])
    assert first == second
    # Training is seeded: a second training run gives the same model and so the same bitstream.
    training.train(smooth_frames(3), 0.05, 16, 24, SETTINGS, tmp_path / "again.pt", tmp_path / "again.csv")
    assert hp.compress(hp.load_model(tmp_path / "again.pt")[0], frames[1]) == first


def test_each_lambdas_model_records_its_lambda_and_decodes_its_own_reconstruction(trained):
    """Which lambda spends more bits is an outcome of 30 training steps, which a last-bit difference of the
    host's arithmetic can reorder (tests/test_determinism.py); what holds by construction is checked: each model
    is its lambda's, and decodes every frame to its own forward reconstruction."""
    frames, models, _ = trained
    for lam, checkpoint in models.items():
        net, record = hp.load_model(checkpoint)
        assert record["lambda"] == lam
        for f in frames:
            np.testing.assert_array_equal(hp.decompress(net, hp.compress(net, f), f.shape), reconstruct(net, f))


def test_training_settings_are_checked():
    with pytest.raises(ValueError, match="multiple of 64"):
        training.TrainSettings.from_config({"steps": 10, "crop": [64, 100]})
    with pytest.raises(ValueError, match="steps or epochs"):
        training.TrainSettings.from_config({"crop": [64, 64]})
    assert training.TrainSettings.from_config({"epochs": 3, "batch": 4, "crop": [64, 64]}).total_steps(10) == 9


def test_crops_pad_small_frames_and_visit_every_sample():
    frames = [np.full((20, 30), i + 1, np.float32) for i in range(5)]
    sampler = training.CropSampler(frames, (64, 64), seed=0)
    batch = sampler.batch(5)
    assert batch.shape == (5, 1, 64, 64)
    assert sorted(float(b.max()) for b in batch) == [1, 2, 3, 4, 5]  # one epoch: every sample once
    # A 20 x 30 frame in a 64 x 64 crop: zero-padded, centred (22 rows above, 22 below; 17 columns each side).
    expected = np.zeros((64, 64), np.float32)
    expected[22:42, 17:47] = 1.0
    np.testing.assert_array_equal((batch[:, 0] > 0).numpy(), np.broadcast_to(expected > 0, (5, 64, 64)))


def test_coding_input_is_a_centred_zero_pad_to_multiples_of_64():
    rng = np.random.default_rng(0)
    frame = rng.uniform(0.1, 1.0, (37, 130)).astype(np.float32)
    # 37 x 130 -> 64 x 192: 27 rows of padding, 13 on top and 14 below; 62 columns, 31 on each side.
    assert hp.centre_padding(37, 130) == (13, 14, 31, 31)
    expected = np.zeros((64, 192), np.float32)
    expected[13:50, 31:161] = frame
    x = hp._network_input(frame)
    assert x.shape == (1, 1, 64, 192) and x.dtype == torch.float32
    np.testing.assert_array_equal(x[0, 0].numpy(), expected)
    # Already aligned: untouched.
    aligned = rng.uniform(size=(64, 128)).astype(np.float32)
    np.testing.assert_array_equal(hp._network_input(aligned)[0, 0].numpy(), aligned)
    assert hp.centre_padding(257, 1536) == (31, 32, 0, 0)  # a cls frame: 320 x 1536


def test_replicate_padding_repeats_the_edge_values_around_the_centred_frame(trained):
    frame = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], np.float32)
    # 2 x 3 -> 4 x 4: one row above and below, no column left (the odd one goes right), one column right.
    expected = np.array(
        [[0.1, 0.2, 0.3, 0.3], [0.1, 0.2, 0.3, 0.3], [0.4, 0.5, 0.6, 0.6], [0.4, 0.5, 0.6, 0.6]], np.float32
    )
    np.testing.assert_array_equal(hp.pad_to(frame, align=4, padding="replicate"), expected)
    with pytest.raises(ValueError, match="padding must be one of"):
        hp.pad_to(frame, padding="mirror")
    frames, models, _ = trained
    net = hp.load_model(models[0.05])[0]
    data = hp.compress(net, frames[1], padding="replicate")
    assert data != hp.compress(net, frames[1])  # another network input than the zero pad
    np.testing.assert_array_equal(hp.decompress(net, data, frames[1].shape), reconstruct(net, frames[1], "replicate"))


def test_decoding_crops_the_centred_window():
    """decompress hands back the frame's window of the decoded padded frame, not its top-left corner."""

    class FakeNet:
        def __init__(self):
            self.shapes = []

        def decompress(self, strings, shape):
            self.shapes.append(shape)
            return {"x_hat": torch.arange(64 * 192, dtype=torch.float32).reshape(1, 1, 64, 192)}

    net = FakeNet()
    data = hp.HEADER.pack(2) + b"zz" + b"yyy"
    decoded = hp.decompress(net, data, (37, 130))
    full = np.arange(64 * 192, dtype=np.float32).reshape(64, 192)
    np.testing.assert_array_equal(decoded, full[13:50, 31:161])
    assert net.shapes == [(1, 3)]  # z: one sample per 64 x 64 block of the padded frame
    with pytest.raises(ValueError, match="does not hold"):
        hp.decompress(net, data, (70, 130))


def test_validation_split_sizes():
    settings = training.TrainSettings(steps=1)
    assert [settings.validation_count(n) for n in (2, 8, 15, 20, 100)] == [1, 1, 2, 2, 10]  # 10 %, half up, >= 1
    assert training.TrainSettings(steps=1, validation=3).validation_count(10) == 3
    with pytest.raises(ValueError, match="leaves none"):
        training.TrainSettings(steps=1, validation=3).validation_count(3)
    with pytest.raises(ValueError, match="leaves none"):
        settings.validation_count(1)
    for bad in (0, 1.5, -0.1, True):
        with pytest.raises(ValueError, match="validation"):
            training.TrainSettings.from_config({"steps": 1, "crop": [64, 64], "validation": bad})


def test_scheduler_steps_once_per_epoch_on_the_held_out_loss(tmp_path, monkeypatch):
    """5 frames, 1 held out, 4 to train on at batch 2: an epoch is 2 steps; 9 steps are 5 epochs (the last one
    step long). The scheduler must get exactly those 5 steps, each with that epoch's held-out loss."""
    calls = []

    class Recording(torch.optim.lr_scheduler.ReduceLROnPlateau):
        def step(self, metrics, *args, **kwargs):
            calls.append(float(metrics))
            return super().step(metrics, *args, **kwargs)

    monkeypatch.setattr(torch.optim.lr_scheduler, "ReduceLROnPlateau", Recording)
    frames = smooth_frames(5, shape=(64, 96), seed=4)
    settings = training.TrainSettings(batch=2, crop=(64, 64), steps=9, lr=2e-3, lr_patience=0, log_every=3, seed=1,
                                validation=0.2)  # fmt: skip
    training.train(frames, 0.01, 8, 12, settings, tmp_path / "m.pt", tmp_path / "loss.csv")
    log = pd.read_csv(tmp_path / "loss.csv")
    held_out = log[log["split"] == "validation"]
    assert list(held_out["step"]) == [2, 4, 6, 8, 9] and list(held_out["epoch"]) == [1, 2, 3, 4, 5]
    assert list(log[log["split"] == "train"]["step"]) == [3, 6, 9]
    assert calls == pytest.approx(list(held_out["loss"]), rel=1e-12)
    # The learning rates logged per epoch are those a fresh scheduler gives on the same held-out losses.
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=2e-3)
    reference = Recording.__mro__[1](optimizer, patience=0)  # torch's own class
    expected = []
    for loss in held_out["loss"]:
        expected.append(optimizer.param_groups[0]["lr"])
        reference.step(loss)
    assert list(held_out["lr"]) == pytest.approx(expected, rel=1e-12)
    # The last held-out loss, by hand: the final model in eval mode on the fixed crop of the held-out frame.
    net, record = hp.load_model(tmp_path / "m.pt")
    assert len(record["validation_samples"]) == 1 and record["train_samples"] == 4
    crops = training.validation_crops([frames[i] for i in record["validation_samples"]], (64, 64), 1)
    assert crops.shape == (1, 1, 64, 64)
    with torch.no_grad():
        out = net(crops)
    mse = float(torch.mean((out["x_hat"] - crops) ** 2))
    bits = sum(float(-torch.log2(v).sum()) for v in out["likelihoods"].values())
    assert held_out["loss"].iloc[-1] == pytest.approx(0.01 * 255**2 * mse + bits / crops.numel(), rel=1e-5)


def test_epochs_mode_validates_after_each_epoch(tmp_path):
    frames = smooth_frames(5, shape=(64, 64), seed=5)
    settings = training.TrainSettings(batch=2, crop=(64, 64), epochs=3, lr=2e-3, log_every=100, validation=1)
    training.train(frames, 0.01, 8, 12, settings, tmp_path / "m.pt", tmp_path / "loss.csv")
    log = pd.read_csv(tmp_path / "loss.csv")
    assert list(log[log["split"] == "validation"]["step"]) == [2, 4, 6]  # 4 training frames, batch 2
    assert list(log[log["split"] == "train"]["step"]) == [6]


def test_a_broken_checkpoint_is_named(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        hp.load_model(bad)
    torch.save({"weights": 1}, bad)
    with pytest.raises(ValueError, match="not a LaMoFC learned-codec checkpoint"):
        hp.load_model(bad)


@pytest.fixture()
def coded(trained, tmp_path):
    """A two-sample feature store coded at lambda 0.05 through the codec interface, as rule code does."""
    frames, models, _ = trained
    rng = np.random.default_rng(1)
    features = [rng.normal(0, 2, size=(1, 1, 37, 130)).astype(np.float32) for _ in range(2)]
    write_one(tmp_path / "f.zarr", ["a", "b"], [f.shape for f in features], features, {"task": "csr"}, packing="plane")
    preprocess_store(tmp_path / "f.zarr", tmp_path / "frames.zarr", "csr", [-5, 5], "normalized", 10)
    codec = get_codec("hyperprior", {}, threads=1, model=models[0.05])
    code_shard(tmp_path / "frames.zarr", tmp_path / "bits", tmp_path / "coded.zarr", codec, "0.05", range(2))
    return codec, tmp_path


def test_codec_writes_real_strings_and_counts_only_feature_points(coded):
    codec, folder = coded
    items = read_sidecars([folder / "bits"])
    for folder_of, record in items:
        assert record.codec == "hyperprior" and record.input_kind == "normalized"
        assert record.feature_points == 37 * 130  # the 64 x 192 padded frame is not counted
        assert record.bytes == (folder_of / record.tensors[0].bitstream).stat().st_size > hp.HEADER.size
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


def test_the_sidecar_records_the_encoders_own_decoded_frame_and_threads(coded):
    import hashlib

    codec, folder = coded
    for path, record in read_sidecars([folder / "bits"]):
        tensor = record.tensors[0]
        again = codec.decode(path / tensor.bitstream, tuple(tensor.frame_shape), folder)
        assert tensor.decoded_sha256 == hashlib.sha256(np.ascontiguousarray(again).tobytes()).hexdigest()
        assert (record.threads, record.device) == (1, "cpu")


def test_a_code_job_decodes_each_bitstream_once_and_records_that_frame(trained, tmp_path, monkeypatch):
    """The reconstruction of rule code is the frame whose digest the sidecar records (one decode per bitstream,
    not one to record it and one to reconstruct)."""
    import hashlib

    frames, models, _ = trained
    features = [np.random.default_rng(2).normal(0, 2, size=(1, 1, 37, 130)).astype(np.float32) for _ in range(2)]
    write_one(tmp_path / "f.zarr", ["a", "b"], [f.shape for f in features], features, {"task": "csr"}, packing="plane")
    preprocess_store(tmp_path / "f.zarr", tmp_path / "frames.zarr", "csr", [-5, 5], "normalized", 10)
    codec = get_codec("hyperprior", {}, threads=1, model=models[0.05])
    decoded = []
    real = type(codec).decode
    monkeypatch.setattr(codec, "decode", lambda *a: decoded.append(real(codec, *a)) or decoded[-1])
    code_shard(tmp_path / "frames.zarr", tmp_path / "bits", tmp_path / "coded.zarr", codec, "0.05", range(2))
    assert len(decoded) == 2
    items = read_sidecars([tmp_path / "bits"])
    for frame, (_, record) in zip(decoded, items, strict=True):
        assert record.tensors[0].decoded_sha256 == hashlib.sha256(frame.tobytes()).hexdigest()
        assert record.decode_seconds is not None


def test_decoding_uses_the_encoders_threads_and_refuses_a_different_frame(coded):
    import json

    codec, folder = coded
    models = codec.model
    other = get_codec("hyperprior", {}, threads=2, model=models)
    decode_point([folder / "bits"], folder / "rec.zarr", other, samples=2)
    assert other.threads == 1  # the recorded threads, not the configured 2
    sidecar = sorted((folder / "bits").glob("*.json"))[1]
    data = json.loads(sidecar.read_text())
    data["tensors"][0]["decoded_sha256"] = "0" * 64  # as if the encoder's decoder had produced another frame
    sidecar.write_text(json.dumps(data))
    with pytest.raises(CodecError, match=r"00001.feature.bin decodes to another frame than its encoder's own"):
        decode_point([folder / "bits"], folder / "rec2.zarr", get_codec("hyperprior", {}, model=models), samples=2)
    assert not (folder / "rec2.zarr").exists()


@pytest.mark.parametrize("architecture", ["hyperprior", "elic"])
def test_listed_tables_give_compressai_s_own_strings_and_decodes(architecture):
    """The coder's tables as lists made once (model.listed_tables) against CompressAI's own EntropyModel methods,
    which convert them at every call: the same strings and the same decoded frames, for the scale hyperprior's
    two entropy models and ELIC's eleven strings; the lists are remade after update() replaces the tables."""
    from compressai.entropy_models.entropy_models import EntropyModel

    torch.manual_seed(0)
    net = hp.build_model(16, 144 if architecture == "elic" else 24, architecture=architecture).eval()
    net.update(force=True)
    frames = smooth_frames(2, shape=(70, 130), seed=5)
    library = (EntropyModel.compress, EntropyModel.decompress)
    for frame in frames:
        with torch.no_grad():
            own = net.compress(hp._network_input(frame))  # the library's methods, no context
        data = hp.compress(net, frame)
        assert (EntropyModel.compress, EntropyModel.decompress) == library  # restored after the context
        expected = [s[0] for s in reversed(own["strings"])]
        assert data == b"".join(len(s).to_bytes(4, "big") + s for s in expected[:-1]) + expected[-1]
        with torch.no_grad():
            x_hat = net.decompress(own["strings"], own["shape"])["x_hat"]
        np.testing.assert_array_equal(hp.decompress(net, data, frame.shape), hp.crop_window(x_hat, frame.shape))
    models = [m for m in net.modules() if isinstance(m, EntropyModel)]
    assert len(models) == (6 if architecture == "elic" else 2)  # ELIC: a Gaussian conditional per channel group
    assert all("_lamofc_tables" in m.__dict__ for m in models)
    before = [m.__dict__["_lamofc_tables"][0] for m in models]
    net.update(force=True)  # new tables: the lists follow them
    assert hp.compress(net, frames[-1]) == data
    assert all(m.__dict__["_lamofc_tables"][0] is not b for m, b in zip(models, before, strict=True))
