"""Codec registry: a codec is one module with a `Codec` subclass naming it (found by lamofc_lib.registry, no
list to edit), or one that another installed package registers in the entry-point group `lamofc.codecs`, plus
its config block."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lamofc_lib.codecs.base import Codec, CodecError
from lamofc_lib.registry import load

REGISTRY: dict[str, type[Codec]] = load(__name__, Codec)


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
