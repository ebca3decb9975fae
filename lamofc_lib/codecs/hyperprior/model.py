"""The learned baseline: CompressAI's scale hyperprior (Balle et al. 2018) on one-channel feature frames.

The network is `compressai.models.ScaleHyperprior` with its first analysis convolution taking one channel and
its last synthesis deconvolution giving one, as in the benchmark's reference. It codes frames prepared by
`preprocess.normalize` + `preprocess.pack` (truncated features mapped to [0, 1], no rounding).

Coding, as the reference's CompressAI evaluation (`compute_padding(h, w, min_div=64)`): each frame is
zero-padded, centred (the odd pixel goes to the bottom / right), to multiples of 64 in both dimensions before
the network, and the reconstruction is cropped back to the frame's window; BPFP counts the strings' bytes over
the original feature's points, never the padding.

A bitstream file is a 4-byte big-endian length of the hyperprior (z) string, the z string, then the latent
(y) string: the entropy coder's actual output plus that length field, all of which counts towards BPFP.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import torch

ALIGN = 64  # ScaleHyperprior downsamples by 2^4 (g_a) and then 2^2 (h_a)
HEADER = struct.Struct(">I")
CHECKPOINT_FORMAT = 1


def build_model(N: int, M: int, seed: int = 0):
    """A one-channel ScaleHyperprior with seeded initial weights."""
    from compressai.models import ScaleHyperprior
    from compressai.models.utils import conv, deconv

    torch.manual_seed(seed)
    net = ScaleHyperprior(int(N), int(M))
    net.g_a[0] = conv(1, int(N))
    net.g_s[-1] = deconv(int(N), 1)
    return net


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
    """The trained network of a checkpoint, in eval mode with its entropy-coder tables rebuilt by `update()`,
    and the checkpoint's record (without the state dict)."""
    path = Path(checkpoint)
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for unreadable files
        raise ValueError(f"hyperprior checkpoint {path} cannot be read: {err}") from err
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT or "state_dict" not in record:
        raise ValueError(f"{path} is not a LaMoFC hyperprior checkpoint (format {CHECKPOINT_FORMAT})")
    net = build_model(record["N"], record["M"])
    net.load_state_dict(record["state_dict"])
    net.eval()
    net.update(force=True)
    return net, {k: v for k, v in record.items() if k != "state_dict"}


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


def compress(net, frame: np.ndarray, padding: str = "zero") -> bytes:
    """The bitstream of one normalized frame (2-D float32), padded, centred, to multiples of 64."""
    x = _network_input(frame, padding)
    with torch.no_grad():
        out = net.compress(x)
    (y,), (z,) = out["strings"]
    return HEADER.pack(len(z)) + z + y


def decompress(net, data: bytes, frame_shape: tuple[int, int]) -> np.ndarray:
    """The frame of `frame_shape` from a bitstream written by `compress`; ValueError if it cannot hold one."""
    h, w = frame_shape
    if len(data) <= HEADER.size:
        raise ValueError(f"{len(data)} bytes cannot hold a hyperprior bitstream")
    (z_len,) = HEADER.unpack_from(data)
    if HEADER.size + z_len >= len(data):
        raise ValueError(f"its z string claims {z_len} bytes but only {len(data) - HEADER.size} follow the header")
    z = data[HEADER.size : HEADER.size + z_len]
    y = data[HEADER.size + z_len :]
    shape = (-(-h // ALIGN), -(-w // ALIGN))  # the hyperprior latent z: one sample per 64 x 64 block
    with torch.no_grad():
        x_hat = net.decompress([[y], [z]], shape)["x_hat"]
    return crop_window(x_hat, (h, w))
