"""python -m lamofc_lib.verify: every bitstream against its sidecar, every Zarr store read back, and the trained
models and heads against the digests recorded when they were used, with each problem named by its file."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from store_helpers import write_one

from lamofc_lib.codecs import get_codec
from lamofc_lib.codecs.hyperprior.training import TrainSettings, train
from lamofc_lib.coding import encode_shard
from lamofc_lib.preprocess import preprocess_store, store_frames
from lamofc_lib.provenance import provenance
from lamofc_lib.verify import main, verify


@pytest.fixture
def results(tmp_path):
    """A results folder with a feature store, its frames and a real VVenC point of two samples."""
    root = tmp_path / "results"
    rng = np.random.default_rng(0)
    features = [rng.normal(0, 3, size=(1, 1, 24, 40)).astype("float32") for _ in range(2)]
    write_one(root / "cls/features.zarr", ["a", "b"], [f.shape for f in features], features, {"task": "cls"})
    preprocess_store(
        root / "cls/features.zarr", root / "cls/frames/vvc-quantized10.zarr", "cls", [-8, 8], "quantized", 10
    )
    codec = get_codec("vvenc", {"preset": "faster"})
    encode_shard(root / "cls/frames/vvc-quantized10.zarr", root / "cls/vvenc/37/bitstreams/000", codec, "37", range(2))
    return root


def test_an_untouched_results_folder_verifies(results, capsys):
    assert verify(results) == []
    assert main([str(results)]) == 0
    assert "0 problems in 2 sidecars' bitstreams and 2 stores" in capsys.readouterr().err


def test_altered_and_truncated_bitstreams_are_named(results, capsys):
    first, second = sorted((results / "cls/vvenc/37/bitstreams/000").glob("*.bin"))
    data = first.read_bytes()
    first.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, one bit flipped
    second.write_bytes(second.read_bytes()[:10])
    problems = verify(results)
    assert problems[0] == f"bitstream {first} does not match the SHA-256 in its sidecar: it was altered"
    assert len(problems) == 2 and problems[1].startswith(f"bitstream {second} has 10 bytes, its sidecar says ")
    assert main([str(results)]) == 1
    assert str(first) in capsys.readouterr().out


def test_a_corrupted_zarr_chunk_is_named_with_its_store(results):
    chunks = sorted(p for p in (results / "cls/features.zarr").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunks[0].write_bytes(b"\x00garbage" * 10)
    problems = verify(results)
    assert len(problems) == 1 and problems[0].startswith(f"{results / 'cls/features.zarr'}: ")


def test_a_missing_results_folder_is_named(tmp_path):
    assert verify(tmp_path / "nowhere") == [f"{tmp_path / 'nowhere'}: no such results folder"]


@pytest.fixture
def coded_with_models(results):
    """The results folder above plus a Hyperprior point (a model trained for 4 steps on the same features, as the
    workflow lays it out) and a provenance record of a cls head file."""
    model = results / "models/hyperprior/cls/0.01/model.pt"
    model.parent.mkdir(parents=True)
    frames = store_frames(results / "cls/features.zarr", "normalized", [-8, 8])
    settings = TrainSettings(batch=2, crop=(64, 64), steps=4, lr=1e-3, validation=1)
    train(frames, 0.01, 8, 12, settings, model, model.parent / "loss.csv")
    preprocess_store(
        results / "cls/features.zarr", results / "cls/frames/learned-normalized.zarr", "cls", [-8, 8], "normalized", 10
    )
    codec = get_codec("hyperprior", {}, model=model)
    bitstreams = results / "cls/hyperprior/0.01/bitstreams/000"
    encode_shard(results / "cls/frames/learned-normalized.zarr", bitstreams, codec, "0.01", range(2))
    head = results / "cls/head.pt"
    head.write_bytes(b"a head's bytes")
    config = {"tasks": {"cls": {"model": "demo"}}}
    (results / "provenance.json").write_text(json.dumps(provenance(config, [], {"cls": head})))
    return results, model, head, bitstreams


def test_models_and_heads_as_recorded_verify(coded_with_models):
    results, *_ = coded_with_models
    assert verify(results) == []


def test_a_model_changed_after_coding_is_named_with_its_bitstreams(coded_with_models):
    results, model, _, bitstreams = coded_with_models
    recorded = hashlib.sha256(model.read_bytes()).hexdigest()[:16]
    model.write_bytes(model.read_bytes() + b"\0")
    now = hashlib.sha256(model.read_bytes()).hexdigest()[:16]
    assert verify(results) == [
        f"model {model} changed after coding: its SHA-256 begins {now}, the bitstreams in {bitstreams.parent} "
        f"were coded by one beginning {recorded}"
    ]
    model.unlink()
    assert verify(results) == [f"model {model} is missing; the bitstreams in {bitstreams.parent} were coded with it"]


def test_a_head_changed_after_the_tables_is_named(coded_with_models):
    results, _, head, _ = coded_with_models
    head.write_bytes(b"another head")
    record = results / "provenance.json"
    expected = f"head {head} does not match the SHA-256 in {record}: it changed after the tables were made"
    assert verify(results) == [expected]
