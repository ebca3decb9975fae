"""ELIC (CompressAI's Elic2022Official, one channel) as a learned codec: trained by the training loop the
Hyperprior uses, on LaMoFCBench's K-means frames, coded to real CompressAI strings and back; and users'
pretrained checkpoints in the DT-UFC layout, for ELIC and the Hyperprior."""

from __future__ import annotations

import struct

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
    from lamofc_lib.coding import quantization_measures
    from lamofc_lib.distortion import feature_errors

    _, folder, features = elic_run
    original, rec = FeatureStore(folder / "f.zarr"), FeatureStore(folder / "rec.zarr")
    sidecars = [record for _, record in read_sidecars([folder / "bits"])]
    centres = np.asarray(sidecars[0].tensors[0].centres, np.float32)
    quant = quantization_measures(original, sidecars)
    total = feature_errors(original, rec)
    for i, x in enumerate(features):
        floor = centres[np.clip(np.searchsorted(centres, x, side="right") - 1, 0, 255)]
        expected_q = np.mean((x.astype(np.float64) - floor) ** 2)
        expected = np.mean((x.astype(np.float64) - rec.read(i)) ** 2)
        assert quant["quant_mse"][i] == pytest.approx(expected_q, rel=1e-9) and expected_q > 0
        assert quant["quant_mse.feature"][i] == pytest.approx(expected_q, rel=1e-9)
        assert total["mse"][i] == pytest.approx(expected, rel=1e-9)


def test_the_entropy_column_is_that_of_the_stored_kmeans_codes(elic_run):
    """The rate floor of a memoryless coder: -sum p log2 p over the histogram of the 8-bit codes the frames
    store holds (code / 256, read back as integers), by hand, in bits per feature point."""
    from lamofc_lib.coding import quantization_measures

    _, folder, features = elic_run
    original, frames = FeatureStore(folder / "f.zarr"), FeatureStore(folder / "frames.zarr")
    measures = quantization_measures(original, [record for _, record in read_sidecars([folder / "bits"])])
    for i in range(len(features)):
        stored = np.rint(frames.read(i).astype(np.float64) * 256).astype(int).ravel()
        _, counts = np.unique(stored, return_counts=True)
        p = counts / counts.sum()
        expected = float(-(p * np.log2(p)).sum())
        assert measures["entropy"][i] == pytest.approx(expected, rel=1e-12)
        assert measures["entropy.feature"][i] == pytest.approx(expected, rel=1e-12) and 0 < expected <= 8


def test_the_same_bytes_twice(elic_run, tmp_path):
    codec, folder, _ = elic_run
    encode_shard(folder / "frames.zarr", tmp_path / "again", codec, "0.01", range(3))
    for name in ("00000.feature.bin", "00002.feature.bin"):
        assert (tmp_path / "again" / name).read_bytes() == (folder / "bits" / name).read_bytes()


def _dt_ufc_network(architecture: str, N: int, M: int):
    """The network DT-UFC trains, built here from CompressAI's classes alone (not the project's builders): its
    first analysis convolution takes one channel and its last synthesis deconvolution gives one."""
    from compressai.models import Elic2022Official, ScaleHyperprior
    from compressai.models.utils import conv, deconv

    torch.manual_seed(11)
    net = (Elic2022Official if architecture == "elic" else ScaleHyperprior)(N, M)
    net.g_a[0], net.g_s[-1] = conv(1, N), deconv(N, 1)
    return net


def _dt_ufc_names(state: dict) -> dict:
    """The state dict under DT-UFC's CompressAI snapshot's names: `entropy_bottleneck.matrices.0`, `.biases.0`,
    `.factors.0` where CompressAI 1.2.6 writes `_matrix0`, `_bias0`, `_factor0` (renamed by hand here)."""
    renamed = {}
    for key, value in state.items():
        for old, new in (("._matrix", ".matrices."), ("._bias", ".biases."), ("._factor", ".factors.")):
            head, sep, index = key.rpartition(old)
            if sep and "entropy_bottleneck" in head and index.isdigit():
                key = f"{head}{new}{index}"
        renamed[key] = value
    return renamed


@pytest.mark.parametrize("architecture, sizes", [("hyperprior", (128, 192)), ("elic", (192, 320))])
def test_a_dt_ufc_checkpoint_loads_and_codes_as_compressais_own_network(tmp_path, architecture, sizes):
    """A checkpoint written as DT-UFC's train.py writes one (its dict of epoch, state_dict, loss, optimizer,
    aux_optimizer and lr_scheduler; its entropy bottleneck's parameter-list key names; its N/M): N and M come
    from the weights, the load is strict, and the codec's strings are CompressAI's own `compress` output of the
    same weights on the same padded frame."""
    torch.set_num_threads(1)
    net = _dt_ufc_network(architecture, *sizes)
    state = _dt_ufc_names(net.state_dict())
    assert any(".matrices.0" in k for k in state) and not any("._matrix0" in k for k in state)
    aux = [p for n, p in net.named_parameters() if n.endswith("quantiles")]
    optimizer = torch.optim.Adam([p for n, p in net.named_parameters() if not n.endswith("quantiles")], lr=1e-4)
    aux_optimizer = torch.optim.Adam(aux, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min")
    path = tmp_path / f"{architecture}_lambda0.004_checkpoint_best_loss.pth.tar"
    record = {"epoch": 41, "state_dict": state, "loss": 0.125, "optimizer": optimizer.state_dict(),
              "aux_optimizer": aux_optimizer.state_dict(), "lr_scheduler": scheduler.state_dict()}  # fmt: skip
    torch.save(record, path)

    codec = get_codec(architecture, {"pretrained": {"0.004": str(path)}}, model=path, threads=1)
    assert (codec.record["N"], codec.record["M"], codec.record["epoch"]) == (*sizes, 41)
    assert "pretrained" in codec.version()
    frame = np.random.default_rng(2).integers(0, 256, (70, 90)).astype(np.float32) / 256
    codec.encode(frame, "0.004", tmp_path / "x.bin", tmp_path)
    ours = (tmp_path / "x.bin").read_bytes()

    net.eval()
    net.update(force=True)
    padded = np.pad(frame, ((29, 29), (19, 19)))  # 70 x 90 centred in 128 x 128
    with torch.no_grad():
        out = net.compress(torch.from_numpy(padded)[None, None])
    strings = [s[0] for s in reversed(out["strings"])]
    expected = b"".join(struct.pack(">I", len(s)) + s for s in strings[:-1]) + strings[-1]
    assert ours == expected
    assert len(strings) == (11 if architecture == "elic" else 2)
    decoded = codec.decode(tmp_path / "x.bin", frame.shape, tmp_path)
    with torch.no_grad():
        x_hat = net.decompress(out["strings"], out["shape"])["x_hat"][0, 0, 29:99, 19:109].numpy()
    np.testing.assert_array_equal(decoded, x_hat)


def test_the_projects_own_checkpoints_load_under_either_bottleneck_naming(tmp_path):
    """A LaMoFC checkpoint whose entropy bottleneck's keys use the other CompressAI naming (as if it had been
    written under a later CompressAI) loads to the same network."""
    net = hp.build_model(24, 40, seed=4)
    record = {"format": hp.CHECKPOINT_FORMAT, "N": 24, "M": 40, "architecture": "hyperprior",
              "state_dict": _dt_ufc_names(net.state_dict())}  # fmt: skip
    torch.save(record, tmp_path / "m.pt")
    loaded, _ = hp.load_model(tmp_path / "m.pt")
    parameters = dict(loaded.named_parameters())
    assert sorted(parameters) == sorted(n for n, _ in net.named_parameters())
    for key, value in net.named_parameters():
        torch.testing.assert_close(parameters[key], value, rtol=0, atol=0)


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
