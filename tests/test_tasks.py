"""Tasks: features are taken at the configured split point (before the final norm), and the head fed with the
uncompressed features reproduces the full model's own predictions."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lamofc_lib.sources import build_candidates
from lamofc_lib.sources.arc import _arc_demo
from lamofc_lib.sources.images import load_image
from lamofc_lib.store import FeatureStore
from lamofc_lib.tasks import get_task
from lamofc_lib.tasks.lamofc.cls import image_transform
from lamofc_lib.tasks.lamofc.csr import answer_tokens, encode_prompt, load_llm
from lamofc_lib.tasks.lamofc.dinov2 import load_dinov2

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cls")
    settings = DEMO["tasks"]["cls"]
    manifest = build_candidates({"kind": "skimage", "images": ["astronaut", "coffee", "horse"]})
    task = get_task("cls", device="cpu")
    task.write_head(settings["model"], settings["split"], settings["head"], tmp / "head.pt")
    task.extract(manifest, settings["model"], settings["split"], tmp / "f.zarr")
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
    task.write_head(settings["model"], settings["split"], settings["head"], tmp_path / "h")
    task.extract(manifest, settings["model"], settings["split"], tmp_path / "f.zarr")
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
        task.write_head(missing_model, 4, {"checkpoint": str(bad)}, tmp_path / "h.pt")
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        task.write_head(missing_model, 4, {"checkpoint": None}, tmp_path / "h.pt")
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        task.extract(manifest, missing_model, 4, tmp_path / "f.zarr")
    assert not (tmp_path / "f.zarr").exists() and not (tmp_path / "h.pt").exists()


def test_cls_split_outside_the_model_is_refused(cls_run, tmp_path):
    manifest, settings, _, _, task = cls_run
    with pytest.raises(ValueError, match=r"block 5 is outside the model's 1\.\.4"):
        task.extract(manifest, settings["model"], 5, tmp_path / "f.zarr")


@pytest.fixture(scope="module")
def csr_run(tmp_path_factory, smollm2_converted):
    """The demo's csr on 4 questions, SmolLM2 run as the workflow runs it: its GGUF file dequantized once into a
    folder (rule convert_model; conftest's smollm2_converted), which the head, the extraction and the tests load."""
    tmp = tmp_path_factory.mktemp("csr")
    settings = copy.deepcopy(DEMO["tasks"]["csr"])
    settings["model"] = copy.deepcopy(smollm2_converted)
    manifest = _arc_demo({"kind": "arc_demo"}).iloc[:4].reset_index(drop=True)
    task = get_task("csr", device="cpu")
    task.write_head(settings["model"], settings["split"], {}, tmp / "head.pt")
    task.extract(manifest, settings["model"], settings["split"], tmp / "f.zarr")
    net, tokenizer = load_llm(settings["model"], "cpu")
    return manifest, settings, FeatureStore(tmp / "f.zarr"), tmp / "head.pt", task, net, tokenizer


def _llama3_like_tokenizer(base):
    """SmolLM2's vocabulary with Llama-3's special tokens and BOS post-processor (Llama3-8B's own tokenizer is
    not available offline), plus three added tokens for the answer-token map."""
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    backend = copy.deepcopy(base.backend_tokenizer)
    specials = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    backend.add_tokens([AddedToken(t, normalized=False) for t in ["A.", " B)", "\tC\n"]])
    bos = backend.token_to_id("<|begin_of_text|>")
    backend.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )  # fmt: skip
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")


def test_csr_layout_needs_no_weights(csr_run, monkeypatch):
    import transformers

    manifest, settings, store, _, task, _, _ = csr_run

    def refuse(*_args, **_kwargs):
        raise AssertionError("layout loaded model weights")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    layout = task.layout(manifest, settings["model"], settings["split"])
    assert layout.shapes == [(1, 1, None, 576)] * 4  # SmolLM2-135M: hidden size 576
    assert layout.dtype == "float32"
    assert layout.attrs["split"]["layer"] == 30
    # The stored features have the layout's shapes with the token counts filled in.
    assert [s[:2] + s[3:] for s in store.shapes] == [(1, 1, 576)] * 4
    for key in ("task", "model", "split"):
        assert store.attrs[key] == layout.attrs[key]
    with pytest.raises(ValueError, match=r"layer 31 is outside the model's 1\.\.30"):
        task.layout(manifest, settings["model"], 31)
    with pytest.raises(ValueError, match="one split layer"):
        task.layout(manifest, settings["model"], [29, 30])


def test_csr_tokens_are_the_text_generation_pipelines(csr_run):
    from transformers import LlamaConfig, LlamaForCausalLM, pipeline

    manifest, _, store, _, _, net, tokenizer = csr_run
    prompt = manifest["text"][0]
    # SmolLM2's tokenizer adds no BOS and reads Llama-3's header tokens as plain text.
    smol = pipeline("text-generation", model=net, tokenizer=tokenizer).preprocess(prompt)["input_ids"]
    assert torch.equal(encode_prompt(tokenizer, prompt)["input_ids"], smol)
    assert tokenizer.decode(smol[0]) == prompt
    assert store.shapes[0][2] == smol.shape[1]
    # A tokenizer that, like Llama-3's, has a BOS post-processor and the header tokens as special tokens.
    llama = _llama3_like_tokenizer(tokenizer)
    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=len(llama), hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))  # fmt: skip
    expected = pipeline("text-generation", model=tiny, tokenizer=llama).preprocess(prompt)["input_ids"][0].tolist()
    ids = encode_prompt(llama, prompt)["input_ids"][0].tolist()
    assert ids == expected
    assert ids[0] == llama.bos_token_id and ids.count(llama.bos_token_id) == 1
    header = llama.convert_tokens_to_ids(["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    assert [ids.count(t) for t in header] == [2, 2, 1]
    assert llama.decode(ids[1:]) == prompt


def test_csr_features_are_the_last_layer_output_before_the_final_norm(csr_run):
    manifest, _, store, _, _, net, tokenizer = csr_run
    ids = tokenizer(manifest["text"][0], return_tensors="pt")
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
    # ... and it is layer 30's output, not its input.
    assert not np.allclose(feature[0, 0], out.hidden_states[-2][0].numpy(), atol=1e-2)


def test_csr_head_on_uncompressed_features_reproduces_the_pipeline_answers(csr_run):
    from transformers import pipeline

    manifest, _, store, head, task, net, tokenizer = csr_run
    predictions = task.predict(head, [store.read(i) for i in range(len(store))])
    generator = pipeline("text-generation", model=net, tokenizer=tokenizer)
    answers, tokens = [], []
    for text in manifest["text"]:
        # The reference's call: a list of one prompt string, one new token, greedy, new text only.
        answers.append(generator([text], max_new_tokens=1, return_full_text=0, do_sample=False)[0][0]["generated_text"])
        with torch.no_grad():
            tokens.append(int(net(**tokenizer(text, return_tensors="pt")).logits[0, -1].argmax()))
    texts = [a.strip() for a in answers]
    expected = [t if t and t in "ABCDE" else f"<token {k}>" for t, k in zip(texts, tokens, strict=True)]
    assert predictions == expected
    assert any(p in "ABCD" for p in predictions)
    # The reference's correctness test: the generated text, stripped, equals the positional answer letter.
    correct = [t == label for t, label in zip(texts, manifest["label"], strict=True)]
    accuracy, rows = task.compare(predictions, task.ground_truth(manifest))
    assert [r["correct"] for r in rows] == correct
    assert accuracy == pytest.approx(100 * np.mean(correct))


def test_csr_head_file_holds_the_models_norm_and_lm_head(csr_run):
    _, _, _, head, _, net, tokenizer = csr_run
    state = torch.load(head, weights_only=True)
    assert torch.equal(state["norm.weight"], net.model.norm.weight.detach())
    assert torch.equal(state["lm_head.weight"], net.lm_head.weight.detach())
    assert state["eps"] == net.config.rms_norm_eps
    # SmolLM2's answer tokens: the letters A-E with and without a leading space (token strings, byte-level BPE).
    names = ["A", "B", "C", "D", "E", "ĠA", "ĠB", "ĠC", "ĠD", "ĠE"]
    expected = dict(zip(tokenizer.convert_tokens_to_ids(names), [n[-1] for n in names], strict=True))
    letters = ["ABCDE"[i] for i in state["letter_of"].tolist()]
    assert dict(zip(state["letter_ids"].tolist(), letters, strict=True)) == expected


def test_csr_prediction_is_the_argmax_tokens_stripped_text(csr_run, tmp_path):
    """A token decoding to "A." is not the answer A; one decoding to "\\tC\\n" is C; a special token is none."""
    _, _, _, _, task, _, tokenizer = csr_run
    llama = _llama3_like_tokenizer(tokenizer)
    letters = answer_tokens(llama)
    picks = [*llama.convert_tokens_to_ids(["ĠB", "A.", "\tC\n", " B)", "<|eot_id|>"])]
    assert letters[picks[0]] == "B" and letters[picks[2]] == "C"
    dim = len(picks)
    weight = torch.zeros(len(llama), dim)
    for j, token in enumerate(picks):
        weight[token, j] = 1.0
    torch.save({"norm.weight": torch.ones(dim), "eps": 1e-5, "lm_head.weight": weight,
                "letter_ids": torch.tensor(sorted(letters)),
                "letter_of": torch.tensor(["ABCDE".index(letters[i]) for i in sorted(letters)])},
               tmp_path / "head.pt")  # fmt: skip
    features = [np.eye(dim, dtype=np.float32)[j].reshape(1, 1, 1, dim) * 3 for j in range(dim)]
    predictions = task.predict(tmp_path / "head.pt", features)
    assert predictions == ["B", f"<token {picks[1]}>", "C", f"<token {picks[3]}>", f"<token {picks[4]}>"]
    accuracy, _ = task.compare(predictions, ["B", "A", "C", "B", "A"])
    assert accuracy == pytest.approx(40.0)
