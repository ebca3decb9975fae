"""Quantizers: how a feature tensor's values become what a codec codes (integer codes, or values in [0, 1]).

A quantizer is one module here with a class naming it (``name = "..."``) and the static methods
``check(spec)``, ``to_codec_input(x, spec, input_kind, bit_depth)``, ``from_codec_output(y, spec, input_kind,
bit_depth)`` and ``symbols(x, spec, bit_depth)`` (the integer codes, whose zero-order entropy the tables give as
a rate floor), listed in REGISTRY. A codec profile chooses its quantizer (``codecs.<codec>.quantizer``), and each
tensor of a sample gets its own parameters (a :class:`lamofc_lib.preprocess.TensorSpec`):

- ``uniform``: LaMoFC's truncation to a configured range and uniform B-bit codes (10 bits by default), floor or
  round per tensor (:mod:`lamofc_lib.quantizers.uniform`), bit-exact with the LaMoFC reference.
- ``kmeans``: LaMoFCBench's 8-bit K-means codes, 256 centres per tensor fitted on calibration samples by the
  ``calibrate`` rule or read from a user's mapping folder (:mod:`lamofc_lib.quantizers.kmeans`).
"""

from __future__ import annotations

from lamofc_lib.quantizers.kmeans import KMeansCodes
from lamofc_lib.quantizers.uniform import Uniform

REGISTRY = {quantizer.name: quantizer for quantizer in (Uniform, KMeansCodes)}

SPEC_QUANTIZERS = {"floor": "uniform", "round": "uniform", "kmeans": "kmeans"}
"""A TensorSpec's quantizer (uniform floor or round, kmeans) -> the registered quantizer that computes it."""


def get_quantizer(spec_quantizer: str):
    """The registered quantizer class of a TensorSpec's quantizer."""
    return REGISTRY[SPEC_QUANTIZERS[spec_quantizer]]
