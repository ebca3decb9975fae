"""ELIC as a codec: one model per operating point (lambda), trained by the workflow or a user's pretrained
DT-UFC checkpoint; one channel in and out, the frames padded, centred, to multiples of 64, eleven strings per
bitstream (see lamofc_lib.codecs.hyperprior.model)."""

from __future__ import annotations

from lamofc_lib.codecs.hyperprior.codec import Hyperprior


class Elic(Hyperprior):
    name = "elic"
    architecture = "elic"
    network = "Elic2022Official"
    sizes = {"N": 192, "M": 320}  # the reference's; M must exceed 128 (ELIC's first four channel groups)
