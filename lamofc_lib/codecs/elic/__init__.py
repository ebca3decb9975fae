"""ELIC (He et al. 2022, CompressAI's Elic2022Official) as a learned codec: the Hyperprior's machinery
(lamofc_lib.codecs.hyperprior) with ELIC's network. Importing the package loads only the codec class."""

from lamofc_lib.codecs.elic.codec import Elic

__all__ = ["Elic"]
