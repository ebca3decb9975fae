"""The language scenarios' models: a hub id, a local folder or a package's model (a GGUF file: the folder
convert_model made of it), as csr loads them; or, with `model.random_init`, a seeded model of one of
transformers' architectures (`model_type`: qwen3, falcon_mamba, ...) on the named model's tokenizer, its
vocabulary that tokenizer's (the demo's tiny Qwen3 and FalconMamba read SmolLM2's tokens and chat template).
"""

from __future__ import annotations

from collections.abc import Mapping

from lamofc_lib.tasks.base import torch_dtype
from lamofc_lib.tasks.lamofc.csr import llm_config, load_llm, load_tokenizer


def _tokenizer_model(model: Mapping) -> dict:
    return {k: v for k, v in model.items() if k != "random_init"}


def lm_config(model: Mapping):
    """The model's transformers configuration without its weights."""
    if not model.get("random_init"):
        return llm_config(model)
    return _seeded_config(model, load_tokenizer(_tokenizer_model(model)))


def _seeded_config(model: Mapping, tokenizer):
    """The configuration model.random_init gives, its vocabulary and special tokens the tokenizer's."""
    from transformers import AutoConfig

    init = model["random_init"]
    if not init.get("model_type"):
        raise ValueError("model.random_init.model_type: not set; name a transformers architecture (qwen3, ...)")
    special = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    settings = {k: v for k, v in init.items() if k not in ("seed", "model_type")}
    values = {"vocab_size": len(tokenizer), **{k: v for k, v in special.items() if v is not None}, **settings}
    return AutoConfig.for_model(init["model_type"], **values)


def load_lm(model: Mapping, device: str):
    """(model, tokenizer) in the configured dtype (model.dtype)."""
    init = model.get("random_init")
    if not init:
        return load_llm(model, device)
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(_tokenizer_model(model))
    config = _seeded_config(model, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(init.get("seed", 0)))
        net = AutoModelForCausalLM.from_config(config)
    net = net.to(device=device, dtype=torch_dtype(model.get("dtype", "float32")))
    return net.eval(), tokenizer
