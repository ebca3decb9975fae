"""LaMoFCBench's language scenarios: the split after decoder layer 4 (hidden state and caches) recorded at the
prompt's pass and put back there, on SmolLM2 (the demo's real model) and tiny seeded Qwen3 and FalconMamba models;
lm-eval's ARC-Challenge task as the reference sets it up, on hand-made documents and outputs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lamofc_lib.tasks import get_task
from lamofc_lib.tasks.lamofc.csr import convert_gguf, load_llm
from lamofc_lib.tasks.lamofcbench.language.lm_tasks import build_task, sorted_docs
from lamofc_lib.tasks.lamofcbench.language.prefill import decoder_layers, prefill_split, tensor_names
from lamofc_lib.tasks.lamofcbench.language.scenario import ArcChallengeDocs, data_file

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
LAYER = 4  # the reference's split: after decoder layer 4 (0-based)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """The demo's SmolLM2-135M-Instruct, dequantized from its GGUF file as rule convert_model does."""
    folder = tmp_path_factory.mktemp("smollm2") / "model"
    model = copy.deepcopy(DEMO["tasks"]["csr"]["model"])
    convert_gguf(model, folder)
    return {**model, "converted": str(folder)}


def _tiny(kind: str):
    """A tiny seeded model of each cache kind: Qwen3 (keys and values, bfloat16 as the reference runs Qwen3-8B)
    and FalconMamba (SSM and convolution states)."""
    from transformers import FalconMambaConfig, FalconMambaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    if kind == "qwen3":
        config = Qwen3Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=7,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=16)  # fmt: skip
        return Qwen3ForCausalLM(config).to(torch.bfloat16).eval()
    config = FalconMambaConfig(vocab_size=300, hidden_size=64, state_size=16, num_hidden_layers=7, expand=2,
                               conv_kernel=4)  # fmt: skip
    return FalconMambaForCausalLM(config).eval()


def _generate(net, ids: torch.Tensor, decoded=None, tokens: int = 8):
    """Greedy tokens and every step's logits, with the split recorded (and replaced by `decoded`)."""
    with torch.no_grad(), prefill_split(net, LAYER, decoded) as found:
        out = net.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=False,
                           output_logits=True, return_dict_in_generate=True, pad_token_id=0)  # fmt: skip
    return out.sequences[0, ids.shape[1] :].tolist(), torch.stack(out.logits), dict(found)


def _models(smollm2):
    net, tokenizer = load_llm(smollm2, "cpu")
    prompt = tokenizer("The capital of France is a city called", return_tensors="pt").input_ids
    ids = torch.randint(5, 290, (1, 24), generator=torch.Generator().manual_seed(1))
    return {"smollm2": (net, prompt), "qwen3": (_tiny("qwen3"), ids), "falcon_mamba": (_tiny("falcon_mamba"), ids)}


@pytest.fixture(scope="module")
def models(smollm2):
    return _models(smollm2)


@pytest.mark.parametrize("name", ["smollm2", "qwen3", "falcon_mamba"])
def test_the_split_is_the_hidden_state_and_the_caches_of_layers_0_to_4(models, name):
    net, ids = models[name]
    outputs = []
    handle = decoder_layers(net)[LAYER].register_forward_hook(lambda m, a, out: outputs.append(out))
    with torch.no_grad():
        plain = net(ids, use_cache=True)
    handle.remove()
    _, _, found = _generate(net, ids, tokens=1)
    assert list(found) == tensor_names(net.config, LAYER)
    assert torch.equal(found["output"], outputs[0][0] if isinstance(outputs[0], tuple) else outputs[0])
    cache = plain.cache_params if name == "falcon_mamba" else plain.past_key_values
    for i in range(LAYER + 1):
        if name == "falcon_mamba":
            assert torch.equal(found[f"ssm_state.{i}"], cache.layers[i].recurrent_states[0])
            assert torch.equal(found[f"conv_state.{i}"], cache.layers[i].conv_states[0])
            assert found[f"ssm_state.{i}"].shape == (1, 128, 16) and found[f"conv_state.{i}"].shape == (1, 128, 4)
        else:
            assert torch.equal(found[f"key.{i}"], cache.layers[i].keys)
            assert torch.equal(found[f"value.{i}"], cache.layers[i].values)
            heads, size = net.config.num_key_value_heads, net.config.head_dim
            assert found[f"key.{i}"].shape == (1, heads, ids.shape[1], size)
    assert all(
        t.dtype == next(net.parameters()).dtype for k, t in found.items() if k != "output" or name != "falcon_mamba"
    )


@pytest.mark.parametrize("name", ["smollm2", "qwen3", "falcon_mamba"])
def test_injecting_the_uncompressed_split_generates_the_same_tokens_and_logits(models, name):
    net, ids = models[name]
    with torch.no_grad():
        plain = net.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                             output_logits=True, return_dict_in_generate=True, pad_token_id=0)  # fmt: skip
    tokens, logits, found = _generate(net, ids)
    again, logits_again, _ = _generate(net, ids, decoded=found)
    assert tokens == again == plain.sequences[0, ids.shape[1] :].tolist()
    assert torch.equal(logits, logits_again) and torch.equal(logits, torch.stack(plain.logits))


@pytest.mark.parametrize("name", ["smollm2", "qwen3", "falcon_mamba"])
def test_generation_reads_the_decoded_caches(models, name):
    """A layer-0 cache replaced by zeros: the first token's logits (the prompt's pass, after the split) stay as
    they were, every later step's change, so decoding reads the decoded cache, not one recomputed from the
    decoded hidden state; a perturbed hidden state changes the first step already."""
    net, ids = models[name]
    _, logits, found = _generate(net, ids)
    first = "ssm_state.0" if name == "falcon_mamba" else "key.0"
    zeroed = {**found, first: torch.zeros_like(found[first])}
    _, changed, _ = _generate(net, ids, decoded=zeroed)
    assert torch.equal(changed[0], logits[0])
    assert not torch.equal(changed[1], logits[1])
    noise = torch.randn(found["output"].shape, generator=torch.Generator().manual_seed(0))
    perturbed = {
        **found,
        "output": found["output"] + (0.5 * found["output"].float().std() * noise).to(found["output"].dtype),
    }
    _, changed, _ = _generate(net, ids, decoded=perturbed)
    assert not torch.equal(changed[0], logits[0])


def test_smollm2_generates_other_tokens_from_a_perturbed_cache(models):
    net, ids = models["smollm2"]
    tokens, _, found = _generate(net, ids, tokens=12)
    noise = torch.randn(found["key.0"].shape, generator=torch.Generator().manual_seed(0))
    perturbed = {**found, "key.0": found["key.0"] + 2 * found["key.0"].std() * noise}
    other, _, _ = _generate(net, ids, decoded=perturbed, tokens=12)
    assert other != tokens


def test_a_decoded_tensor_of_another_shape_is_refused(models):
    net, ids = models["smollm2"]
    _, _, found = _generate(net, ids, tokens=1)
    with pytest.raises(ValueError, match=r"decoded tensor 'value.3' has shape \(1, 3, 2, 64\)"):
        _generate(net, ids, decoded={**found, "value.3": found["value.3"][:, :, :2]}, tokens=1)


# --- lm-eval's ARC-Challenge as the reference sets it up ----------------------------------------------------------

HAND_MADE = [  # prompt lengths: question + every choice's characters (23, 34, 34)
    {"id": "a", "question": "Which one?", "choices": {"text": ["red", "green", "blue", "x"],
     "label": ["A", "B", "C", "D"]}, "answerKey": "B"},
    {"id": "b", "question": "Which animal is it?", "choices": {"text": ["cat", "dog", "cow", "pig", "hen"],
     "label": ["1", "2", "3", "4", "5"]}, "answerKey": "3"},
    {"id": "c", "question": "Which one is wet", "choices": {"text": ["water", "sand", "salt", "rock!"],
     "label": ["A", "B", "C", "D"]}, "answerKey": "A"},
]  # fmt: skip


@pytest.fixture
def hand_made(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in HAND_MADE))
    return path


def test_arc_documents_are_sorted_by_the_references_prompt_length_ties_in_file_order(hand_made):
    lengths = [len(d["question"]) + sum(map(len, d["choices"]["text"])) for d in HAND_MADE]
    assert lengths == [23, 34, 34]
    assert [d["id"] for d in sorted_docs("arc_challenge", HAND_MADE)] == ["b", "c", "a"]
    task = build_task("arc_challenge", hand_made)
    assert [d["id"] for d in task.test_docs()] == ["b", "c", "a"]
    candidates = ArcChallengeDocs.read({"kind": "arc_challenge_docs", "path": str(hand_made)})
    assert list(candidates.sample_id) == ["0", "1", "2"] and list(candidates.label) == ["C", "A", "B"]


def test_arc_prompt_shows_four_options_and_continues_after_the_prefix(hand_made):
    task = build_task("arc_challenge", hand_made)
    doc = task.test_docs()[0]  # five choices: the fifth is never shown
    assert task.doc_to_text(doc) == (
        "Given the following question and four candidate answers (A, B, C and D), choose the best answer.\n"
        "Question: Which animal is it?\nA. cat\nB. dog\nC. cow\nD. pig\n"
        'Your response should end with "The best answer is [the_answer_letter]" where the [the_answer_letter] is '
        "one of A, B, C or D."
    )
    task.build_all_requests(apply_chat_template=False)
    context, generation = task.instances[0].args
    assert context.startswith(task.doc_to_text(doc)) and context.endswith("The best answer is")
    assert generation["until"] == ["\n\n", "."] and generation["max_gen_toks"] == 100
    assert generation["do_sample"] is False and generation["temperature"] == 0.0


@pytest.mark.parametrize(
    ("response", "answer"),
    [
        (" C", "C"),
        (" [the_answer_letter] is B", "B"),
        (" [D]", "D"),
        (" I think A or B", "A"),
        (" none of them", "[invalid]"),  # lowercase letters are no answer; lm-eval's fallback
    ],
)
def test_the_answer_filter_takes_the_first_capital_letter_a_to_d(hand_made, response, answer):
    task = build_task("arc_challenge", hand_made)
    task.build_all_requests(apply_chat_template=False)
    for request in task.instances:
        request.resps.append(response)
    task.apply_filters()
    request = task.instances[0]
    assert request.filtered_resps["get_answer"] == answer


def test_exact_match_ignores_case_and_punctuation():
    task = get_task("lm_arc_challenge")
    value, rows = task.compare(["c", "B.", "A"], ["C", "B", "B"])
    assert [row["correct"] for row in rows] == [True, True, False] and value == pytest.approx(200 / 3)


def test_the_scenario_scores_the_uncompressed_split_as_the_model_answers_without_it(smollm2):
    """The scenario's own path (lm-eval's prompt and HFLM's generation): the answers from the extracted split
    put back equal those of lm-eval's wrapper run on the model with no hook; the reference's tensors, in the
    model's dtype."""
    from lm_eval.models.huggingface import HFLM

    manifest = ArcChallengeDocs.read({"kind": "arc_challenge_docs"}).iloc[:3].reset_index(drop=True)
    task = get_task("lm_arc_challenge")
    extraction = task.features(manifest, smollm2, LAYER + 1)
    samples = list(extraction.samples)
    assert set(samples[0]) == set(tensor_names(load_llm(smollm2, "cpu")[0].config, LAYER))
    assert samples[0]["key.2"].shape[:2] == (1, 3) and samples[0]["output"].shape[:2] == (1, 1)
    attrs = {**extraction.attrs, "sample_ids": list(manifest.sample_id)}
    answers = task.head_outputs(Path("unused"), samples, attrs)
    net, tokenizer = load_llm(smollm2, "cpu")
    lm = HFLM(pretrained=net, tokenizer=tokenizer, batch_size=1)
    assert manifest.source[0] == "lamofc_lib/data/arc_demo.jsonl"  # wherever the checkout lies
    lm_task = build_task("arc_challenge", data_file(manifest.source[0]))
    lm_task.build_all_requests(apply_chat_template=True, chat_template=lm.apply_chat_template, samples=[0, 1, 2])
    for request in lm_task.instances:
        request.resps.extend(lm.generate_until([request], disable_tqdm=True))
    lm_task.apply_filters()
    assert answers == [r.filtered_resps["get_answer"] for r in lm_task.instances]
    layers = {name: np.asarray(x) for name, x in samples[0].items()}
    assert all(np.isfinite(x).all() for x in layers.values())
