"""Tasks: features are taken at the configured split point (before the final norm), and the head fed with the
uncompressed features reproduces the full model's own predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lamofc_lib.sources import build_manifest, load_image
from lamofc_lib.store import FeatureStore
from lamofc_lib.tasks import get_task
from lamofc_lib.tasks.cls import image_transform, load_dinov2
from lamofc_lib.tasks.csr import chat_prompt, load_llm

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cls")
    settings = DEMO["tasks"]["cls"]
    manifest = build_manifest({"kind": "skimage", "images": ["astronaut", "coffee", "horse"]}, 3)
    task = get_task("cls", device="cpu")
    task.extract(manifest, settings["model"], settings["split"], settings["head"], tmp / "f.zarr", tmp / "head.pt")
    return manifest, settings, FeatureStore(tmp / "f.zarr"), tmp / "head.pt", task


def test_cls_features_are_the_block_output_before_the_final_layernorm(cls_run):
    manifest, settings, store, _, _ = cls_run
    assert store.shapes == [(1, 1, 257, 96)] * 3
    assert store.attrs["split"]["blocks"] == [4]
    net = load_dinov2(settings["model"], "cpu")
    pixels = image_transform()(load_image(manifest["source"][0])).unsqueeze(0)
    with torch.no_grad():
        out = net(pixel_values=pixels, output_hidden_states=True)
    feature = store.read(0)[0, 0]
    np.testing.assert_array_equal(feature, out.hidden_states[4][0].numpy())
    # The model's own output is the final LayerNorm of that feature, so the feature is taken before it.
    assert not np.allclose(feature, out.last_hidden_state[0].numpy(), atol=1e-3)
    with torch.no_grad():
        normed = net.layernorm(torch.from_numpy(feature))
    np.testing.assert_allclose(normed.numpy(), out.last_hidden_state[0].numpy(), atol=1e-6)


def test_cls_head_on_uncompressed_features_reproduces_the_model_predictions(cls_run):
    manifest, settings, store, head, task = cls_run
    predictions = task.predict(head, [store.read(i) for i in range(len(store))])
    net = load_dinov2(settings["model"], "cpu")
    state = torch.load(head, weights_only=True)
    expected = []
    for source in manifest["source"]:
        with torch.no_grad():
            x = net(pixel_values=image_transform()(load_image(source)).unsqueeze(0)).last_hidden_state
            logits = torch.cat([x[:, 0], x[:, 1:].mean(1)], -1) @ state["linear.weight"].T + state["linear.bias"]
        expected.append(str(int(logits.argmax())))
    assert predictions == expected


def test_cls_random_head_is_seeded(cls_run, tmp_path):
    manifest, settings, store, head, task = cls_run
    task.extract(manifest, settings["model"], settings["split"], settings["head"], tmp_path / "f.zarr", tmp_path / "h")
    first, second = torch.load(head, weights_only=True), torch.load(tmp_path / "h", weights_only=True)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first if isinstance(first[k], torch.Tensor))
    np.testing.assert_array_equal(FeatureStore(tmp_path / "f.zarr").read(2), store.read(2))


def test_cls_bad_head_checkpoint_fails_before_the_model_loads(cls_run, tmp_path):
    manifest, settings, _, _, task = cls_run
    bad = tmp_path / "bad_head.pth"
    torch.save({"linear.weight": torch.zeros(10, 8)}, bad)
    missing_model = {"id": str(tmp_path / "no-such-model")}
    with pytest.raises(ValueError, match=f"head checkpoint {bad} lacks keys"):
        task.extract(manifest, missing_model, 4, {"checkpoint": str(bad)}, tmp_path / "f.zarr", tmp_path / "h.pt")
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        task.extract(manifest, missing_model, 4, {"checkpoint": None}, tmp_path / "f.zarr", tmp_path / "h.pt")
    assert not (tmp_path / "f.zarr").exists()


def test_cls_split_outside_the_model_is_refused(cls_run, tmp_path):
    manifest, settings, _, _, task = cls_run
    with pytest.raises(ValueError, match=r"block 5 is outside the model's 1\.\.4"):
        task.extract(manifest, settings["model"], 5, settings["head"], tmp_path / "f.zarr", tmp_path / "h.pt")


@pytest.fixture(scope="module")
def csr_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("csr")
    settings = DEMO["tasks"]["csr"]
    manifest = build_manifest({"kind": "arc_demo"}, 3)
    task = get_task("csr", device="cpu")
    task.extract(manifest, settings["model"], settings["split"], {}, tmp / "f.zarr", tmp / "head.pt")
    net, tokenizer = load_llm(settings["model"], "cpu")
    return manifest, FeatureStore(tmp / "f.zarr"), tmp / "head.pt", task, net, tokenizer


def test_csr_features_are_the_last_layer_output_before_the_final_norm(csr_run):
    manifest, store, _, _, net, tokenizer = csr_run
    ids = tokenizer(chat_prompt(tokenizer, manifest["text"][0]), add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = net(**ids, output_hidden_states=True)
    feature = store.read(0)
    assert feature.shape == (1, 1, ids["input_ids"].shape[1], 576)
    assert len({s[2] for s in store.shapes}) > 1  # ragged: prompts differ in length
    # transformers' last hidden state is already normed; the feature is the layer output the norm takes.
    with torch.no_grad():
        normed = net.model.norm(torch.from_numpy(feature[0, 0]))
    np.testing.assert_allclose(normed.numpy(), out.hidden_states[-1][0].numpy(), rtol=1e-5, atol=1e-4)
    assert not np.allclose(feature[0, 0], out.hidden_states[-1][0].numpy(), atol=1e-2)


def test_csr_head_on_uncompressed_features_reproduces_greedy_decoding(csr_run):
    manifest, store, head, task, net, tokenizer = csr_run
    predictions = task.predict(head, [store.read(i) for i in range(len(store))])
    expected = []
    for text in manifest["text"]:
        ids = tokenizer(chat_prompt(tokenizer, text), add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            generated = net.generate(**ids, max_new_tokens=1, do_sample=False)
        token = tokenizer.decode(generated[0, -1:]).strip()
        expected.append(token if token in "ABCD" and token else f"<token {int(generated[0, -1])}>")
    assert predictions == expected
