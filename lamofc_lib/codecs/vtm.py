"""VVC intra coding with the VTM reference software (the paper's baseline, VTM-23.3), whose binaries the user
builds: `codecs.vtm.encoder`, `decoder` and `cfg` in the config, or the folder `$LAMOFC_VTM_DIR` holding
EncoderAppStatic / DecoderAppStatic (or EncoderApp / DecoderApp) and, for the cfg, encoder_intra_vtm.cfg
there or in its ../cfg.

One 4:0:0 10-bit frame per sample, coded with the paper's command line; VTM pads the picture to its minimum
coding size itself (ConformanceWindowMode=1) and the decoder crops it back.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import numpy as np

from lamofc_lib.codecs.base import Codec, CodecError, run_tool

ENV = "LAMOFC_VTM_DIR"
CFG_NAME = "encoder_intra_vtm.cfg"
BANNER = re.compile(r"VTM (?:Encoder|Decoder) Version ([0-9][0-9.]*)")


def _from_env(names: tuple[str, ...]) -> Path | None:
    folder = os.environ.get(ENV)
    if not folder:
        return None
    for base in (Path(folder), Path(folder).parent / "cfg"):
        for name in names:
            if (base / name).is_file():
                return base / name
    return None


def resolve_tools(settings: Mapping, key: str = "codecs.vtm") -> dict[str, Path]:
    """The encoder, decoder and cfg paths from the config block (`key`) or $LAMOFC_VTM_DIR; a missing one raises
    ValueError naming the config key."""
    wanted = {
        "encoder": ("EncoderAppStatic", "EncoderApp"),
        "decoder": ("DecoderAppStatic", "DecoderApp"),
        "cfg": (CFG_NAME,),
    }
    tools = {}
    for tool, names in wanted.items():
        given = settings.get(tool)
        path = Path(given) if given else _from_env(names)
        if path is None:
            raise ValueError(
                f"{key}.{tool}: not set and ${ENV} holds no {' or '.join(names)}; build VTM-23.3 and set "
                f"{key}.{tool} or {ENV}"
            )
        if not path.is_file():
            raise ValueError(f"{key}.{tool}: {path} does not exist")
        tools[tool] = path
    return tools


@cache
def tool_version(path: Path) -> str:
    """The version in a VTM binary's banner; raises ValueError when the program is not VTM."""
    try:
        result = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=60)
    except OSError as err:
        raise ValueError(f"{path} cannot be run: {err}") from err
    match = BANNER.search(result.stdout + result.stderr)
    if not match:
        raise ValueError(f"{path} is not VTM: its output has no 'VTM Encoder/Decoder Version' banner")
    return match.group(1)


class VTM(Codec):
    name = "vtm"
    input_kind = "quantized"

    def __init__(self, settings: Mapping, threads: int = 1):
        super().__init__(settings, threads)
        self.tools = resolve_tools(self.settings)

    @classmethod
    def check_setup(cls, settings: Mapping, key: str) -> None:
        """The VTM binaries exist and are VTM."""
        try:
            tools = resolve_tools(settings, key)
        except ValueError as err:
            raise ValueError(
                f"{err}. VTM is the paper's VVC baseline; without its binaries, code with VVenC instead (replace "
                "vtm by vvenc in run.codecs; a documented deviation)"
            ) from None
        for tool in ("encoder", "decoder"):
            try:
                tool_version(tools[tool])
            except ValueError as err:
                raise ValueError(f"{key}.{tool}: {err}") from None

    def version(self) -> str:
        encoder, decoder = tool_version(self.tools["encoder"]), tool_version(self.tools["decoder"])
        return f"VTM encoder {encoder}, decoder {decoder}"

    def encode(self, frame: np.ndarray, point: str, bitstream: Path, workdir: Path) -> None:
        self.check_frame(frame)
        height, width = frame.shape
        raw = Path(workdir) / "input.yuv"
        raw.write_bytes(frame.astype("<u2").tobytes())
        run_tool(
            [
                self.tools["encoder"], "-c", self.tools["cfg"], "-i", raw, "-b", bitstream, "-o", "",
                "-q", str(int(point)), "--ConformanceWindowMode=1", "-wdt", str(width), "-hgt", str(height),
                "-f", "1", "-fr", "1", "--InternalBitDepth=10", "--InputBitDepth=10", "--InputChromaFormat=400",
                "--OutputBitDepth=10",
            ],
            Path(workdir) / "vtm-encoder.log",
            f"VTM encoding of {raw} at QP {point}",
            self.timeout,
        )  # fmt: skip
        raw.unlink()

    def decode(self, bitstream: Path, frame_shape: tuple[int, int], workdir: Path) -> np.ndarray:
        out = Path(workdir) / "decoded.yuv"
        try:
            run_tool(
                [self.tools["decoder"], "-b", bitstream, "-o", out, "-d", "10"],
                Path(workdir) / "vtm-decoder.log",
                f"VTM decoding of {bitstream}",
                self.timeout,
            )
        except CodecError as err:
            raise CodecError(f"bitstream {bitstream} does not decode: {err}") from err
        try:
            data = np.fromfile(out, dtype="<u2") if out.exists() else np.zeros(0, "<u2")
        finally:
            out.unlink(missing_ok=True)
        height, width = frame_shape
        # 4:0:0 output is the luma plane alone; a decoder writing 4:2:0 appends two chroma planes (dropped).
        if data.size not in (height * width, height * width * 3 // 2):
            raise CodecError(
                f"bitstream {bitstream} decoded to {data.size} samples, expected one {width}x{height} frame; "
                "it is corrupt or truncated"
            )
        return data[: height * width].reshape(height, width).astype(np.uint16)
