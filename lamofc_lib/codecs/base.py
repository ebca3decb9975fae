"""The interface every codec implements, and the record kept beside each bitstream."""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


class CodecError(RuntimeError):
    """A codec failed or a bitstream is unusable; the message names the file and the tool's complaint."""


class Codec(ABC):
    """A frame codec: it codes one pre-processed 2-D frame per sample at an operating point.

    `input_kind` tells the pre-processing what frames it takes: "quantized" frames are uint16 integers of
    `bit_depth` bits (truncate + quantize + pack); "normalized" frames are float32 in [0, 1] (truncate +
    normalize + pack, for learned codecs).
    """

    name: str = ""
    # The $defs block of workflow/schemas/config.schema.yaml that its config block is checked against (empty: the
    # block named as the codec); lamofc_lib.config.load_schema ties the codec's name to it.
    settings_schema: str = ""
    input_kind: str = "quantized"
    bit_depths: tuple[int, ...] = (10,)
    # A trained codec codes each operating point with its own model, which the workflow's train rule trains first
    # through the codec's classmethod train_point(frames, point, sizes, training, model, loss, device, provenance).
    trained: bool = False
    # A trained codec's network sizes and their defaults (codecs.<codec>.<size> overrides), passed to train_point.
    sizes: dict[str, int] = {}
    # A codec whose decoded frame depends on float arithmetic (threads, device): its encoder decodes each
    # bitstream once and the sidecar records that frame's SHA-256 and the threads and device used; decoding
    # uses the recorded threads and fails when its frame differs (coding.decode_point).
    verifies_decoding: bool = False
    device: str = "cpu"

    def __init__(self, settings: Mapping, threads: int = 1, model: str | Path | None = None):
        self.settings = dict(settings)
        self.threads = int(threads)
        self.timeout: float | None = None  # seconds one tool run may take (codecs.<codec>.timeout)
        self.model = Path(model) if model else None
        self.bit_depth = int(self.settings.get("bit_depth", 10))
        if self.bit_depth not in self.bit_depths:
            raise ValueError(
                f"codec {self.name}: bit_depth {self.bit_depth} is not supported; it codes {self.bit_depths} bits"
            )

    def check_frame(self, frame: np.ndarray) -> None:
        """A quantized frame: 2-D uint16 holding `bit_depth`-bit values."""
        if frame.ndim != 2 or frame.dtype != np.uint16:
            raise ValueError(f"{self.name}: expected a 2-D uint16 frame, got {frame.dtype} {frame.shape}")
        if int(frame.max(initial=0)) >= 1 << self.bit_depth:
            raise ValueError(f"{self.name}: frame holds values above {self.bit_depth} bits")

    @classmethod
    def check_setup(cls, settings: Mapping, key: str) -> None:
        """Before anything runs: what the codec needs beyond its config block (tools, files) is there. Raises
        ValueError starting with the config key (`key` is its block's, e.g. codecs.vtm) and what to do. Most
        codecs need nothing: this default checks nothing."""
        return None

    @abstractmethod
    def version(self) -> str:
        """The codec's name and version as its own tools report them."""

    @abstractmethod
    def encode(self, frame: np.ndarray, point: str, bitstream: Path, workdir: Path) -> None:
        """Code `frame` at operating `point`, writing the bitstream to `bitstream`."""

    @abstractmethod
    def decode(self, bitstream: Path, frame_shape: tuple[int, int], workdir: Path) -> np.ndarray:
        """Reconstruct the frame of `frame_shape` from `bitstream`; raise CodecError on a bad bitstream."""


def run_tool(args: Sequence[str], log: Path, what: str, timeout: float | None = None) -> str:
    """Run an external codec tool (argument list, no shell), append its output to `log`, check its exit code.

    On failure the error carries the command and the end of the tool's output, so the job's own log keeps
    them even when `log` lies in a folder that is cleaned up. A tool still running after `timeout` seconds is
    killed and fails the same way (a hung encoder never holds a job until the cluster's own limit)."""
    command = " ".join(str(a) for a in args)
    try:
        result = subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout
        )
    except subprocess.TimeoutExpired as expired:
        output = "".join(_text(part) for part in (expired.stdout, expired.stderr))
        with open(log, "a") as f:
            f.write(f"$ {command}\n{output}\n[killed after {timeout:g} s]\n")
        tail = "\n".join(output.strip().splitlines()[-12:])
        raise CodecError(
            f"{what} did not finish within {timeout:g} s (the codec's timeout); killed\n$ {command}\n{tail}"
        ) from None
    output = result.stdout + result.stderr
    with open(log, "a") as f:
        f.write(f"$ {command}\n{output}\n[exit {result.returncode}]\n")
    if result.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-12:])
        raise CodecError(f"{what} failed (exit {result.returncode})\n$ {command}\n{tail}")
    return output


def _text(part: bytes | str | None) -> str:
    if part is None:
        return ""
    return part.decode(errors="replace") if isinstance(part, bytes) else part
