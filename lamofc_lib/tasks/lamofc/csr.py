"""Common-sense reasoning with a Llama-architecture LLM on ARC-Challenge (task csr).

As in the reference implementation: the prompt is one string (`tasks.csr_prompt.arc_prompt`, Llama-3's header tokens
written out, no chat template applied here) tokenized the way a transformers text-generation pipeline does
(the tokenizer's own special tokens: Llama-3 prepends its BOS; SmolLM2's tokenizer adds none and reads the header
tokens as plain text). Split: the output of a decoder layer before the final RMSNorm (layer 32, the last, of
Llama3-8B), taken with a forward hook: 1 x 1 x N x D for an N-token prompt, stored as float32 (exact for bf16).
Head: the final RMSNorm and lm_head in the model's dtype, greedy (argmax) next token at the last position; the
prediction is the token's decoded text, stripped, which is correct iff it equals the answer letter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lamofc_lib.selection import Policy, check_correct, pick
from lamofc_lib.sources.arc import ArcDemo, ArcFile
from lamofc_lib.tasks.base import Extraction, Layout, Task, model_source, split_layers, torch_dtype
from lamofc_lib.tasks.lamofc.csr_prompt import ARC_ANSWER_LETTERS

if TYPE_CHECKING:
    import pandas as pd
    import torch


def _gguf_kwargs(model: Mapping, source: str) -> dict:
    if not model.get("gguf_file") or model.get("converted"):
        return {}
    if not (Path(source) / model["gguf_file"]).is_file():
        raise FileNotFoundError(f"GGUF file {Path(source) / model['gguf_file']} does not exist (model.gguf_file)")
    return {"gguf_file": model["gguf_file"]}


def _source(model: Mapping) -> str:
    if model.get("random_init"):
        raise ValueError("task csr needs a tokenizer: set model.id or model.package, not model.random_init")
    if model.get("converted"):  # the GGUF model dequantized once into a plain folder (convert_gguf)
        return str(model["converted"])
    return model_source(model)


def llm_config(model: Mapping):
    """The model's configuration without its weights (config.json, or a GGUF file's metadata)."""
    from transformers import AutoConfig

    source = _source(model)
    return AutoConfig.from_pretrained(source, **_gguf_kwargs(model, source))


def load_tokenizer(model: Mapping):
    from transformers import AutoTokenizer

    source = _source(model)
    return AutoTokenizer.from_pretrained(source, **_gguf_kwargs(model, source))


def load_llm(model: Mapping, device: str):
    """(model, tokenizer) from a hub id, a local folder or a package folder, optionally a GGUF file in it (or the
    folder convert_gguf made of it: `converted`), in the configured dtype (model.dtype)."""
    from transformers import AutoModelForCausalLM

    source = _source(model)
    kwargs = _gguf_kwargs(model, source)
    tokenizer = load_tokenizer(model)
    net = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype(model.get("dtype", "float32")), **kwargs)
    return net.to(device).eval(), tokenizer


@contextlib.contextmanager
def _gguf_read_once():
    """While open, the gguf package's file reader and tensor-name maps are made once per file (per architecture
    and depth) and shared: transformers parses the GGUF file's metadata (SmolLM2's 49,152 tokens and their merges,
    in Python) once for the tokenizer, once for the config and once for the weights, and builds the same name map
    once per tensor (397 times for SmolLM2-135M). Both are read-only after they are made, so sharing them changes
    no result: the six files written are the same, byte for byte, and the converted model's weights, tokens and
    logits are checked against the GGUF file's in tests/test_workflow.py. SmolLM2-135M's conversion took 22.0 s
    with them shared against 44.9 s (2026-12-07, one run each, the machine otherwise idle)."""
    import functools

    import gguf

    original = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader, gguf.get_tensor_name_map = functools.cache(original[0]), functools.cache(original[1])
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original


def convert_gguf(model: Mapping, out: Path) -> None:
    """Write a GGUF model (model.gguf_file) as a plain transformers folder (config, float32 safetensors,
    tokenizer) at `out`, so the jobs that run it load it in a fraction of a second instead of dequantizing the
    GGUF file each time (SmolLM2-135M: 0.2 s instead of 19 s; the weights, tokens and logits are equal)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = model_source(model)
    kwargs = _gguf_kwargs({k: v for k, v in model.items() if k != "converted"}, source)
    if not kwargs:
        raise ValueError("convert_gguf: the model has no gguf_file")
    with _gguf_read_once():
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        quantized = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)  # transformers refuses to save a model marked GGUF-quantized
    plain = AutoModelForCausalLM.from_config(type(quantized.config).from_dict(config))
    plain.load_state_dict(quantized.state_dict())
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def encode_prompt(tokenizer, prompt: str) -> dict[str, torch.Tensor]:
    """Token ids and attention mask of one prompt string, as a text-generation pipeline's preprocessing makes
    them: the tokenizer's default `add_special_tokens=True` (transformers 5 passes no `add_special_tokens` unless
    the caller sets it), so a tokenizer with a BOS post-processor (Llama-3) prepends it once."""
    encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=True)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def answer_tokens(tokenizer) -> dict[int, str]:
    """The vocabulary entries whose generated text, stripped, is an answer letter (A-E), with that letter.

    The text is what a text-generation pipeline returns for one new token (`return_full_text=False`): the
    token decoded with `skip_special_tokens=True` (and the tokenizer's clean-up setting, which only removes
    spaces, so it cannot make or unmake a bare letter). A token such as "A." is not an answer."""
    ids = list(range(len(tokenizer)))
    texts = tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=True)
    return {i: t.strip() for i, t in zip(ids, texts, strict=True) if t.strip() in set(ARC_ANSWER_LETTERS)}


def decoder_output(net, layer: int, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The output of decoder layer `layer` (1-based) for one tokenized prompt (batch 1): 1 x N x D in the model's
    dtype, before the final RMSNorm (transformers' last hidden state is after it), taken with a forward hook."""
    import torch

    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        captured.append((output[0] if isinstance(output, tuple) else output).detach())

    device = next(net.parameters()).device
    handle = net.model.layers[layer - 1].register_forward_hook(hook)
    try:
        with torch.no_grad():
            net.model(**{k: v.to(device) for k, v in inputs.items()}, use_cache=False)
    finally:
        handle.remove()
    return captured[0]


def head_state(net) -> dict:
    """The parts of the model the head applies: final RMSNorm (weight, eps) and lm_head, in the model's dtype."""
    return {
        "norm.weight": net.model.norm.weight.detach().cpu(),
        "eps": float(net.config.rms_norm_eps),
        "lm_head.weight": net.lm_head.weight.detach().cpu(),
    }


def head_logits(state: Mapping, hidden: torch.Tensor) -> torch.Tensor:
    """Final RMSNorm then lm_head on hidden states (... x D), computed in the head's dtype as the model does."""
    import torch
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    weight = state["lm_head.weight"]
    norm = LlamaRMSNorm(weight.shape[1], eps=float(state["eps"])).to(weight.device, weight.dtype)
    norm.load_state_dict({"weight": state["norm.weight"].to(weight.device)})
    with torch.no_grad():
        return torch.nn.functional.linear(norm(hidden.to(weight.device, weight.dtype)), weight)


class CorrectLongest(Policy):
    """The reference's csr selection: of the questions the uncompressed model answers correctly, the `samples`
    with the longest prompts (characters of the prompt string; ties: earlier in the file), kept in file order."""

    policy = "correct_longest"
    description = "csr: the questions answered correctly with the longest prompts"
    kinds = ("arc", "arc_demo")
    needs_model = True

    @classmethod
    def select(cls, task, candidates, samples, source, correct):
        correct = check_correct(task, candidates, correct, samples)
        lengths = candidates["text"].str.len().to_numpy()
        order = sorted((i for i in range(len(correct)) if correct[i]), key=lambda i: (-lengths[i], i))
        chosen = set(order[:samples])
        kept = [i in chosen for i in range(len(correct))]
        reasons = [
            "" if k else ("incorrect" if not ok else "shorter prompt") for k, ok in zip(kept, correct, strict=True)
        ]
        return pick(candidates, kept, reasons)


class ReasoningTask(Task):
    """The head is the model's own answer when the split is the last decoder layer (the paper's 32 of 32; the
    demo's 30 of 30); at an earlier split it reads that layer's output with the final norm and lm_head directly."""

    name = "csr"
    packing = "plane"
    metric = "accuracy"
    metric_label = "accuracy (%)"
    sources = (ArcFile, ArcDemo)
    policies = (CorrectLongest,)
    preload = ("transformers:AutoModelForCausalLM", "transformers:AutoTokenizer")
    reference_policy = "correct_longest"

    def _layer(self, split, layers_in_model: int) -> int:
        layers = split_layers(split)
        if len(layers) != 1:
            raise ValueError(f"task csr takes one split layer, got {layers} (tasks.csr.split)")
        if not 1 <= layers[0] <= layers_in_model:
            raise ValueError(f"tasks.csr.split: layer {layers[0]} is outside the model's 1..{layers_in_model}")
        return layers[0]

    def write_head(self, model, split, head, head_out: Path) -> None:
        """Final RMSNorm, eps and lm_head of the model (loaded in its configured dtype), and the answer tokens:
        `letter_ids` with `letter_of`, the index of each one's letter in ARC_ANSWER_LETTERS."""
        import torch

        self._layer(split, llm_config(model).num_hidden_layers)
        net, tokenizer = load_llm(model, "cpu")
        letters = answer_tokens(tokenizer)
        ids = sorted(letters)
        state = head_state(net) | {
            "letter_ids": torch.tensor(ids, dtype=torch.long),
            "letter_of": torch.tensor([ARC_ANSWER_LETTERS.index(letters[i]) for i in ids], dtype=torch.long),
        }
        torch.save(state, head_out)

    def layout(self, manifest: pd.DataFrame, model, split) -> Layout:
        config = llm_config(model)
        layer = self._layer(split, config.num_hidden_layers)
        attrs = {
            "task": self.block,
            "model": {k: v for k, v in model.items() if v is not None},
            "split": {"layer": layer, "where": "decoder layer output, before the final RMSNorm (forward hook)"},
            "extraction": {
                "prompt": "the reference's ARC prompt string (tasks.csr_prompt.arc_prompt), no chat template",
                "tokenization": "tokenizer defaults (add_special_tokens=True), as a text-generation pipeline",
            },
        }
        return Layout([(1, 1, None, config.hidden_size)] * len(manifest), attrs, "float32")

    def features(self, manifest: pd.DataFrame, model, split) -> Extraction:
        layout = self.layout(manifest, model, split)
        layer = layout.attrs["split"]["layer"]
        net, tokenizer = load_llm(model, self.device)
        self._layer(layer, len(net.model.layers))
        encoded = [encode_prompt(tokenizer, text) for text in manifest["text"]]
        shapes = [(1, 1, int(e["input_ids"].shape[1]), net.config.hidden_size) for e in encoded]

        def samples():
            for inputs, shape in zip(encoded, shapes, strict=True):
                yield decoder_output(net, layer, inputs).float().cpu().numpy().reshape(shape)

        attrs = {**layout.attrs, "extraction": {**layout.attrs["extraction"], "device": self.device}}
        return Extraction(shapes, samples(), attrs, "float32")

    def predict(self, head: Path, features: Iterable[np.ndarray]) -> list[str]:
        """The greedy next token's stripped text when it is an answer letter, else `<token N>`."""
        import torch

        state = torch.load(head, map_location="cpu", weights_only=True)
        state = {**state, "lm_head.weight": state["lm_head.weight"].to(self.device)}
        letter_of = dict(zip(state["letter_ids"].tolist(), state["letter_of"].tolist(), strict=True))
        out = []
        for x in features:
            # As the reference's model (transformers 4.43): the bf16 feature (decoded features cast to bf16), the
            # lm_head over all N positions in the model's dtype, the float argmax of the last position's logits
            # (the first index among ties).
            hidden = torch.from_numpy(np.ascontiguousarray(x[0, 0]))
            token = int(head_logits(state, hidden)[-1].float().argmax())
            out.append(ARC_ANSWER_LETTERS[letter_of[token]] if token in letter_of else f"<token {token}>")
        return out
