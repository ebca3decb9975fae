"""The official DINOv2 segmentation and depth evaluation heads, run on the features as the benchmark stores them
and the ImageNet linear probe of task cls.

Every head takes the split-point tokens as stored: an array N x C x T x D (N views or crops, C layers,
T = 1 + h * w tokens with the CLS token first, D the width), taken BEFORE the backbone's final LayerNorm.

* ``LinearHead`` (the DINOv2 ImageNet linear probe, task cls): final LayerNorm, then Linear(2 D, 1000) over
  concat(CLS token, mean of the patch tokens).
* ``SegmentationLinearHead`` (``dinov2_vitg14_voc2012_linear_head.pth``, the 'linear' config: last block only):
  final LayerNorm, CLS dropped, patch tokens as an h x w map (row-major), BatchNorm2d (eval, eps 1e-5) over the
  concatenated layer channels, 1x1 conv ``conv_seg`` -> 21 logits at the patch grid, then bilinear upsampling
  (align_corners False) to the crop size. Slide inference (crop 512, stride 341: ``slide_windows`` and
  ``stitch_windows``) and the resize to the original image belong to the caller.
* ``DepthLinear4Head`` (``dinov2_vitg14_nyu_linear4_head.pth``): NO final LayerNorm (the official config sets
  ``final_norm=False``); for each of the 4 layers the patch map followed by the CLS token broadcast over the map
  (2 D channels), layers concatenated in order (8 D channels), upsampled x4 (bilinear, align_corners False),
  1x1 conv ``conv_depth`` to 256 bins, 'linear' normalisation (relu + 0.1, divided by the sum), expectation over
  the bin centres linspace(0.001, 10, 256), clamped to [0.001, 10], optionally resized to the original image
  size (480 x 640 for NYU, from the 490 x 644 padded input's 35 x 46 grid). No BatchNorm: the official depth
  BNHead has its BatchNorm commented out, so its only weights are ``conv_depth``'s.

The segmentation and depth checkpoints are mmcv files: the state dict, possibly under ``state_dict`` next to
``meta``, with keys prefixed ``decode_head.``. ``checkpoint_spec`` lists the keys and shapes each head
requires and ``official_head`` checks and loads them; ``random_state_dict`` makes seeded weights in the same
format for a small demo model, so the demo and the real checkpoints go through the same loader.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lamofc_lib.sources.images import VOC_CLASSES
from lamofc_lib.tasks.base import load_head_file

IMAGENET_CLASSES = 1000
DEPTH_BINS = 256
DEPTH_LAYERS = 4
MIN_DEPTH = 0.001
MAX_DEPTH = 10.0
DEPTH_UPSAMPLE = 4
BN_EPS = 1e-5  # mmseg's SyncBatchNorm default
LN_EPS = 1e-6  # DINOv2's final LayerNorm

Features = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class FinalNorm:
    """The backbone's final LayerNorm: per-channel weight and bias [D] and its eps."""

    weight: torch.Tensor
    bias: torch.Tensor
    eps: float = LN_EPS

    @classmethod
    def from_module(cls, module: nn.LayerNorm) -> FinalNorm:
        """Copy a LayerNorm module's parameters (e.g. ``Dinov2Model.layernorm``)."""
        return cls(module.weight.detach().float().cpu(), module.bias.detach().float().cpu(), float(module.eps))

    @classmethod
    def identity(cls, dim: int, eps: float = LN_EPS) -> FinalNorm:
        """Plain standardisation (weight 1, bias 0)."""
        return cls(torch.ones(dim), torch.zeros(dim), eps)


class FinalLayerNorm(nn.Module):
    """LayerNorm whose weights, bias and eps live in buffers, so a saved head keeps the backbone's norm; it
    refuses to run until the backbone's values are set."""

    def __init__(self, dim: int, norm: FinalNorm | None = None):
        super().__init__()
        self.dim = dim
        self.register_buffer("weight", torch.ones(dim))
        self.register_buffer("bias", torch.zeros(dim))
        self.register_buffer("eps", torch.tensor(LN_EPS, dtype=torch.float64))
        self.register_buffer("ready", torch.tensor(False))
        if norm is not None:
            self.set(norm)

    def set(self, norm: FinalNorm) -> None:
        """Take the backbone's final LayerNorm values."""
        for name, value in (("weight", norm.weight), ("bias", norm.bias)):
            if tuple(value.shape) != (self.dim,):
                raise ValueError(f"final LayerNorm {name} has shape {tuple(value.shape)}, expected ({self.dim},)")
            getattr(self, name).copy_(torch.as_tensor(value, dtype=torch.float32))
        self.eps.fill_(float(norm.eps))
        self.ready.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bool(self.ready):
            raise RuntimeError("the head's final LayerNorm is not set: pass the backbone's (set_final_norm)")
        return F.layer_norm(x, (self.dim,), self.weight, self.bias, float(self.eps))


# ---------------------------------------------------------------------------------------------------------------
# Input handling


def _tokens(features: Features, device: torch.device, dim: int, layers: int | None = None) -> torch.Tensor:
    x = torch.as_tensor(np.ascontiguousarray(features) if isinstance(features, np.ndarray) else features)
    x = x.to(device=device, dtype=torch.float32)
    if x.ndim != 4:
        raise ValueError(f"features must be N x C x T x D, got shape {tuple(x.shape)}")
    if x.shape[-1] != dim:
        raise ValueError(f"features have width {x.shape[-1]}, the head expects {dim}")
    if layers is not None and x.shape[1] != layers:
        raise ValueError(f"features have {x.shape[1]} layers, the head expects {layers}")
    return x


def _grid(tokens: int, registers: int, grid: tuple[int, int] | None) -> tuple[int, int]:
    patches = tokens - 1 - registers
    if grid is None:
        side = math.isqrt(max(patches, 0))
        if side * side != patches or patches == 0:
            raise ValueError(f"{tokens} tokens do not form a square grid: pass grid=(h, w)")
        return side, side
    h, w = int(grid[0]), int(grid[1])
    if h * w != patches:
        raise ValueError(f"grid {h} x {w} needs {1 + registers + h * w} tokens, the features have {tokens}")
    return h, w


def _patch_maps(x: torch.Tensor, registers: int, h: int, w: int) -> torch.Tensor:
    """N x C x T x D tokens -> N x C x D x h x w maps of the patch tokens (row-major, as DINOv2 reshapes)."""
    n, c, _, d = x.shape
    return x[:, :, 1 + registers :].reshape(n, c, h, w, d).permute(0, 1, 4, 2, 3)


def _device(module: nn.Module) -> torch.device:
    return next(module.buffers()).device


# ---------------------------------------------------------------------------------------------------------------
# Heads


class LinearHead(nn.Module):
    """LayerNorm, then Linear over concat(CLS, mean(patch tokens))."""

    def __init__(self, dim: int, eps: float, classes: int = IMAGENET_CLASSES):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.linear = nn.Linear(2 * dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm(tokens)
        return self.linear(torch.cat([x[:, 0], x[:, 1:].mean(dim=1)], dim=-1))


class SegmentationLinearHead(nn.Module):
    """mmseg BNHead of the DINOv2 'linear' segmentation eval: LayerNorm -> patch map -> BatchNorm -> 1x1 conv."""

    def __init__(
        self,
        dim: int,
        classes: int = VOC_CLASSES,
        layers: int = 1,
        norm: FinalNorm | None = None,
        registers: int = 0,
        bn_eps: float = BN_EPS,
    ):
        super().__init__()
        self.dim, self.classes, self.layers, self.registers = dim, classes, layers, registers
        self.norm = FinalLayerNorm(dim, norm)
        self.bn = nn.BatchNorm2d(layers * dim, eps=bn_eps)
        self.conv_seg = nn.Conv2d(layers * dim, classes, kernel_size=1)
        self.eval()

    def set_final_norm(self, norm: FinalNorm) -> None:
        self.norm.set(norm)

    def forward(
        self, features: Features, grid: tuple[int, int] | None = None, size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """N x C x T x D tokens -> N x classes logits at the patch grid (h x w), or bilinearly upsampled to
        ``size`` (the crop's height and width: 512 x 512 for a full crop)."""
        x = self.norm(_tokens(features, _device(self), self.dim, self.layers))
        h, w = _grid(x.shape[2], self.registers, grid)
        maps = _patch_maps(x, self.registers, h, w).flatten(1, 2)  # layers concatenated in order
        bn = self.bn
        maps = F.batch_norm(maps, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
        logits = self.conv_seg(maps)
        if size is not None:
            logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
        return logits


class DepthLinear4Head(nn.Module):
    """DINOv2 'linear4' depth BNHead (classify, 'UD' bins, 'linear' norm, upsample 4, no BatchNorm)."""

    def __init__(
        self,
        dim: int,
        layers: int = DEPTH_LAYERS,
        bins: int = DEPTH_BINS,
        min_depth: float = MIN_DEPTH,
        max_depth: float = MAX_DEPTH,
        upsample: int = DEPTH_UPSAMPLE,
        registers: int = 0,
        norm: FinalNorm | None = None,
        final_norm: bool = False,
    ):
        super().__init__()
        self.dim, self.layers, self.bins, self.registers = dim, layers, bins, registers
        self.min_depth, self.max_depth, self.upsample = float(min_depth), float(max_depth), int(upsample)
        # The official config runs without the final LayerNorm; `final_norm=True` is only for experiments.
        self.norm = FinalLayerNorm(dim, norm) if final_norm else None
        self.conv_depth = nn.Conv2d(2 * layers * dim, bins, kernel_size=1)
        self.register_buffer("centres", torch.linspace(self.min_depth, self.max_depth, bins))

    def set_final_norm(self, norm: FinalNorm) -> None:
        if self.norm is None:
            raise ValueError("this depth head runs without the final LayerNorm (final_norm=False)")
        self.norm.set(norm)

    def feature_map(self, features: Features, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """The head's input at the patch grid: per layer [patch map, CLS broadcast], layers in order:
        N x 2CD x h x w."""
        x = _tokens(features, _device(self), self.dim, self.layers)
        if self.norm is not None:
            x = self.norm(x)
        h, w = _grid(x.shape[2], self.registers, grid)
        maps = _patch_maps(x, self.registers, h, w)
        cls = x[:, :, 0, :, None, None].expand_as(maps)
        return torch.cat([maps, cls], dim=2).flatten(1, 2)

    def forward(
        self,
        features: Features,
        grid: tuple[int, int] | None = None,
        size: tuple[int, int] | None = None,
        fused: bool = True,
    ) -> torch.Tensor:
        """N x C x T x D tokens -> N x 1 x (upsample h) x (upsample w) depth in metres, or resized to ``size``
        (the original image size). ``fused`` runs the 1x1 conv before the bilinear upsampling, which is the same
        linear map in another order (the official order, ``fused=False``, needs 8D x 16hw floats per view)."""
        feats = self.feature_map(features, grid)
        h, w = feats.shape[-2:]
        up = (h * self.upsample, w * self.upsample)
        if fused:
            logits = F.interpolate(self.conv_depth(feats), size=up, mode="bilinear", align_corners=False)
        else:
            logits = self.conv_depth(F.interpolate(feats, size=up, mode="bilinear", align_corners=False))
        weights = torch.relu(logits) + 0.1
        weights = weights / weights.sum(dim=1, keepdim=True)
        depth = torch.einsum("nkhw,k->nhw", weights, self.centres).unsqueeze(1)
        depth = depth.clamp(self.min_depth, self.max_depth)
        if size is not None:
            depth = F.interpolate(depth, size=tuple(size), mode="bilinear", align_corners=False)
        return depth


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_spec(
    kind: str, dim: int, *, layers: int | None = None, classes: int | None = None, bins: int = DEPTH_BINS
) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of an official head checkpoint (the state dict, after any ``state_dict`` wrapper)."""
    if kind == "seg":
        classes, channels = classes or VOC_CLASSES, (layers or 1) * dim
        return {
            "decode_head.bn.weight": (channels,),
            "decode_head.bn.bias": (channels,),
            "decode_head.bn.running_mean": (channels,),
            "decode_head.bn.running_var": (channels,),
            "decode_head.bn.num_batches_tracked": (),
            "decode_head.conv_seg.weight": (classes, channels, 1, 1),
            "decode_head.conv_seg.bias": (classes,),
        }
    if kind == "dpt":
        channels = 2 * (layers or DEPTH_LAYERS) * dim
        return {"decode_head.conv_depth.weight": (bins, channels, 1, 1), "decode_head.conv_depth.bias": (bins,)}
    raise ValueError(f"unknown head kind '{kind}'; known: seg, dpt")


OPTIONAL_KEYS = {"decode_head.bn.num_batches_tracked"}


def random_state_dict(
    kind: str, dim: int, seed: int = 0, *, layers: int | None = None, classes: int | None = None
) -> dict[str, torch.Tensor]:
    """Seeded random weights in the official key format and shapes, for a demo model of width ``dim``."""
    spec = checkpoint_spec(kind, dim, layers=layers, classes=classes)
    gen = torch.Generator().manual_seed(int(seed))
    state = {}
    for key, shape in spec.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=gen)
        elif key.endswith("bn.weight"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) >= 2:  # linear / conv weights
            state[key] = torch.randn(shape, generator=gen) / math.sqrt(shape[1])
        else:  # biases, BN shift and mean
            state[key] = 0.1 * torch.randn(shape, generator=gen)
    return state


def _numpy_safe_globals() -> list:
    """numpy scalars and dtypes, which mmcv's ``meta`` may hold; allowing them keeps ``weights_only`` loading."""
    allowed: list = [np.dtype]
    allowed += [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType")]
    core = getattr(np, "_core", None)
    scalar = getattr(getattr(core, "multiarray", None), "scalar", None)
    if scalar is not None:
        allowed += [scalar, (scalar, "numpy.core.multiarray.scalar")]
    return allowed


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a head checkpoint with ``base.load_head_file`` (``weights_only``, numpy scalars in mmcv's ``meta``
    allowed); unwrap mmcv's ``state_dict`` and strip ``module.``. Keys and shapes are checked afterwards, by
    ``check_state_dict``, since they lie under the wrapper."""
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = load_head_file(path, {})
    except (FileNotFoundError, ValueError):  # load_head_file's own errors (no file, no dict) name the file
        raise
    except Exception as err:  # torch raises many types for an unreadable file; all are reported the same way
        raise ValueError(f"head checkpoint {path} cannot be read as a weights-only torch file: {err}") from err
    if isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}


def check_state_dict(
    path: str | Path, state: Mapping[str, object], spec: Mapping[str, tuple[int, ...]], strict: bool
) -> None:
    """Raise ValueError naming the file and the first missing, unexpected or misshapen key. ``strict`` rejects
    every unexpected key; otherwise only unexpected ``decode_head.`` keys (another head's layout)."""
    missing = [k for k in spec if k not in state and k not in OPTIONAL_KEYS]
    if missing:
        have = sorted(state)
        more = f" and {len(have) - 10} more" if len(have) > 10 else ""
        raise ValueError(
            f"head checkpoint {path} lacks key '{missing[0]}' (missing: {missing}); it has {have[:10]}{more}"
        )
    extra = [k for k in state if k not in spec and (strict or k.startswith("decode_head."))]
    if extra:
        raise ValueError(f"head checkpoint {path} has unexpected key '{extra[0]}'; expected only {sorted(spec)}")
    for key, shape in spec.items():
        if key not in state:
            continue
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"head checkpoint {path}: '{key}' is a {type(value).__name__}, expected a tensor")
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"head checkpoint {path}: '{key}' has shape {tuple(value.shape)}, expected {shape}")


def _load_into(module: nn.Module, state: Mapping[str, torch.Tensor], prefix: str) -> None:
    own = module.state_dict()
    for key, value in state.items():
        name = key[len(prefix) :]
        own[name].copy_(value.to(own[name].dtype))


def official_head(
    kind: str,
    dim: int,
    state: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    layers: int | None = None,
    classes: int | None = None,
) -> nn.Module:
    """The seg or dpt head of width ``dim`` with the weights of a state dict in the official layout (as
    ``read_state_dict`` or ``random_state_dict`` give it), checked first: errors name ``path``."""
    spec = checkpoint_spec(kind, dim, layers=layers, classes=classes)
    check_state_dict(path, state, spec, strict=False)
    if kind == "seg":
        module: nn.Module = SegmentationLinearHead(dim, classes or VOC_CLASSES, layers or 1)
    else:
        module = DepthLinear4Head(dim, layers or DEPTH_LAYERS)
    _load_into(module, {k: state[k] for k in spec if k in state and k not in OPTIONAL_KEYS}, "decode_head.")
    return module.eval().requires_grad_(False)
