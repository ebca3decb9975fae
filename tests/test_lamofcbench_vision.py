"""LaMoFCBench's vision scenarios on a tiny DINOv3 with seeded weights: the split tensors as the reference names
and shapes them, and scoring by re-injection (the decoded tensors replace the split blocks' outputs in the
backbone's forward pass), checked against plain forward passes of transformers' DINOv3ViTModel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lamofc_lib.sources import build_candidates
from lamofc_lib.sources.images import load_image
from lamofc_lib.store import FeatureStore
from lamofc_lib.tasks import get_task
from lamofc_lib.tasks.lamofcbench.vision.classification import (
    classification_input,
    read_class_subset,
    subset_prediction,
)

TINY = {
    "random_init": {"seed": 0, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
                    "num_attention_heads": 2, "patch_size": 16, "num_register_tokens": 4, "image_size": 64,
                    "layerscale_value": 1.0, "initializer_range": 0.2},
    "resolution": 64,
}  # fmt: skip
SPLIT = [2, 4]  # 1-based: blocks 1 and 3 (0-based names layer.1, layer.3)


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("dinov3_cls")
    manifest = build_candidates({"kind": "skimage", "images": ["astronaut", "coffee", "chelsea"]})
    task = get_task("dinov3_in1k")
    task.extract(manifest, TINY, SPLIT, folder / "features.zarr")
    task.write_head(TINY, SPLIT, {"seed": 3}, folder / "head.pt")
    return task, manifest, folder


def _plain_logits(manifest, head) -> list[np.ndarray]:
    """Logits of the plain forward pass of transformers' DINOv3ViTModel on each image (no hooks), then the head
    on [class token, mean of the patch tokens] after the final norm."""
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    init = {k: v for k, v in TINY["random_init"].items() if k != "seed"}
    torch.manual_seed(0)
    net = DINOv3ViTModel(DINOv3ViTConfig(**init)).eval()
    state = torch.load(head, weights_only=True)
    out = []
    for source in manifest["source"]:
        with torch.no_grad():
            hidden = net(pixel_values=classification_input(load_image(source), 64)).last_hidden_state
        pooled = torch.cat([hidden[:, 0], hidden[:, 5:].mean(dim=1)], dim=-1)
        out.append((pooled @ state["weight"].T + state["bias"])[0].numpy())
    return out


def test_the_split_tensors_are_the_blocks_outputs_as_the_reference_names_them(cls_run):
    task, manifest, folder = cls_run
    store = FeatureStore(folder / "features.zarr")
    assert store.tensors == ["layer.1.0", "layer.3.0"]
    tokens = 1 + 4 + (64 // 16) ** 2
    assert all(store.layout(t).shapes == [(1, 1, tokens, 32)] * 3 for t in store.tensors)
    assert store.attrs["split"]["blocks"] == [1, 3]
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    net = DINOv3ViTModel(DINOv3ViTConfig(**{k: v for k, v in TINY["random_init"].items() if k != "seed"})).eval()
    with torch.no_grad():
        states = net(pixel_values=classification_input(load_image(manifest["source"][1]), 64),
                     output_hidden_states=True).hidden_states  # fmt: skip
    # hidden_states[0] is the embeddings' output; [b + 1] block b's
    np.testing.assert_array_equal(store.read(1, "layer.1.0")[0, 0], states[2][0].numpy())
    np.testing.assert_array_equal(store.read(1, "layer.3.0")[0, 0], states[4][0].numpy())


@pytest.mark.parametrize("inject", [None, [2], [4]])
def test_injecting_the_uncompressed_tensors_gives_the_plain_forward_logits_bitwise(cls_run, inject):
    task, manifest, folder = cls_run
    store = FeatureStore(folder / "features.zarr")
    task.set_metric_options({"inject": inject, "class_subset": None})
    logits = task.logits(folder / "head.pt", (store.sample(i) for i in range(len(store))), store.attrs)
    for ours, plain in zip(logits, _plain_logits(manifest, folder / "head.pt"), strict=True):
        np.testing.assert_array_equal(ours, plain)


def test_a_perturbed_tensor_changes_the_logits_and_is_what_the_next_block_reads(cls_run):
    task, manifest, folder = cls_run
    store = FeatureStore(folder / "features.zarr")
    task.set_metric_options({"inject": [2], "class_subset": None})
    sample = store.sample(0)
    perturbed = {**sample, "layer.1.0": sample["layer.1.0"] + np.float32(0.05)}
    read = []
    from lamofc_lib.tasks.lamofcbench.vision.dinov3 import load_dinov3

    net = load_dinov3(store.attrs["model"], "cpu")
    handle = net.model.layer[2].register_forward_pre_hook(lambda module, args: read.append(args[0].clone()))
    try:
        (changed,) = task.logits(folder / "head.pt", [perturbed], store.attrs)
    finally:
        handle.remove()
    np.testing.assert_array_equal(read[-1][0].numpy(), perturbed["layer.1.0"][0, 0])
    (same,) = task.logits(folder / "head.pt", [sample], store.attrs)
    assert not np.array_equal(changed, same)
    task.set_metric_options({"inject": [4], "class_subset": None})  # block 3's tensor alone: block 1's is not read
    (unaffected,) = task.logits(folder / "head.pt", [perturbed], store.attrs)
    np.testing.assert_array_equal(unaffected, task.logits(folder / "head.pt", [sample], store.attrs)[0])


def test_a_class_subset_scores_its_columns_as_a_hand_made_mapping(tmp_path):
    logits = np.array([0.1, 0.9, 0.3, 0.2, 0.8, 0.05, 0.4, 0.7, 0.0, 0.6])
    (tmp_path / "a.json").write_text("[7, 2, 5, 9]")
    columns = read_class_subset(tmp_path / "a.json")
    # the subset's classes are IN-1k 7, 2, 5, 9 (its sorted folders 0..3): logits 0.7, 0.3, 0.05, 0.6 -> folder 0
    assert columns == [7, 2, 5, 9] and subset_prediction(logits, columns) == 0
    (tmp_path / "b.txt").write_text("2\n5\n9\n")
    assert subset_prediction(logits, read_class_subset(tmp_path / "b.txt")) == 2  # 0.3, 0.05, 0.6 -> 9
    assert subset_prediction(logits, None) == 1
    with pytest.raises(ValueError, match="outside the head's 10 classes"):
        subset_prediction(logits, [3, 10])


def test_an_image_folder_lists_its_classes_sorted_with_the_references_sample_ids(tmp_path):
    for wnid, names in {"n02": ["b", "a"], "n01": ["c"]}.items():
        (tmp_path / wnid).mkdir()
        for name in names:
            Image.new("RGB", (8, 8)).save(tmp_path / wnid / f"{name}.JPEG")
    table = build_candidates({"kind": "image_folder", "root": str(tmp_path)})
    assert list(table["sample_id"]) == ["n01-c", "n02-a", "n02-b"]
    assert list(table["label"]) == ["0", "1", "1"]
    assert isinstance(table, pd.DataFrame)


def test_each_split_block_put_back_on_its_own_is_a_result_of_its_own(cls_run):
    """As the reference's --skip_layer runs: the uncompressed features give two results, dinov3_in1k:layer.1 and
    :layer.3, each scored against its own uncompressed outputs; `inject` names the blocks instead (one result)."""
    from lamofc_lib.scoring import Scorer, load_outputs, save_outputs

    task, manifest, folder = cls_run
    manifest.to_csv(folder / "manifest.csv", index=False)
    scorer = Scorer("dinov3_in1k", folder / "manifest.csv", folder / "features.zarr", folder / "head.pt",
                    "uncompressed", metric_options={"inject": None, "class_subset": None})  # fmt: skip
    records, table, outputs = scorer.score()
    assert [r["task"] for r in records] == ["dinov3_in1k:layer.1", "dinov3_in1k:layer.3"]
    assert [r["value"] for r in records] == [100.0, 100.0] and [r["bpfp_injected"] for r in records] == [32.0] * 2
    assert list(table["variant"]) == ["layer.1"] * 3 + ["layer.3"] * 3
    plain = [str(int(np.argmax(x))) for x in _plain_logits(manifest, folder / "head.pt")]
    assert outputs["layer.3"] == plain  # block 3's tensor alone: the plain forward pass's predictions
    save_outputs(folder / "outputs.npz", manifest["sample_id"], outputs)
    assert load_outputs(folder / "outputs.npz", manifest["sample_id"], "layer.1") == outputs["layer.1"]
    one = Scorer("dinov3_in1k", folder / "manifest.csv", folder / "features.zarr", folder / "head.pt",
                 "uncompressed", metric_options={"inject": [2], "class_subset": None})  # fmt: skip
    (record,), _, _ = one.score()
    assert record["task"] == "dinov3_in1k"


@pytest.mark.parametrize("keys", ["layer.{b}", "segmentation_model.0.backbone.blocks.{b}"])
def test_released_zst_files_import_as_the_scenarios_tensors_under_either_key_naming(cls_run, tmp_path, keys):
    """LaMoFCBench's classification files hold each level as a (1, T, D) batch under `layer.9` (its coder's name)
    or `segmentation_model.0.backbone.blocks.9` (older files): both import as the tensors the scenario extracts."""
    import io

    import zstandard

    from lamofc_lib.feature_files import import_features

    task, manifest, folder = cls_run
    store = FeatureStore(folder / "features.zarr")
    files = tmp_path / "files"
    files.mkdir()
    for i, sid in enumerate(store.sample_ids):
        levels = {keys.format(b=b): torch.from_numpy(store.read(i, f"layer.{b}.0")[:, 0]) for b in (1, 3)}
        buffer = io.BytesIO()
        torch.save(levels, buffer)
        (files / f"{sid}.zst").write_bytes(zstandard.ZstdCompressor().compress(buffer.getvalue()))
    import_features(task, files, manifest, TINY, SPLIT, tmp_path / "imported.zarr")
    imported = FeatureStore(tmp_path / "imported.zarr")
    assert imported.tensors == store.tensors
    for name in store.tensors:
        assert imported.layout(name).shapes == store.layout(name).shapes
        for i in range(len(store)):
            np.testing.assert_array_equal(imported.read(i, name), store.read(i, name))
