"""The learned Hyperprior baseline as a codec: one trained model per operating point (lambda).

The model comes from the workflow's training rule (`training.train`), or is a user's pretrained checkpoint in
the DT-UFC layout (`pretrained`: point -> file); the codec loads it, rebuilds its entropy-coder tables with
`update()`, checks that a trained model was trained at the lambda being coded, and writes CompressAI's actual
range-coder strings. Coding runs on the CPU with a fixed number of threads so that encoder
and decoder compute the same scales (a learned codec breaks when they differ by one rounding step).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path

import numpy as np

from lamofc_lib import determinism
from lamofc_lib.codecs.base import Codec, CodecError


class Hyperprior(Codec):
    name = "hyperprior"
    settings_schema = "learned"  # the learned codecs' settings block (Elic inherits it)
    input_kind = "normalized"
    trained = True
    verifies_decoding = True
    architecture = "hyperprior"  # lamofc_lib.codecs.hyperprior.model.ARCHITECTURES
    network = "ScaleHyperprior"  # CompressAI's class, as the version names it
    sizes = {"N": 128, "M": 192}  # the reference's (DT-UFC quality 1); codecs.<codec>.N / .M override

    def __init__(self, settings: Mapping, threads: int = 1, model: str | Path | None = None):
        super().__init__(settings, threads, model)
        if self.model is None:
            raise ValueError("codec hyperprior needs a trained model checkpoint")

    @classmethod
    def train_point(cls, frames, point: str, sizes: Mapping, training: Mapping, model, loss, device, provenance):
        """The training hook of the workflow's train rule: train the model of one lambda on `frames` (see
        training.train) and write it and its loss log; returns the last held-out evaluation."""
        from lamofc_lib.codecs.hyperprior.training import TrainSettings, train

        settings = TrainSettings.from_config(training)
        return train(frames, float(point), sizes["N"], sizes["M"], settings, model, loss, device=device,
                     provenance=provenance, architecture=cls.architecture)  # fmt: skip

    @cached_property
    def _loaded(self):
        import torch

        from lamofc_lib.codecs.hyperprior.model import load_model, load_pretrained

        determinism.configure_torch(self.threads)
        torch.use_deterministic_algorithms(True)
        if self.settings.get("pretrained"):
            return load_pretrained(self.model, self.architecture)
        return load_model(self.model)

    @property
    def net(self):
        return self._loaded[0]

    @property
    def record(self) -> dict:
        return self._loaded[1]

    def version(self) -> str:
        import compressai

        from lamofc_lib.io import file_sha256

        r = self.record
        model = f"model sha256 {file_sha256(self.model)[:16]}"
        if "pretrained" in r:
            return f"CompressAI {compressai.__version__} {self.network} N={r['N']} M={r['M']} pretrained ({model})"
        return (
            f"CompressAI {compressai.__version__} {self.network} N={r['N']} M={r['M']} lambda={r['lambda']:g} "
            f"trained on {r.get('task', '?')} ({r['steps']} steps; {model})"
        )

    def check_frame(self, frame: np.ndarray) -> None:
        """A normalized frame: 2-D float32 in [0, 1]."""
        if frame.ndim != 2 or frame.dtype != np.float32:
            raise ValueError(f"{self.name}: expected a 2-D float32 frame, got {frame.dtype} {frame.shape}")
        if frame.size and not (float(frame.min()) >= 0.0 and float(frame.max()) <= 1.0):
            raise ValueError(f"{self.name}: frame values leave [0, 1]; it takes normalized frames")

    def _check_point(self, point: str) -> None:
        if "pretrained" in self.record:
            return  # the config maps each point to its file
        if not np.isclose(float(point), self.record["lambda"], rtol=1e-9, atol=0):
            raise CodecError(
                f"{self.name} model {self.model} was trained at lambda {self.record['lambda']:g}, not at point {point}"
            )

    def encode(self, frame: np.ndarray, point: str, bitstream: Path, workdir: Path) -> None:
        from lamofc_lib.codecs.hyperprior.model import compress

        self.check_frame(frame)
        self._check_point(point)
        Path(bitstream).write_bytes(compress(self.net, frame, self.settings.get("padding", "zero")))

    def decode(self, bitstream: Path, frame_shape: tuple[int, int], workdir: Path) -> np.ndarray:
        from lamofc_lib.codecs.hyperprior.model import decompress

        try:
            return decompress(self.net, Path(bitstream).read_bytes(), tuple(frame_shape))
        except (ValueError, RuntimeError) as err:
            raise CodecError(f"bitstream {bitstream} does not decode: {err}") from err
