"""VVC intra coding with Fraunhofer VVenC and FFmpeg's native VVC decoder, both in the static FFmpeg that
the imageio-ffmpeg wheel ships.

Frames are coded 4:0:0 (ChromaFormatIDC=400) at 10 bits, one intra frame per sample. FFmpeg hands libvvenc
4:2:0 input, so the two chroma planes are filled with the mid value 512 and dropped by the encoder. VVC needs
picture sizes in multiples of 8: the frame is padded by edge replication and cropped after decoding; the
padding is coded, but BPFP divides by the original feature's points only.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path

import numpy as np

from lamofc_lib.codecs.base import Codec, CodecError, run_tool

ALIGN = 8
MID = 512


@cache
def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def padded_shape(shape: tuple[int, int]) -> tuple[int, int]:
    h, w = shape
    return -(-h // ALIGN) * ALIGN, -(-w // ALIGN) * ALIGN


class VVenC(Codec):
    name = "vvenc"
    input_kind = "quantized"

    def __init__(self, settings: Mapping, threads: int = 1):
        super().__init__(settings, threads)
        self.preset = self.settings.get("preset", "medium")

    def version(self) -> str:
        return _version()

    def encode(self, frame: np.ndarray, point: str, bitstream: Path, workdir: Path) -> None:
        qp = int(point)
        self.check_frame(frame)
        ph, pw = padded_shape(frame.shape)
        luma = np.pad(frame, ((0, ph - frame.shape[0]), (0, pw - frame.shape[1])), mode="edge")
        chroma = np.full((ph // 2, pw // 2), MID, dtype="<u2").tobytes()
        raw = Path(workdir) / "input.yuv"
        raw.write_bytes(luma.astype("<u2").tobytes() + chroma + chroma)
        log = Path(workdir) / "vvenc.log"
        run_tool(
            [
                ffmpeg_exe(), "-hide_banner", "-nostdin", "-y",
                "-f", "rawvideo", "-pix_fmt", "yuv420p10le", "-s", f"{pw}x{ph}", "-i", raw,
                "-frames:v", "1", "-threads", str(self.threads),
                "-c:v", "libvvenc", "-preset", self.preset, "-qp", str(qp), "-qpa", "0",
                "-vvenc-params", "IntraPeriod=1:ChromaFormatIDC=400",
                "-f", "vvc", bitstream,
            ],
            log,
            f"VVenC encoding of {raw} at QP {qp}",
            self.timeout,
        )  # fmt: skip
        raw.unlink()

    def decode(self, bitstream: Path, frame_shape: tuple[int, int], workdir: Path) -> np.ndarray:
        ph, pw = padded_shape(frame_shape)
        out = Path(workdir) / "decoded.raw"
        log = Path(workdir) / "vvc-decoder.log"
        try:
            run_tool(
                [
                    ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-xerror", "-err_detect", "explode",
                    "-f", "vvc", "-c:v", "vvc", "-i", bitstream,
                    "-f", "rawvideo", "-pix_fmt", "gray10le", out,
                ],
                log,
                f"VVC decoding of {bitstream}",
                self.timeout,
            )  # fmt: skip
            data = np.fromfile(out, dtype="<u2") if out.exists() else np.zeros(0, "<u2")
        except CodecError as err:
            raise CodecError(f"bitstream {bitstream} does not decode: {err}") from err
        finally:
            out.unlink(missing_ok=True)  # FFmpeg leaves an empty output file behind when decoding fails
        if data.size != ph * pw:
            raise CodecError(
                f"bitstream {bitstream} decoded to {data.size} samples, expected one {pw}x{ph} frame "
                f"({ph * pw}); it is corrupt or truncated"
            )
        return data.reshape(ph, pw)[: frame_shape[0], : frame_shape[1]].astype(np.uint16)


@cache
def _version() -> str:
    """The VVenC and FFmpeg versions, read from the tools themselves; a tool that fails is a CodecError naming
    it, never an "unknown" version in the sidecars."""
    import subprocess

    version = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True)
    banner = version.stdout.splitlines()
    if version.returncode != 0 or not banner:
        raise CodecError(f"{ffmpeg_exe()} -version failed (exit {version.returncode}): {version.stderr[-500:]}")
    ff = banner[0].split(" Copyright")[0]
    probe = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-f", "lavfi", "-i", "color=c=gray:s=16x16:d=0.04", "-frames:v", "1",
         "-pix_fmt", "yuv420p10le", "-c:v", "libvvenc", "-f", "null", "-"],
        capture_output=True, text=True,
    )  # fmt: skip
    vv = next((line.split("libvvenc version:")[1].strip() for line in probe.stderr.splitlines()
               if "libvvenc version:" in line), None)  # fmt: skip
    if probe.returncode != 0 or vv is None:
        raise CodecError(f"{ffmpeg_exe()} cannot encode with libvvenc (exit {probe.returncode}): {probe.stderr[-500:]}")
    return f"VVenC {vv} via {ff}"
