"""The DINOv3 backbone of LaMoFCBench's vision scenarios: transformers' DINOv3ViTModel from a hub id or a local
folder (the release's `facebook/dinov3-vit7b16-pretrain-lvd1689m`, fp32), or built from `model.random_init` with
seeded random weights (the demo's and the tests' tiny DINOv3); its split points; its input transform.

Split points: the outputs of blocks (0-based, as the reference names them: `layer.9` is the output of block 9,
before the final norm), transformers' `model.layer.<b>` modules, each (B, 1 + registers + patches, D). A batch
item is its own tensor, `layer.<b>.<item>` (LaMoFCBench's frame layout), stored as (1, 1, T, D) and packed as
tokens: one T x D frame.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from lamofc_lib.tasks.base import model_source, torch_dtype

# random_init keys other than the DINOv3ViTConfig fields
RANDOM_INIT_KEYS = ("seed",)


def block_module(block: int) -> str:
    """The transformers module whose output is block `block`'s (0-based)."""
    return f"model.layer.{int(block)}"


def split_points(blocks: Sequence[int]) -> dict[str, str]:
    """`layer.<b>` -> the module path of each split block."""
    return {f"layer.{int(b)}": block_module(b) for b in blocks}


def dinov3_config(model: Mapping):
    """The backbone's configuration, without loading weights."""
    from transformers import AutoConfig, DINOv3ViTConfig

    if model.get("random_init"):
        values = {k: v for k, v in dict(model["random_init"]).items() if k not in RANDOM_INIT_KEYS}
        return DINOv3ViTConfig(**values)
    return AutoConfig.from_pretrained(model_source(model))


def load_dinov3(model: Mapping, device: str) -> torch.nn.Module:
    """The backbone in eval mode on `device`, in `model.dtype` (the reference: float32)."""
    return _load(_hashable(model), device)


@functools.lru_cache(maxsize=1)
def _load(key: tuple, device: str) -> torch.nn.Module:
    from transformers import DINOv3ViTModel

    model = dict(key)
    dtype = torch_dtype(model.get("dtype") or "float32")
    if model.get("random_init"):
        init = dict(model["random_init"])
        torch.manual_seed(int(init.get("seed", 0)))
        net = DINOv3ViTModel(dinov3_config(model)).to(dtype)
    else:
        net = DINOv3ViTModel.from_pretrained(model_source(model), dtype=dtype)
    return net.to(device).eval()


def _hashable(value):
    if isinstance(value, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    return value


def check_blocks(blocks: Sequence[int], config, where: str) -> list[int]:
    """The split blocks, each inside the backbone's 0 .. layers - 1."""
    layers = int(config.num_hidden_layers)
    bad = [b for b in blocks if not 0 <= int(b) < layers]
    if bad or not blocks:
        raise ValueError(f"{where}: blocks {list(blocks)} must be 0-based blocks of the backbone's {layers}")
    return sorted(int(b) for b in blocks)


def split_blocks(task: str, split, config) -> list[int]:
    """A scenario's split blocks, 0-based (its tensors' names), from its 1-based `split`, checked."""
    from lamofc_lib.tasks.base import split_layers

    return check_blocks([b - 1 for b in split_layers(split)], config, f"tasks.{task}.split")


def tokens(config, height: int, width: int) -> int:
    """Tokens of a height x width input: the class token, the registers and one per patch."""
    patch = int(config.patch_size)
    return 1 + int(config.num_register_tokens) + (height // patch) * (width // patch)


@contextlib.contextmanager
def release_code(repository: str | Path, needs: str):
    """The user's dinov3 clone (`model.repository`) importable while the context is open: the release's heads are
    code in that repository, which is not on PyPI. `needs` is the file the caller imports from (a clone without it
    is refused, naming it); a module the clone's code imports that this environment lacks is named with the fix."""
    root = Path(repository).expanduser()
    if not (root / needs).is_file():
        raise FileNotFoundError(
            f"model.repository {root} is not a dinov3 clone (no {needs}): clone facebookresearch/dinov3 and point "
            "model.repository at it, or set it to null for the heads of transformers' classes"
        )
    sys.path.insert(0, str(root))
    try:
        yield
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] == "dinov3":
            raise
        raise ModuleNotFoundError(
            f"the dinov3 clone's code at {root} imports {err.name}, which this environment lacks: install the "
            f"packages of its requirements.txt (e.g. .venv/bin/pip install {err.name}), torch and torchvision "
            "excepted (the project pins them)",
            name=err.name,
        ) from err
    finally:
        sys.path.remove(str(root))
