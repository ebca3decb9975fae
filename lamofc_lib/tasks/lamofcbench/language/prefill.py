"""The split of LaMoFCBench's language scenarios (rows 6-10), at prefill: what crosses after decoder layer `layer`
(0-based; the reference's 4) is the hidden state that layer returns and the caches layers 0..layer hold after the
prompt, which every generation step then reads.

- An attention model (Llama, SmolLM2, Qwen3): `output` (1, T, D) and `key.<i>`, `value.<i>` (1, kv heads, T,
  head size) of layers 0..layer: transformers' cache `layers[i].keys / .values`.
- A Mamba model (FalconMamba): `output` and `ssm_state.<i>` (1, intermediate, state size) and `conv_state.<i>`
  (1, intermediate, kernel) of layers 0..layer: the cache's `layers[i].recurrent_states[0] / .conv_states[0]`.

A forward hook (with kwargs: the cache is the layer's `past_key_values` or `cache_params`) on the split layer
fires at the prompt's pass, the layer's first call (the reference skips calls on one token, the decoding steps).
At extraction it records the tensors (and may stop the generation there: `stop`); at scoring it returns the
decoded hidden state, which layers layer+1.. read at prefill, and overwrites the caches of layers 0..layer in
place, which every decoding step reads. The prompt's own pass through layers 0..layer attended with the
original caches, as in the reference. Decoding steps are not coded again (as the reference).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import numpy as np
import torch

OUTPUT = "output"
"""The split layer's hidden state."""


class PrefillCaptured(Exception):
    """Raised by the hook of an extraction with `stop`: the prompt's pass recorded the split, nothing more runs."""


def decoder_layers(net) -> torch.nn.ModuleList:
    """The decoder layers of a causal LM: `model.layers` (Llama, Qwen3) or `backbone.layers` (FalconMamba)."""
    base = getattr(net, "backbone", None) or getattr(net, "model", None)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"{type(net).__name__}: no decoder layers at model.layers or backbone.layers")
    return layers


def is_mamba(config) -> bool:
    """Whether a model's caches are a Mamba model's states (else an attention model's keys and values)."""
    return getattr(config, "model_type", "") in ("mamba", "falcon_mamba")


def tensor_names(config, layer: int) -> list[str]:
    """The split's tensors in the reference's order: output, then each cached layer's two tensors."""
    pair = ("ssm_state", "conv_state") if is_mamba(config) else ("key", "value")
    return [OUTPUT, *(f"{kind}.{i}" for kind in pair for i in range(layer + 1))]


def cache_tensors(cache, layer: int) -> dict[str, torch.Tensor]:
    """The cache's tensors of layers 0..layer (the live tensors, not copies), in `tensor_names`' order."""
    first, second = {}, {}
    for i in range(layer + 1):
        entry = cache.layers[i]
        if hasattr(entry, "keys") and torch.is_tensor(entry.keys):
            first[f"key.{i}"], second[f"value.{i}"] = entry.keys, entry.values
        elif hasattr(entry, "recurrent_states"):
            first[f"ssm_state.{i}"], second[f"conv_state.{i}"] = entry.recurrent_states[0], entry.conv_states[0]
        else:
            raise ValueError(f"cache layer {i} ({type(entry).__name__}) holds neither keys nor Mamba states")
    return {**first, **second}


def _cache(kwargs: Mapping):
    cache = kwargs.get("past_key_values") or kwargs.get("cache_params")
    if cache is None:
        raise RuntimeError("the split layer ran without a cache: generate, or call the model with use_cache=True")
    return cache


def _put(name: str, value, own: torch.Tensor) -> torch.Tensor:
    value = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
    if tuple(value.shape) != tuple(own.shape):
        raise ValueError(f"decoded tensor '{name}' has shape {tuple(value.shape)}, the model's is {tuple(own.shape)}")
    return value.to(device=own.device, dtype=own.dtype)


@contextlib.contextmanager
def prefill_split(
    net, layer: int, decoded: Mapping | None = None, stop: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """While open, the prompt's pass through decoder layer `layer` records the split tensors into the yielded
    mapping (copies, in the model's dtypes). With `decoded` (name -> array or tensor, the split's every tensor),
    they replace the originals: the hidden state as the layer's output, the caches in place. With `stop`, the
    pass raises PrefillCaptured once they are recorded (catch it: an extraction needs nothing more)."""
    found: dict[str, torch.Tensor] = {}
    calls = [0]

    def hook(module, args, kwargs, output):
        calls[0] += 1
        if calls[0] > 1:  # a decoding step
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        caches = cache_tensors(_cache(kwargs), layer)
        found[OUTPUT] = hidden.detach().clone()
        found.update({name: value.detach().clone() for name, value in caches.items()})
        if stop:
            raise PrefillCaptured
        if decoded is None:
            return None
        missing = sorted(set(found) - set(decoded))
        if missing:
            raise ValueError(f"decoded tensors lack {missing}")
        for name, own in caches.items():
            own.copy_(_put(name, decoded[name], own))
        value = _put(OUTPUT, decoded[OUTPUT], hidden)
        return (value, *output[1:]) if isinstance(output, tuple) else value

    handle = decoder_layers(net)[layer].register_forward_hook(hook, with_kwargs=True)
    try:
        yield found
    finally:
        handle.remove()
