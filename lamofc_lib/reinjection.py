"""Split points inside a model's forward pass: capturing the tensors there (extraction) and putting decoded tensors
back in their place (scoring), one mechanism for every LaMoFCBench scenario.

A scenario names its split points as `tensor name -> module path` (e.g. `{"layer.9": "model.layer.9"}`, a
module of `model.named_modules()`), optionally with the element of the module's output that is the tensor
(`"backbone.blocks.9[0]"`: element 0 of a tuple or list output). Forward hooks on those modules:

- `captured` records each split tensor as the module returns it (detached, in its own dtype);
- `injected` returns, in the module's place, the decoded tensor of that name, so that everything after the split
  point (the following blocks and the head) runs on it, as the reference's evaluation scripts do. The decoded
  tensor is cast to the output's own dtype and device, and must have its shape (a different shape is refused,
  naming the tensor and the module).

A scenario whose split tensors are a batch (LaMoFCBench codes each batch item of a level as its own frame,
`layer.9.0`, `layer.9.1`, ...) splits and joins them with `batch_items` and `join_items`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping

import numpy as np
import torch

_POINT = re.compile(r"^(?P<module>[\w.]+?)(?:\[(?P<index>\d+)\])?$")


def _parse(point: str) -> tuple[str, int | None]:
    match = _POINT.match(point)
    if not match:
        raise ValueError(f"split point {point!r} is not 'module.path' or 'module.path[index]'")
    index = match["index"]
    return match["module"], None if index is None else int(index)


def _module(model: torch.nn.Module, path: str) -> torch.nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ValueError(f"the model has no module '{path}' (a split point)") from None


def _element(output, index: int | None, point: str) -> torch.Tensor:
    value = output if index is None else output[index]
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"split point {point}: the module's output is a {type(value).__name__}, not a tensor")
    return value


@contextlib.contextmanager
def captured(model: torch.nn.Module, points: Mapping[str, str]) -> Iterator[dict[str, torch.Tensor]]:
    """While the context is open, every forward pass records the tensor of each split point (`name -> module
    path`) into the yielded dict, detached (the last call of a module wins)."""
    found: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for name, point in points.items():
            path, index = _parse(point)

            def hook(module, args, output, name=name, index=index, point=point):
                found[name] = _element(output, index, point).detach()

            handles.append(_module(model, path).register_forward_hook(hook))
        yield found
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def injected(
    model: torch.nn.Module, points: Mapping[str, str], tensors: Mapping[str, torch.Tensor | np.ndarray]
) -> Iterator[None]:
    """While the context is open, each split point's module (`name -> module path`) returns `tensors[name]`
    instead of its own output (or, for `path[i]`, its output with element i replaced), in the output's dtype
    and on its device. Every name of `points` needs a tensor."""
    missing = sorted(set(points) - set(tensors))
    if missing:
        raise KeyError(f"no decoded tensor for the split points {missing}")
    handles = []
    try:
        for name, point in points.items():
            path, index = _parse(point)

            def hook(module, args, output, name=name, index=index, point=point):
                own = _element(output, index, point)
                value = torch.as_tensor(tensors[name])
                if tuple(value.shape) != tuple(own.shape):
                    raise ValueError(
                        f"decoded tensor '{name}' has shape {tuple(value.shape)}, the output of {point} has "
                        f"{tuple(own.shape)}"
                    )
                value = value.to(device=own.device, dtype=own.dtype)
                if index is None:
                    return value
                replaced = list(output)
                replaced[index] = value
                return type(output)(replaced) if isinstance(output, tuple) else replaced

            handles.append(_module(model, path).register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def batch_items(name: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """A batch (B, ...) as B tensors `name.0` ... `name.{B-1}` of shape (1, ...), as LaMoFCBench names them."""
    return {f"{name}.{b}": tensor[b : b + 1] for b in range(tensor.shape[0])}


def join_items(name: str, tensors: Mapping[str, torch.Tensor | np.ndarray]) -> torch.Tensor:
    """The batch of `batch_items`: `name.0`, `name.1`, ... (every one present, none missing) concatenated."""
    items = sorted((int(k[len(name) + 1 :]), k) for k in tensors if re.fullmatch(rf"{re.escape(name)}\.\d+", k))
    if not items or [i for i, _ in items] != list(range(len(items))):
        raise KeyError(f"the batch items of '{name}' are not {name}.0 ... {name}.N: {[k for _, k in items]}")
    return torch.cat([torch.as_tensor(tensors[k]) for _, k in items])
