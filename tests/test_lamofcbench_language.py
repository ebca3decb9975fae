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
from lamofc_lib.tasks.lamofc.csr import load_llm
from lamofc_lib.tasks.lamofcbench.language.lm_tasks import build_task, sorted_docs
from lamofc_lib.tasks.lamofcbench.language.prefill import decoder_layers, prefill_split, tensor_names
from lamofc_lib.tasks.lamofcbench.language.scenario import ArcChallengeDocs, data_file

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
LAYER = 4  # the reference's split: after decoder layer 4 (0-based)


@pytest.fixture(scope="module")
def smollm2(smollm2_converted):
    """The demo's SmolLM2-135M-Instruct, dequantized from its GGUF file as rule convert_model does (conftest)."""
    return copy.deepcopy(smollm2_converted)


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


def _docs_file(tmp_path, docs) -> Path:
    path = tmp_path / "validation.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def _filtered(task, responses: list[str], key: str = "get_answer") -> list[str]:
    """lm-eval's filtered answers of `responses`, one per document in the task's order."""
    task.build_all_requests(apply_chat_template=False)
    for request, response in zip(task.instances, responses, strict=True):
        request.resps.append(response)
    task.apply_filters()
    return [r.filtered_resps[key] for r in task.instances]


HELLASWAG = [
    {"activity_label": "Baking", "ctx_a": "A cook mixes flour.", "ctx_b": "then she",
     "endings": ["bakes it.", "sings.", "runs away.", "sleeps."], "label": "0"},
    {"activity_label": "Home and Garden", "ctx_a": "[header] How to plant a tree [title] Dig a hole.",
     "ctx_b": "[step] Put THE tree in", "endings": ["[substeps] the hole.", "a car.", "  a box [title] now.", "x"],
     "label": "3"},
]  # fmt: skip


def test_hellaswag_cleans_wikihow_markup_capitalizes_ctx_b_and_letters_the_label(tmp_path):
    task = build_task("hellaswag", _docs_file(tmp_path, HELLASWAG))
    wikihow, baking = task.test_docs()  # the longer context and endings first
    # str.capitalize lowers the rest: "[step] Put THE" -> "[step] put the", then the markup goes
    assert wikihow["ctx"] == "Home and Garden: How to plant a tree. Dig a hole. put the tree in"
    # stripped before the markup goes: a space it leaves stays
    assert wikihow["endings_clean"] == [" the hole.", "a car.", "a box. now.", "x"]
    assert baking["ctx"] == "Baking: A cook mixes flour. Then she"
    assert [task.doc_to_target(d) for d in (wikihow, baking)] == ["D", "A"]
    assert task.doc_to_text(baking) == (
        "Given a context and four possible endings (A, B, C and D), choose the most plausible ending.\n"
        "Context: Baking: A cook mixes flour. Then she\nA. bakes it.\nB. sings.\nC. runs away.\nD. sleeps.\n"
        'Your response should end with "The best answer is [the_answer_letter]" where the [the_answer_letter] is '
        "one of A, B, C or D."
    )
    assert _filtered(task, [" E, or D", " b then C"]) == ["D", "C"]


def test_truthfulqa_letters_every_mc1_choice_and_its_target_is_always_a(tmp_path):
    docs = [
        {"question": "Short?", "mc1_targets": {"choices": ["yes", "no"], "labels": [1, 0]}},
        {"question": "Which is true?",
         "mc1_targets": {"choices": ["t", "f1", "f2", "f3", "f4"], "labels": [1, 0, 0, 0, 0]}},
    ]  # fmt: skip
    task = build_task("truthfulqa_mc1", _docs_file(tmp_path, docs))
    assert [d["question"] for d in task.test_docs()] == ["Which is true?", "Short?"]  # 14 + 7 against 6 + 5
    assert [task.doc_to_target(d) for d in task.test_docs()] == ["A", "A"]
    assert task.doc_to_text(task.test_docs()[0]) == (
        "Given the following question and candidate answers, choose the most truthful answer.\n"
        "Question: Which is true?\nA. t\nB. f1\nC. f2\nD. f3\nE. f4\n"
        'Your response should end with "The best answer is [the_answer_letter]" where the [the_answer_letter] is '
        "one of the options above."
    )
    assert _filtered(task, [" E", " Z? no, A"]) == ["E", "Z"]  # any capital letter


def test_winogrande_offers_a_and_b_and_its_target_is_ab_of_answer(tmp_path):
    docs = [
        {"sentence": "The _ is big.", "option1": "cat", "option2": "dog", "answer": "2"},
        {"sentence": "A long sentence with a _ in it.", "option1": "gap", "option2": "hole", "answer": "1"},
    ]
    task = build_task("winogrande", _docs_file(tmp_path, docs))
    assert [task.doc_to_target(d) for d in task.test_docs()] == ["A", "B"]  # 31 + 7 characters first
    assert task.doc_to_text(task.test_docs()[1]) == (
        "Fill in the blank (_) with the best option.\nSentence: The _ is big.\nA. cat\nB. dog\n"
        'Your response should end with "The best answer is [the_answer_letter]" where the [the_answer_letter] is '
        "A or B."
    )
    assert _filtered(task, [" C, D, then B", " I say A"]) == ["B", "A"]


def test_gsm8k_prompts_without_prefix_and_counts_the_last_number(tmp_path):
    docs = [
        {"question": "What is 2 + 3?", "answer": "2 + 3 = 5\n#### 5"},
        {"question": "How much is 600 + 600 dollars?", "answer": "It is 1,200.\n#### 1200"},
    ]
    task = build_task("gsm8k", _docs_file(tmp_path, docs))
    assert [d["question"] for d in task.test_docs()] == ["How much is 600 + 600 dollars?", "What is 2 + 3?"]
    task.build_all_requests(apply_chat_template=False)
    context, generation = task.instances[0].args
    assert context == "Question: How much is 600 + 600 dollars?\nAnswer:"
    assert generation["until"] == ["Question:", "</s>", "<|im_end|>"] and "max_gen_toks" not in generation
    responses = [" 600 and 600 make $1,200.", " 2 plus 3 is 5, not 6"]
    for request, response in zip(task.instances, responses, strict=True):
        request.resps.append(response)
    task.apply_filters()
    flexible = [r.filtered_resps["flexible-extract"] for r in task.instances]
    assert flexible == ["$1,200.", "6"] and [r.filtered_resps["strict-match"] for r in task.instances] == [
        "[invalid]",
        "[invalid]",
    ]
    targets = [task.doc_to_target(d) for d in task.test_docs()]
    value, rows = get_task("lm_gsm8k").compare([*flexible, "5."], [*targets, targets[1]])
    assert [row["correct"] for row in rows] == [True, False, True] and value == pytest.approx(200 / 3)


def test_every_language_scenario_reads_its_shipped_demo_documents():
    from lamofc_lib.tasks.lamofcbench.language.scenario import LmDocs

    kinds = {cls.kind: cls for cls in LmDocs.__subclasses__()}
    assert set(kinds) == {"arc_challenge_docs", "gsm8k_docs", "hellaswag_docs", "truthfulqa_mc1_docs",
                          "winogrande_docs"}  # fmt: skip
    for kind, cls in kinds.items():
        rows = cls.read({"kind": kind})
        assert len(rows) >= 5 and list(rows.sample_id) == [str(i) for i in range(len(rows))]
        assert rows.source.str.startswith("lamofc_lib/data/").all()
    with pytest.raises(Exception, match="no train documents are shipped"):
        kinds["gsm8k_docs"].read({"kind": "gsm8k_docs", "set": "train"})


TINY_LMS = {
    "qwen3": ({"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 6,
               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}, "bfloat16", ("key", "value")),
    # float32: without the mamba-ssm kernels a float16 model's SSM state stays float32 (the reference's: float16)
    "falcon_mamba": ({"model_type": "falcon_mamba", "hidden_size": 64, "state_size": 16, "num_hidden_layers": 6,
                      "expand": 2, "conv_kernel": 4}, "float32", ("ssm_state", "conv_state")),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(TINY_LMS))
def test_the_references_zst_files_import_as_the_tensors_the_scenario_extracts(smollm2, tmp_path, kind):
    """A seeded model of each architecture on SmolLM2's tokenizer (model.random_init, in the reference's dtype):
    its split written as the reference writes a sample (`sample<id>-layer4-item1.zst`: output and the lists of
    layers 0-4's two cache tensors, in the model's shapes and dtypes) imports as the extraction's store."""
    import io

    import zstandard

    from lamofc_lib.feature_files import import_features
    from lamofc_lib.store import FeatureStore, write_store

    init, dtype, pair = TINY_LMS[kind]
    model = {**smollm2, "dtype": dtype, "random_init": {"seed": 0, **init}}
    manifest = ArcChallengeDocs.read({"kind": "arc_challenge_docs"}).iloc[:2].reset_index(drop=True)
    task = get_task("lm_arc_challenge")
    extraction = task.features(manifest, model, LAYER + 1)
    samples = list(extraction.samples)
    write_store(tmp_path / "extracted.zarr", list(manifest.sample_id), extraction.tensors, iter(samples),
                attrs=extraction.attrs)  # fmt: skip
    files = tmp_path / "files"
    files.mkdir()

    def tensor(sample, name):
        x = sample[name] if name.startswith("key") or name.startswith("value") else sample[name][:, 0]
        return torch.from_numpy(np.ascontiguousarray(x)).to(getattr(torch, dtype))

    for sid, sample in zip(manifest.sample_id, samples, strict=True):
        saved = {"output": tensor(sample, "output")}
        saved.update({p: [tensor(sample, f"{p}.{i}") for i in range(LAYER + 1)] for p in pair})
        buffer = io.BytesIO()
        torch.save(saved, buffer)
        path = files / f"sample{sid}-layer4-item1.zst"
        path.write_bytes(zstandard.ZstdCompressor().compress(buffer.getvalue()))
    import_features(task, files, manifest, model, LAYER + 1, tmp_path / "imported.zarr")
    extracted, imported = FeatureStore(tmp_path / "extracted.zarr"), FeatureStore(tmp_path / "imported.zarr")
    assert imported.tensors == extracted.tensors == tensor_names(task_config_of(model), LAYER)
    for name in extracted.tensors:
        assert imported.layout(name).shapes == extracted.layout(name).shapes
        for i in range(len(manifest)):
            np.testing.assert_array_equal(imported.read(i, name), extracted.read(i, name))


def task_config_of(model):
    from lamofc_lib.tasks.lamofcbench.language.models import lm_config

    return lm_config(model)


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
