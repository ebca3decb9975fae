"""The learned codecs' networks on one-channel feature frames: CompressAI's scale hyperprior (Balle et al. 2018)
and ELIC (He et al. 2022, CompressAI's Elic2022Official), and their bitstreams.

Each network is CompressAI's, with its first analysis convolution taking one channel and its last synthesis
deconvolution giving one, as in the benchmarks' references. It codes frames prepared by the pre-processing for
learned codecs (LaMoFC: truncated features mapped to [0, 1]; LaMoFCBench: K-means code / 256).

Coding, as the reference's CompressAI evaluation (`compute_padding(h, w, min_div=64)`): each frame is
zero-padded, centred (the odd pixel goes to the bottom / right), to multiples of 64 in both dimensions before
the network, and the reconstruction is cropped back to the frame's window; BPFP counts the strings' bytes over
the original feature's points, never the padding.

A bitstream file holds the entropy coder's strings, last first (the hyperprior's z string, then the latent's),
each but the final one preceded by its 4-byte big-endian length: the scale hyperprior's two strings (z, y),
ELIC's eleven (z, then each channel group's anchor and non-anchor strings). All of it counts towards BPFP.
"""

from __future__ import annotations

import contextlib
import re
import struct
from pathlib import Path

import numpy as np
import torch

ALIGN = 64  # both networks downsample by 2^4 (g_a) and then 2^2 (h_a)
HEADER = struct.Struct(">I")
CHECKPOINT_FORMAT = 1
ELIC_GROUPS = (16, 16, 32, 64)  # the first channel groups of ELIC's latent; the last takes M - 128


def _scale_hyperprior(N: int, M: int):
    from compressai.models import ScaleHyperprior
    from compressai.models.utils import conv, deconv

    net = ScaleHyperprior(N, M)
    net.g_a[0] = conv(1, N)
    net.g_s[-1] = deconv(N, 1)
    return net


def _elic(N: int, M: int):
    from compressai.models import Elic2022Official
    from compressai.models.utils import conv, deconv

    if sum(ELIC_GROUPS) >= M:
        raise ValueError(f"ELIC needs M > {sum(ELIC_GROUPS)} (its channel groups {list(ELIC_GROUPS)} + M - 128)")
    net = Elic2022Official(N, M)
    net.g_a[0] = conv(1, N)
    net.g_s[-1] = deconv(N, 1)
    return net


ARCHITECTURES = {"hyperprior": _scale_hyperprior, "elic": _elic}
"""Architecture -> builder of the one-channel network with N transform and M latent channels."""

SIZE_KEYS = {"hyperprior": ("g_a.0.weight", "g_a.6.weight"), "elic": ("g_a.0.weight", "g_a.13.weight")}
"""The state-dict entries whose output channels are N and M (as the LaMoFCBench loader reads them)."""


def build_model(N: int, M: int, seed: int = 0, architecture: str = "hyperprior"):
    """A one-channel network of `architecture` with seeded initial weights."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture {architecture!r} is unknown; expected one of {sorted(ARCHITECTURES)}")
    torch.manual_seed(seed)
    return ARCHITECTURES[architecture](int(N), int(M))


def centre_padding(height: int, width: int, align: int = ALIGN) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding that centres a height x width frame in the next multiples of
    `align`, as CompressAI's `compute_padding`: top = (H' - h) // 2, the odd pixel at the bottom (likewise left)."""
    ph, pw = -height % align, -width % align
    return ph // 2, ph - ph // 2, pw // 2, pw - pw // 2


def pad_centred(frame: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The frame zero-padded, centred, to at least `shape` (a frame already as large in a dimension keeps it)."""
    h, w = frame.shape
    ph, pw = max(shape[0] - h, 0), max(shape[1] - w, 0)
    return np.pad(frame, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode="constant", constant_values=0)


def load_model(checkpoint: str | Path):
    """The trained network of a LaMoFC checkpoint, in eval mode with its entropy-coder tables rebuilt by
    `update()`, and the checkpoint's record (without the state dict)."""
    path = Path(checkpoint)
    record = _read_checkpoint(path)
    if record.get("format") != CHECKPOINT_FORMAT or "state_dict" not in record:
        raise ValueError(f"{path} is not a LaMoFC learned-codec checkpoint (format {CHECKPOINT_FORMAT})")
    net = build_model(record["N"], record["M"], architecture=record.get("architecture", "hyperprior"))
    _load_strict(net, record["state_dict"], path)
    return net, {k: v for k, v in record.items() if k != "state_dict"}


def _read_checkpoint(path: Path) -> dict:
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for unreadable files
        raise ValueError(f"checkpoint {path} cannot be read: {err}") from err
    if not isinstance(record, dict):
        raise ValueError(f"checkpoint {path} holds a {type(record).__name__}, not a dict")
    return record


_BOTTLENECK_NAMES = {"matrices": "_matrix", "biases": "_bias", "factors": "_factor"}
_LIST_NAME = re.compile(r"(^|\.)entropy_bottleneck\.(matrices|biases|factors)\.(\d+)$")
_FLAT_NAME = re.compile(r"(^|\.)entropy_bottleneck\.(_matrix|_bias|_factor)(\d+)$")


def _bottleneck_names(state_dict: dict, ours) -> dict:
    """The state dict with its entropy bottlenecks' factorized-density parameters named as the installed
    CompressAI names them. CompressAI up to 1.2.6 names them `entropy_bottleneck._matrix0`, `._bias0`,
    `._factor0`; later versions (and DT-UFC's own snapshot, whose checkpoints the benchmark releases) keep them in
    parameter lists, `entropy_bottleneck.matrices.0`, `.biases.0`, `.factors.0` (also under
    `latent_codec.hyper.` in ELIC). Either naming loads under either version; other keys are left as they are."""
    flat_to_list = {v: k for k, v in _BOTTLENECK_NAMES.items()}

    def other_name(key: str) -> str:
        if m := _LIST_NAME.search(key):
            return key[: m.start()] + f"{m[1]}entropy_bottleneck.{_BOTTLENECK_NAMES[m[2]]}{m[3]}"
        if m := _FLAT_NAME.search(key):
            return key[: m.start()] + f"{m[1]}entropy_bottleneck.{flat_to_list[m[2]]}.{m[3]}"
        return key

    renamed = {}
    for key, value in state_dict.items():
        if key not in ours and other_name(key) in ours:
            key = other_name(key)
        renamed[key] = value
    return renamed


def _load_strict(net, state_dict: dict, path: Path) -> None:
    """Load a state dict with every key matching (a clear error names the file and the keys otherwise), then
    set eval mode and rebuild the entropy coders' tables. The entropy bottlenecks' parameters load under either
    of CompressAI's namings (`_bottleneck_names`)."""
    ours = net.state_dict()
    state_dict = _bottleneck_names(state_dict, ours)
    missing = sorted(set(ours) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(ours))
    shapes = sorted(k for k in set(ours) & set(state_dict) if tuple(ours[k].shape) != tuple(state_dict[k].shape))
    # CompressAI re-sizes the entropy coders' CDF buffers itself on loading
    shapes = [k for k in shapes if not k.endswith(("_quantized_cdf", "_offset", "_cdf_length", "scale_table"))]
    if missing or unexpected or shapes:
        problems = [f"{label}: {keys[:6]}{' ...' if len(keys) > 6 else ''}" for label, keys in
                    (("missing", missing), ("unexpected", unexpected), ("other shape", shapes)) if keys]  # fmt: skip
        raise ValueError(f"checkpoint {path} does not fit the network ({'; '.join(problems)})")
    net.load_state_dict(state_dict)
    net.eval()
    net.update(force=True)


PRETRAINED_KEYS = ("network", "state_dict", "model_state_dict")
"""Where a DT-UFC checkpoint keeps its state dict: the first of these keys present (the reference's loader)."""


def load_pretrained(checkpoint: str | Path, architecture: str):
    """A user's pretrained network in the DT-UFC layout (a dict holding the state dict under one of
    PRETRAINED_KEYS, CompressAI's module names; N and M read from the weights), strictly loaded, with its
    entropy tables updated; and a record of it."""
    path = Path(checkpoint)
    record = _read_checkpoint(path)
    key = next((k for k in PRETRAINED_KEYS if isinstance(record.get(k), dict)), None)
    if key is None:
        raise ValueError(f"checkpoint {path} has none of the keys {list(PRETRAINED_KEYS)} holding a state dict")
    state = {k.removeprefix("module."): v for k, v in record[key].items()}
    n_key, m_key = SIZE_KEYS[architecture]
    if n_key not in state or m_key not in state:
        raise ValueError(f"checkpoint {path} is not a {architecture} network: it has no {n_key} and {m_key}")
    N, M = int(state[n_key].shape[0]), int(state[m_key].shape[0])
    net = build_model(N, M, architecture=architecture)
    _load_strict(net, state, path)
    return net, {"N": N, "M": M, "architecture": architecture, "pretrained": str(path), "epoch": record.get("epoch")}


PADDING_MODES = {"zero": "constant", "replicate": "edge"}


def pad_to(frame: np.ndarray, align: int = ALIGN, padding: str = "zero") -> np.ndarray:
    """The frame padded, centred, to multiples of `align` (see `centre_padding`): with zeros (the reference's
    `padding: zero`) or by repeating its edge values (`padding: replicate`)."""
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {sorted(PADDING_MODES)}, got {padding!r}")
    top, bottom, left, right = centre_padding(*frame.shape, align)
    return np.pad(frame, ((top, bottom), (left, right)), mode=PADDING_MODES[padding])


def crop_window(x_hat: torch.Tensor, frame_shape: tuple[int, int]) -> np.ndarray:
    """The frame's window (2-D float32) of a 1 x 1 x H' x W' network output of its centred, padded input."""
    h, w = frame_shape
    top, _, left, _ = centre_padding(h, w)
    if tuple(x_hat.shape[-2:]) != (h + -h % ALIGN, w + -w % ALIGN):
        raise ValueError(f"a {tuple(x_hat.shape[-2:])} reconstruction does not hold a {h} x {w} frame")
    return x_hat[0, 0, top : top + h, left : left + w].cpu().numpy().astype(np.float32)


def _network_input(frame: np.ndarray, padding: str = "zero") -> torch.Tensor:
    """1 x 1 x H' x W' float32 tensor of the frame padded, centred, to multiples of 64."""
    return torch.from_numpy(np.ascontiguousarray(pad_to(frame, padding=padding), dtype=np.float32))[None, None]


def _tables(model) -> tuple[list, list, list]:
    """An entropy model's CDF table, CDF lengths and offsets as the Python lists the entropy coder takes, made
    once per table: kept on the model with the tensors they were made of, and remade when update() replaces a
    table or changes one in place (its version counter)."""
    tensors = (model._quantized_cdf, model._cdf_length, model._offset)
    versions = tuple(t._version for t in tensors)
    kept = model.__dict__.get("_lamofc_tables")
    if kept is None or any(a is not b for a, b in zip(kept[0], tensors, strict=True)) or kept[1] != versions:
        lengths, offsets = model._cdf_length.reshape(-1).int().tolist(), model._offset.reshape(-1).int().tolist()
        kept = (tensors, versions, (model._quantized_cdf.tolist(), lengths, offsets))
        model.__dict__["_lamofc_tables"] = kept
    return kept[2]


def _used_rows(indexes: torch.Tensor, tables: tuple[list, list, list]) -> tuple[list, list, list, list]:
    """The indexes renumbered over the table rows they use, and those rows of the CDF table, lengths and
    offsets: each symbol is coded with the same CDF, length and offset as with the whole tables (so the same
    bytes), and the coder's bindings convert a few rows instead of all of them at every call."""
    used, renumbered = torch.unique(indexes.reshape(-1).int(), return_inverse=True)
    rows = used.tolist()
    cdf, lengths, offsets = tables
    return renumbered.int().tolist(), [cdf[r] for r in rows], [lengths[r] for r in rows], [offsets[r] for r in rows]


def _listed_compress(self, inputs, indexes, means=None):
    """CompressAI 1.2.6's EntropyModel.compress with the tables' lists made once (`_tables`) and only the rows
    the indexes use handed to the coder (`_used_rows`)."""
    symbols = self.quantize(inputs, "symbols", means)
    if len(inputs.size()) < 2:
        raise ValueError("Invalid `inputs` size. Expected a tensor with at least 2 dimensions.")
    if inputs.size() != indexes.size():
        raise ValueError("`inputs` and `indexes` should have the same size.")
    self._check_cdf_size()
    self._check_cdf_length()
    self._check_offsets_size()
    tables = _tables(self)
    return [
        self.entropy_coder.encode_with_indexes(symbols[i].reshape(-1).int().tolist(), *_used_rows(indexes[i], tables))
        for i in range(symbols.size(0))
    ]


def _listed_decompress(self, strings, indexes, dtype=torch.float, means=None):
    """CompressAI 1.2.6's EntropyModel.decompress with the tables' lists made once (`_tables`) and only the rows
    the indexes use handed to the coder (`_used_rows`)."""
    if not isinstance(strings, tuple | list):
        raise ValueError("Invalid `strings` parameter type.")
    if not len(strings) == indexes.size(0):
        raise ValueError("Invalid strings or indexes parameters")
    if len(indexes.size()) < 2:
        raise ValueError("Invalid `indexes` size. Expected a tensor with at least 2 dimensions.")
    self._check_cdf_size()
    self._check_cdf_length()
    self._check_offsets_size()
    if means is not None:
        if means.size()[:2] != indexes.size()[:2]:
            raise ValueError("Invalid means or indexes parameters")
        if means.size() != indexes.size() and any(means.size(i) != 1 for i in range(2, len(indexes.size()))):
            raise ValueError("Invalid means parameters")
    tables = _tables(self)
    outputs = self._quantized_cdf.new_empty(indexes.size())
    for i, s in enumerate(strings):
        values = self.entropy_coder.decode_with_indexes(s, *_used_rows(indexes[i], tables))
        outputs[i] = torch.tensor(values, device=outputs.device, dtype=outputs.dtype).reshape(outputs[i].size())
    return self.dequantize(outputs, means, dtype)


@contextlib.contextmanager
def listed_tables():
    """While open, CompressAI's entropy models hand the entropy coder their CDF tables as lists made once per
    table instead of at every call (`_listed_compress`, `_listed_decompress`). CompressAI 1.2.6 converts the
    three tables for each of an ELIC frame's 22 entropy-coder calls, about a third of a small frame's coding time
    (2026-12-08: an ELIC point of lm_arc_challenge's 22 frames, 10.6 to 11.8 s against 7.7 to 7.9 s). The coder
    receives the same values, so the strings are the library's byte for byte (tests/test_hyperprior.py). Other
    CompressAI versions keep their own methods."""
    import compressai
    from compressai.entropy_models.entropy_models import EntropyModel

    if compressai.__version__ != "1.2.6":
        yield
        return
    kept = EntropyModel.compress, EntropyModel.decompress
    EntropyModel.compress, EntropyModel.decompress = _listed_compress, _listed_decompress
    try:
        yield
    finally:
        EntropyModel.compress, EntropyModel.decompress = kept


def compress(net, frame: np.ndarray, padding: str = "zero") -> bytes:
    """The bitstream of one normalized frame (2-D float32), padded, centred, to multiples of 64."""
    x = _network_input(frame, padding)
    with torch.no_grad(), listed_tables():
        out = net.compress(x)
    strings = [s[0] for s in reversed(out["strings"])]
    return b"".join(HEADER.pack(len(s)) + s for s in strings[:-1]) + strings[-1]


def string_count(net) -> int:
    """How many strings a network's bitstream holds: the scale hyperprior 2, ELIC 2 per channel group + 1."""
    groups = getattr(net, "groups", None)
    return 2 if groups is None else 2 * len(groups) + 1


def _latent_shape(net, h: int, w: int):
    """What `net.decompress` needs besides the strings: the z latent's size, one sample per 64 x 64 block
    (and for ELIC each channel group's latent, one sample per 16 x 16 block)."""
    hyper = (-(-h // ALIGN), -(-w // ALIGN))
    groups = getattr(net, "groups", None)
    if groups is None:
        return hyper
    return {"y": [torch.Size((g, hyper[0] * 4, hyper[1] * 4)) for g in groups], "hyper": torch.Size(hyper)}


def decompress(net, data: bytes, frame_shape: tuple[int, int]) -> np.ndarray:
    """The frame of `frame_shape` from a bitstream written by `compress`; ValueError if it cannot hold one."""
    h, w = frame_shape
    strings, at = [], 0
    for k in range(string_count(net) - 1):
        if len(data) - at <= HEADER.size:
            raise ValueError(f"{len(data)} bytes cannot hold the {string_count(net)} strings of a bitstream")
        (length,) = HEADER.unpack_from(data, at)
        at += HEADER.size
        if at + length >= len(data):
            raise ValueError(f"string {k} claims {length} bytes but only {len(data) - at} follow its length")
        strings.append(data[at : at + length])
        at += length
    strings.append(data[at:])
    with torch.no_grad(), listed_tables():
        x_hat = net.decompress([[s] for s in reversed(strings)], _latent_shape(net, h, w))["x_hat"]
    return crop_window(x_hat, (h, w))
