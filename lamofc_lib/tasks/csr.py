"""Common-sense reasoning with a Llama-architecture LLM on ARC-Challenge (task csr).

Split: the output of a decoder layer before the final RMSNorm (layer 32, the last, of Llama3-8B), taken with
a forward hook: 1 x 1 x N x D for an N-token prompt. Head: final RMSNorm and lm_head on the last position,
greedy next token; the prediction is that token's answer letter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lamofc_lib.sources import LETTERS
from lamofc_lib.store import write_store
from lamofc_lib.tasks.base import Task, model_source, split_layers, torch_dtype

ANSWER_PREFIX = "The best answer is"


def load_llm(model: Mapping, device: str):
    """(model, tokenizer) from a hub id, a local folder or a package folder, optionally a GGUF file in it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model.get("random_init"):
        raise ValueError("task csr needs a tokenizer: set model.id or model.package, not model.random_init")
    source = model_source(model)
    kwargs = {"gguf_file": model["gguf_file"]} if model.get("gguf_file") else {}
    if kwargs and not (Path(source) / model["gguf_file"]).is_file():
        raise FileNotFoundError(f"GGUF file {Path(source) / model['gguf_file']} does not exist (model.gguf_file)")
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    net = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype(model.get("dtype", "float32")), **kwargs)
    return net.to(device).eval(), tokenizer


def chat_prompt(tokenizer, user: str) -> str:
    """The model's chat template around the question, with the answer prefix the model continues."""
    messages = [{"role": "user", "content": user}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return text + ANSWER_PREFIX


def letter_tokens(tokenizer) -> dict[int, str]:
    """Every vocabulary entry that decodes to an answer letter (with or without a leading space)."""
    ids = range(len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in ids])
    return {i: t.strip() for i, t in zip(ids, texts, strict=True) if t.strip() in set(LETTERS)}


class ReasoningTask(Task):
    name = "csr"
    metric = "accuracy"

    def extract(self, manifest: pd.DataFrame, model, split, head, features: Path, head_out: Path) -> None:
        layers = split_layers(split)
        if len(layers) != 1:
            raise ValueError(f"task csr takes one split layer, got {layers} (tasks.csr.split)")
        net, tokenizer = load_llm(model, self.device)
        decoder = net.model.layers
        layer = layers[0]
        if not 1 <= layer <= len(decoder):
            raise ValueError(f"tasks.csr.split: layer {layer} is outside the model's 1..{len(decoder)}")
        letters = letter_tokens(tokenizer)
        torch.save(
            {
                "norm.weight": net.model.norm.weight.detach().cpu(),
                "eps": float(net.config.rms_norm_eps),
                "lm_head.weight": net.lm_head.weight.detach().cpu(),
                "letter_ids": torch.tensor(sorted(letters)),
                "letter_of": torch.tensor([LETTERS.index(letters[i]) for i in sorted(letters)]),
            },
            head_out,
        )
        encoded = [
            tokenizer(chat_prompt(tokenizer, text), add_special_tokens=False, return_tensors="pt")["input_ids"]
            for text in manifest["text"]
        ]
        shapes = [(1, 1, ids.shape[1], net.config.hidden_size) for ids in encoded]
        captured: list[torch.Tensor] = []

        def hook(_module, _inputs, output):
            captured.append((output[0] if isinstance(output, tuple) else output).detach())

        def samples():
            handle = decoder[layer - 1].register_forward_hook(hook)
            try:
                for ids, shape in zip(encoded, shapes, strict=True):
                    captured.clear()
                    with torch.no_grad():
                        net.model(input_ids=ids.to(self.device))
                    yield captured[0].float().cpu().numpy().reshape(shape)
            finally:
                handle.remove()

        attrs = {
            "task": self.name,
            "model": {k: v for k, v in model.items() if v is not None},
            "split": {"layer": layer, "where": "decoder layer output, before the final RMSNorm (forward hook)"},
            "extraction": {"prompt": "ARC four-choice prompt in the chat template", "answer_prefix": ANSWER_PREFIX,
                           "device": self.device},
        }  # fmt: skip
        write_store(features, list(manifest["sample_id"]), shapes, samples(), attrs=attrs)

    def predict(self, head: Path, features: Iterable[np.ndarray]) -> list[str]:
        from transformers.models.llama.modeling_llama import LlamaRMSNorm

        state = torch.load(head, map_location="cpu", weights_only=True)
        weight = state["lm_head.weight"].to(self.device)
        norm = LlamaRMSNorm(weight.shape[1], eps=float(state["eps"])).to(self.device, weight.dtype)
        norm.load_state_dict({"weight": state["norm.weight"]})
        letter_of = dict(zip(state["letter_ids"].tolist(), state["letter_of"].tolist(), strict=True))
        out = []
        for x in features:
            last = torch.from_numpy(np.ascontiguousarray(x[0, 0, -1:])).to(self.device, weight.dtype)
            with torch.no_grad():
                token = int((norm(last) @ weight.T).argmax(dim=-1)[0])
            out.append(LETTERS[letter_of[token]] if token in letter_of else f"<token {token}>")
        return out
