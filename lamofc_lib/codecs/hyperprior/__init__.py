"""The learned Hyperprior baseline: the network and its bitstreams (model), training (training) and the codec of
the registry (codec). Importing the package loads only the codec class; torch and CompressAI load when used."""

from lamofc_lib.codecs.hyperprior.codec import Hyperprior

__all__ = ["Hyperprior"]
