"""Codec registry: a codec is one module with a `Codec` subclass, listed here, plus its config block."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lamofc_lib.codecs.base import Codec, CodecError
from lamofc_lib.codecs.elic import Elic
from lamofc_lib.codecs.hyperprior import Hyperprior
from lamofc_lib.codecs.vtm import VTM
from lamofc_lib.codecs.vvenc import VVenC

REGISTRY: dict[str, type[Codec]] = {codec.name: codec for codec in (VVenC, VTM, Hyperprior, Elic)}


def get_codec(
    name: str, settings: Mapping, threads: int = 1, model: str | Path | None = None, timeout: float | None = None
) -> Codec:
    """An instance of the codec registered as `name`, configured by its config block, using `threads` threads
    (and, for a trained codec, the model checkpoint of the operating point it codes); a tool-based codec kills a
    tool run that takes more than `timeout` seconds."""
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise ValueError(f"codec '{name}' is not registered; known codecs: {', '.join(sorted(REGISTRY))}") from None
    codec = cls(settings, threads=threads, model=model) if cls.trained else cls(settings, threads=threads)
    codec.timeout = timeout
    return codec


__all__ = ["Codec", "CodecError", "REGISTRY", "get_codec"]
