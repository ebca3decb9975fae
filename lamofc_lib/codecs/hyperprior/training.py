"""Training a learned codec's one-channel network (model.py: the scale hyperprior, ELIC) on packed, normalized
training frames.

Training (`train`) uses the reference's loss, `lambda * 255^2 * MSE + rate`, where rate is the estimated bits
per frame sample, i.e. per feature point, Adam for the network and a separate Adam for the entropy
bottleneck's quantiles (the auxiliary loss), gradient clipping and ReduceLROnPlateau. Batches are random crops
of the packed training frames. As in the reference, a held-out part of the training frames (`validation`) is
evaluated without gradient, in eval mode, after every epoch, and that loss steps the scheduler once per epoch;
an epoch is ceil(training frames / batch) steps, also when the length is given in `steps`.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lamofc_lib.codecs.hyperprior.model import ALIGN, CHECKPOINT_FORMAT, build_model, pad_centred
from lamofc_lib.io import atomic_path

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """How to train one model; `steps` wins over `epochs`. An epoch draws one crop per training sample:
    ceil(training samples / batch) steps, after which the held-out loss steps ReduceLROnPlateau.

    `validation`: the held-out part of the training frames, a fraction in (0, 1) (rounded half up, at least one
    sample) or a count (an integer >= 1); at least one frame must be left to train on.
    """

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
    validation: float | int = 0.1

    @classmethod
    def from_config(cls, block: Mapping) -> TrainSettings:
        known = {k: v for k, v in block.items() if k in cls.__dataclass_fields__}
        settings = cls(**known)
        settings.crop = tuple(int(c) for c in settings.crop)
        if len(settings.crop) != 2 or any(c <= 0 or c % ALIGN for c in settings.crop):
            raise ValueError(f"crop {list(settings.crop)}: give [height, width], each a positive multiple of {ALIGN}")
        if settings.steps is None and settings.epochs is None:
            raise ValueError("set steps or epochs")
        v = settings.validation
        if isinstance(v, bool) or not isinstance(v, int | float) or not (0 < v < 1 or (v >= 1 and v == int(v))):
            raise ValueError(f"validation {v!r}: give a fraction in (0, 1) or a whole count >= 1 of held-out samples")
        return settings

    def validation_count(self, samples: int) -> int:
        """How many of `samples` training frames are held out."""
        v = self.validation
        count = max(1, math.floor(v * samples + 0.5)) if 0 < v < 1 else int(v)
        if samples - count < 1:
            raise ValueError(
                f"validation {v!r} holds out {count} of {samples} training samples and leaves none to train on"
            )
        return count

    def steps_per_epoch(self, samples: int) -> int:
        """Steps of one epoch over `samples` training frames (the frames left after the held-out ones)."""
        return math.ceil(samples / self.batch)

    def total_steps(self, samples: int) -> int:
        if self.steps is not None:
            return int(self.steps)
        return int(self.epochs) * self.steps_per_epoch(samples)


class CropSampler:
    """Random crops of packed, normalized frames; frames smaller than the crop are zero-padded, centred, first
    (as frames are padded for coding).

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
        frame = pad_centred(frame, (ch, cw))
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


def validation_crops(frames: Sequence[np.ndarray], crop: tuple[int, int], seed: int) -> torch.Tensor:
    """One fixed crop per held-out frame (drawn once from a seeded generator, the same every epoch; frames
    smaller than the crop zero-padded, centred): V x 1 x H x W."""
    sampler = CropSampler(frames, crop, seed + 1)
    return torch.from_numpy(np.stack([sampler._crop(f) for f in frames]).astype(np.float32)).unsqueeze(1)


def evaluate(net, crops: torch.Tensor, lam: float, batch: int, device: str = "cpu") -> dict[str, float]:
    """Mean loss terms over the crops, without gradient and in eval mode (rounded latents, as the reference's
    test epoch); the network is put back into training mode."""
    net.eval()
    sums: dict[str, float] = {}
    try:
        with torch.no_grad():
            for start in range(0, crops.shape[0], batch):
                x = crops[start : start + batch].to(device)
                terms = rd_loss(net, x, lam) | {"aux": net.aux_loss()}
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * x.shape[0]
    finally:
        net.train()
    return {k: v / crops.shape[0] for k, v in sums.items()}


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
    architecture: str = "hyperprior",
) -> dict:
    """Train a model at rate-distortion trade-off `lam` on random crops of `frames`; save the updated model.

    A seeded `settings.validation` share of the frames is held out; after every epoch (ceil(training frames /
    batch) steps; the last one may be shorter when `steps` is not a whole number of epochs) their fixed crops
    are evaluated and that loss steps ReduceLROnPlateau, once per epoch. Writes the checkpoint (state dict after
    `update()`, sizes, lambda, split, provenance; no timings) and a CSV loss log (`split` train: means over
    `log_every` steps; validation: one row per epoch), each atomically. Returns the last validation row.
    """
    torch.manual_seed(settings.seed)
    net = build_model(N, M, settings.seed, architecture).to(device)
    net.train()
    order = np.random.default_rng(settings.seed).permutation(len(frames))
    held = sorted(int(i) for i in order[: settings.validation_count(len(frames))])
    kept = [i for i in range(len(frames)) if i not in set(held)]
    sampler = CropSampler([frames[i] for i in kept], settings.crop, settings.seed)
    crops = validation_crops([frames[i] for i in held], settings.crop, settings.seed)
    optimizer, aux_optimizer = _optimizers(net, settings)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=settings.lr_patience)
    steps = settings.total_steps(len(kept))
    per_epoch = settings.steps_per_epoch(len(kept))
    log.info("%d training and %d held-out frames; %d steps, %d per epoch", len(kept), len(held), steps, per_epoch)
    rows: list[dict] = []
    window: list[dict[str, float]] = []
    start = time.perf_counter()

    def add_row(split: str, step: int, terms: Mapping[str, float], lr: float) -> dict:
        row = {"split": split, "step": step, "epoch": math.ceil(step / per_epoch), **terms, "lr": lr,
               "seconds": round(time.perf_counter() - start, 2)}  # fmt: skip
        rows.append(row)
        return row

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
        lr = optimizer.param_groups[0]["lr"]
        if step % settings.log_every == 0 or step == steps:
            row = add_row("train", step, {k: float(np.mean([w[k] for w in window])) for k in window[0]}, lr)
            window = []
            log.info("step %d/%d loss %.4f mse %.3g bpfp %.4f aux %.2f", step, steps, row["loss"], row["mse"],
                     row["bpfp"], row["aux"])  # fmt: skip
        if step % per_epoch == 0 or step == steps:
            held_out = add_row("validation", step, evaluate(net, crops, lam, settings.batch, device), lr)
            scheduler.step(held_out["loss"])
            log.info("epoch %d: held-out loss %.4f (lr %.3g)", held_out["epoch"], held_out["loss"], lr)
    net = net.cpu().eval()
    net.update(force=True)
    with atomic_path(loss_log) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["split", "step", "epoch", "loss", "mse", "bpfp", "aux", "lr", "seconds"])
        writer.writeheader()
        writer.writerows(rows)
    final = {k: v for k, v in held_out.items() if k != "seconds"}  # no timings: the file's digest identifies it
    record = {
        "format": CHECKPOINT_FORMAT,
        "architecture": architecture,
        "state_dict": net.state_dict(),
        "N": int(N),
        "M": int(M),
        "lambda": float(lam),
        "steps": steps,
        "epochs": math.ceil(steps / per_epoch),
        "train_samples": len(kept),
        "validation_samples": held,
        "settings": asdict(settings),
        "final": final,
        **dict(provenance or {}),
    }
    with atomic_path(checkpoint) as tmp:
        torch.save(record, tmp)
    return held_out
