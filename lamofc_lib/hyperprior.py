"""The learned baseline: CompressAI's scale hyperprior (Balle et al. 2018) on one-channel feature frames.

The network is `compressai.models.ScaleHyperprior` with its first analysis convolution taking one channel and
its last synthesis deconvolution giving one, as in the benchmark's reference. It codes frames prepared by
`preprocess.normalize` + `preprocess.pack` (truncated features mapped to [0, 1], no rounding).

Training (`train`) uses the reference's loss, `lambda * 255^2 * MSE + rate`, where rate is the estimated bits
per frame sample, i.e. per feature point, Adam for the network and a separate Adam for the entropy
bottleneck's quantiles (the auxiliary loss), gradient clipping and ReduceLROnPlateau. Batches are random crops
of the packed training frames.

A bitstream file is a 4-byte big-endian length of the hyperprior (z) string, the z string, then the latent
(y) string: the entropy coder's actual output plus that length field, all of which counts towards BPFP.
"""

from __future__ import annotations

import csv
import logging
import math
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lamofc_lib.io import atomic_path

ALIGN = 64  # ScaleHyperprior downsamples by 2^4 (g_a) and then 2^2 (h_a)
HEADER = struct.Struct(">I")
CHECKPOINT_FORMAT = 1
log = logging.getLogger(__name__)


def build_model(N: int, M: int, seed: int = 0):
    """A one-channel ScaleHyperprior with seeded initial weights."""
    from compressai.models import ScaleHyperprior
    from compressai.models.utils import conv, deconv

    torch.manual_seed(seed)
    net = ScaleHyperprior(int(N), int(M))
    net.g_a[0] = conv(1, int(N))
    net.g_s[-1] = deconv(int(N), 1)
    return net


@dataclass
class TrainSettings:
    """How to train one model; `steps` wins over `epochs` (an epoch draws one crop per training sample)."""

    batch: int = 8
    crop: tuple[int, int] = (64, 64)
    steps: int | None = None
    epochs: int | None = None
    lr: float = 1e-4
    aux_lr: float = 1e-3
    clip: float = 1.0
    lr_patience: int = 10
    log_every: int = 10
    seed: int = 0

    @classmethod
    def from_config(cls, block: Mapping) -> TrainSettings:
        known = {k: v for k, v in block.items() if k in cls.__dataclass_fields__}
        settings = cls(**known)
        settings.crop = tuple(int(c) for c in settings.crop)
        if len(settings.crop) != 2 or any(c <= 0 or c % ALIGN for c in settings.crop):
            raise ValueError(f"crop {list(settings.crop)}: give [height, width], each a positive multiple of {ALIGN}")
        if settings.steps is None and settings.epochs is None:
            raise ValueError("set steps or epochs")
        return settings

    def total_steps(self, samples: int) -> int:
        if self.steps is not None:
            return int(self.steps)
        return int(self.epochs) * math.ceil(samples / self.batch)


class CropSampler:
    """Random crops of packed, normalized frames; frames smaller than the crop are padded by edge replication.

    Sample order follows shuffled epochs (every sample once before any sample twice), `batch` at a time.
    """

    def __init__(self, frames: Sequence[np.ndarray], crop: tuple[int, int], seed: int):
        if not frames:
            raise ValueError("no training frames")
        self.frames = frames
        self.crop = crop
        self.rng = np.random.default_rng(seed)
        self.queue: list[int] = []

    def _crop(self, frame: np.ndarray) -> np.ndarray:
        ch, cw = self.crop
        h, w = frame.shape
        if h < ch or w < cw:
            frame = np.pad(frame, ((0, max(ch - h, 0)), (0, max(cw - w, 0))), mode="edge")
            h, w = frame.shape
        y = int(self.rng.integers(0, h - ch + 1))
        x = int(self.rng.integers(0, w - cw + 1))
        return frame[y : y + ch, x : x + cw]

    def batch(self, size: int) -> torch.Tensor:
        picks = []
        while len(picks) < size:
            if not self.queue:
                self.queue = list(self.rng.permutation(len(self.frames)))
            picks.append(self.queue.pop())
        crops = np.stack([self._crop(self.frames[i]) for i in picks])
        return torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32)).unsqueeze(1)


def rd_loss(net, x: torch.Tensor, lam: float) -> dict[str, torch.Tensor]:
    """The reference's rate-distortion loss on a batch: lambda * 255^2 * MSE + estimated bits per point."""
    out = net(x)
    mse = torch.mean((out["x_hat"] - x) ** 2)
    bits = sum(-torch.log2(likelihoods).sum() for likelihoods in out["likelihoods"].values())
    bpfp = bits / x.numel()
    return {"loss": lam * 255**2 * mse + bpfp, "mse": mse, "bpfp": bpfp}


def _optimizers(net, settings: TrainSettings):
    params = {n: p for n, p in net.named_parameters() if p.requires_grad}
    main = [p for n, p in params.items() if not n.endswith(".quantiles")]
    aux = [p for n, p in params.items() if n.endswith(".quantiles")]
    return torch.optim.Adam(main, lr=settings.lr), torch.optim.Adam(aux, lr=settings.aux_lr)


def train(
    frames: Sequence[np.ndarray],
    lam: float,
    N: int,
    M: int,
    settings: TrainSettings,
    checkpoint: str | Path,
    loss_log: str | Path,
    device: str = "cpu",
    provenance: Mapping | None = None,
) -> dict:
    """Train a model at rate-distortion trade-off `lam` on random crops of `frames`; save the updated model.

    Writes the checkpoint (state dict after `update()`, sizes, lambda, provenance) and a CSV loss log, each
    atomically. Returns the last logged row.
    """
    torch.manual_seed(settings.seed)
    net = build_model(N, M, settings.seed).to(device)
    net.train()
    sampler = CropSampler(frames, settings.crop, settings.seed)
    optimizer, aux_optimizer = _optimizers(net, settings)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=settings.lr_patience)
    steps = settings.total_steps(len(frames))
    rows: list[dict] = []
    window: list[dict[str, float]] = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x = sampler.batch(settings.batch).to(device)
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        terms = rd_loss(net, x, lam)
        terms["loss"].backward()
        if settings.clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), settings.clip)
        optimizer.step()
        aux = net.aux_loss()
        aux.backward()
        aux_optimizer.step()
        window.append({k: float(v.detach()) for k, v in terms.items()} | {"aux": float(aux.detach())})
        if not math.isfinite(window[-1]["loss"]):
            raise FloatingPointError(f"training diverged at step {step}: loss {window[-1]['loss']}")
        if step % settings.log_every == 0 or step == steps:
            row = {"step": step, **{k: float(np.mean([w[k] for w in window])) for k in window[0]}}
            row["lr"] = optimizer.param_groups[0]["lr"]
            row["seconds"] = round(time.perf_counter() - start, 2)
            rows.append(row)
            scheduler.step(row["loss"])
            window = []
            log.info("step %d/%d loss %.4f mse %.3g bpfp %.4f aux %.2f", step, steps, row["loss"], row["mse"],
                     row["bpfp"], row["aux"])  # fmt: skip
    net = net.cpu().eval()
    net.update(force=True)
    with atomic_path(loss_log) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    record = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": net.state_dict(),
        "N": int(N),
        "M": int(M),
        "lambda": float(lam),
        "steps": steps,
        "train_samples": len(frames),
        "settings": asdict(settings),
        "final": rows[-1],
        **dict(provenance or {}),
    }
    with atomic_path(checkpoint) as tmp:
        torch.save(record, tmp)
    return rows[-1]


def plot_loss(loss_log: str | Path, png: str | Path, title: str) -> None:
    """The training curve: loss, and its rate and distortion terms, against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    table = pd.read_csv(loss_log)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    labels = ("loss", "estimated BPFP", "MSE (normalized)")
    for ax, column, label in zip(axes, ("loss", "bpfp", "mse"), labels, strict=True):
        ax.plot(table["step"], table[column])
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        if column == "mse":
            ax.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


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


def pad_to(frame: np.ndarray, align: int = ALIGN) -> np.ndarray:
    h, w = frame.shape
    return np.pad(frame, ((0, -h % align), (0, -w % align)), mode="edge")


def _network_input(frame: np.ndarray) -> torch.Tensor:
    """1 x 1 x H' x W' float32 tensor of the frame padded to multiples of 64."""
    return torch.from_numpy(np.ascontiguousarray(pad_to(frame), dtype=np.float32))[None, None]


def compress(net, frame: np.ndarray) -> bytes:
    """The bitstream of one normalized frame (2-D float32); the frame is padded to multiples of 64."""
    x = _network_input(frame)
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
    return x_hat[0, 0, :h, :w].numpy().astype(np.float32)


def reconstruct(net, frame: np.ndarray) -> np.ndarray:
    """The network's own eval-mode reconstruction (quantized latents, no entropy coding), clamped to [0, 1]
    and cropped: what `decompress(compress(frame))` must reproduce."""
    with torch.no_grad():
        x_hat = net(_network_input(frame))["x_hat"].clamp(0, 1)
    h, w = frame.shape
    return x_hat[0, 0, :h, :w].numpy()


def training_frames(features: str | Path, task: str, truncation) -> list[np.ndarray]:
    """The packed, normalized frames of every sample of a training feature store (held in memory)."""
    from lamofc_lib.coding import to_frame
    from lamofc_lib.store import FeatureStore

    store = FeatureStore(features)
    frames = [to_frame(store.read(i), task, truncation, "normalized", 10) for i in range(len(store))]
    log.info("%d training frames of shapes %s", len(frames), sorted({f.shape for f in frames})[:4])
    return frames
