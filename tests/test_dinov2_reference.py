"""DINOv2 inputs as the reference implementation computes them: the cls image transform (torchvision's default
bilinear Resize(256), CenterCrop(224), ImageNet normalisation) and the DINOv2 release's position-embedding
interpolation (scale factors (n + 0.1) / M, bicubic, float32), each checked against a computation written here."""

from __future__ import annotations

import copy
import io
import math
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lamofc_lib.config import ConfigError, validate
from lamofc_lib.tasks.lamofc.cls import IMAGENET_MEAN, IMAGENET_STD, image_transform
from lamofc_lib.tasks.lamofc.dinov2 import load_dinov2, set_interpolation

# facebook/dinov2-giant config.json (the embeddings only are built from it here)
DINOV2_GIANT = dict(
    hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, mlp_ratio=4, use_swiglu_ffn=True,
    image_size=518, patch_size=14, layerscale_value=1.0, layer_norm_eps=1e-6, drop_path_rate=0.0,
)  # fmt: skip
# config/demo.yaml's DINOv2 (grid 16 x 16)
DEMO_MODEL = {
    "random_init": dict(
        seed=0, hidden_size=96, num_hidden_layers=4, num_attention_heads=4, mlp_ratio=4, image_size=224,
        patch_size=14, initializer_range=0.12,
    )
}  # fmt: skip
OFFSET = 0.1


def _skimage(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


# --- cls image transform -------------------------------------------------------------------------------------


def _short_side_size(height: int, width: int, short: int = 256) -> tuple[int, int]:
    """(height, width) with the short side `short` and the long side scaled and truncated, as Resize(int) does."""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def _crop_normalise(resized: np.ndarray, crop: int = 224) -> np.ndarray:
    """Centre crop (offsets rounded half to even, as CenterCrop), /255, ImageNet mean and std: 3 x crop x crop."""
    height, width = resized.shape[:2]
    top, left = int(round((height - crop) / 2)), int(round((width - crop) / 2))
    x = resized[top : top + crop, left : left + crop].astype(np.float64) / 255.0
    return ((x - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(2, 0, 1)


def _triangle_resample(x: np.ndarray, out: int, axis: int) -> np.ndarray:
    """Antialiased linear resampling along one axis: a triangle filter widened by the downscale factor,
    pixel centres aligned, weights normalised per output sample (the definition of antialiased bilinear)."""
    size = x.shape[axis]
    scale = size / out
    width = max(scale, 1.0)
    centres = (np.arange(out) + 0.5) * scale
    taps = np.arange(size) + 0.5
    weights = np.clip(1.0 - np.abs(taps[None, :] - centres[:, None]) / width, 0.0, None)
    weights /= weights.sum(axis=1, keepdims=True)
    return np.moveaxis(np.tensordot(weights, np.moveaxis(x, axis, 0), axes=(1, 0)), 0, axis)


@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_cls_transform_is_pil_bilinear_resize_crop_and_normalise(name):
    image = _skimage(name)
    height, width = _short_side_size(*image.shape[:2])
    resized = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
    expected = _crop_normalise(resized)
    got = image_transform()(image).numpy()
    assert got.shape == (3, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # The bicubic resize the code used before is a different image: the comparison above can tell them apart.
    bicubic = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BICUBIC))
    assert np.abs(got - _crop_normalise(bicubic)).max() > 0.05


@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_cls_transform_resize_is_antialiased_bilinear(name):
    """Against a float resampler written here (PIL rounds to uint8 after each pass: within 1 grey level + eps);
    torch's bilinear without antialiasing is farther away."""
    image = _skimage(name)
    height, width = _short_side_size(*image.shape[:2])
    resized = _triangle_resample(_triangle_resample(image.astype(np.float64), width, 1), height, 0)
    got = image_transform()(image).numpy()
    one_level = 1 / 255 / min(IMAGENET_STD)
    assert np.abs(got - _crop_normalise(resized)).max() <= 1.01 * one_level
    plain = F.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None].double(), size=(height, width), mode="bilinear"
    )
    assert np.abs(got - _crop_normalise(plain[0].permute(1, 2, 0).numpy())).max() > 3 * one_level


# --- position-embedding interpolation ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def giant_embeddings():
    from transformers import Dinov2Config
    from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings

    torch.manual_seed(0)
    return Dinov2Embeddings(Dinov2Config(**DINOV2_GIANT)).eval()


def _embeddings(module, interpolation: str):
    """A copy of a Dinov2Embeddings module with the given interpolation (set_interpolation reads `.embeddings`)."""
    module = copy.deepcopy(module)
    set_interpolation(types.SimpleNamespace(embeddings=module), interpolation)
    return module


def _tokens(module, pixels: torch.Tensor) -> torch.Tensor:
    """CLS + patch tokens without position embeddings, from the module's weights by a plain strided convolution."""
    proj = module.patch_embeddings.projection
    patches = F.conv2d(pixels.to(proj.weight.dtype), proj.weight, proj.bias, stride=proj.stride)
    patches = patches.flatten(2).transpose(1, 2)
    return torch.cat([module.cls_token.expand(len(pixels), -1, -1), patches], dim=1)


def _positions(module, height: int, width: int, *, release: bool) -> torch.Tensor:
    """1 x (1 + rows * cols) x D position embeddings, resampled from the M x M grid in float32: with the release's
    scale factors (release=True) or to the output size (transformers), then cast to the embeddings' dtype."""
    pos = module.position_embeddings.detach()
    dim, count = pos.shape[-1], pos.shape[1] - 1
    side = math.isqrt(count)
    patch = module.patch_embeddings.patch_size[0]
    rows, cols = height // patch, width // patch
    grid = pos[0, 1:].float().T.reshape(1, dim, side, side)
    if release:
        factors = ((rows + OFFSET) / side, (cols + OFFSET) / side)
        grid = F.interpolate(grid, scale_factor=factors, mode="bicubic", align_corners=False)
    else:
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
    assert tuple(grid.shape[-2:]) == (rows, cols)
    patches = grid[0].reshape(dim, rows * cols).T
    return torch.cat([pos[0, :1].float(), patches])[None].to(pos.dtype)


@pytest.mark.parametrize(("height", "width"), [(224, 224), (490, 644)])
def test_giant_embeddings_follow_the_release_formula(giant_embeddings, height, width):
    torch.manual_seed(1)
    pixels = torch.randn(1, 3, height, width)
    reference, own = _embeddings(giant_embeddings, "reference"), _embeddings(giant_embeddings, "transformers")
    with torch.no_grad():
        got, theirs = reference(pixels), own(pixels)
        tokens = _tokens(giant_embeddings, pixels)
        expected = tokens + _positions(giant_embeddings, height, width, release=True)
        size_based = tokens + _positions(giant_embeddings, height, width, release=False)
    rows, cols = height // 14, width // 14
    assert got.shape == (1, 1 + rows * cols, 1536)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    # transformers' own interpolation is the output-size one, and it is a different result
    torch.testing.assert_close(theirs, size_based, rtol=0, atol=1e-5)
    deviation = (theirs - got).abs()
    assert deviation[0, 0].max() == 0  # the CLS position is not interpolated
    assert deviation[0, 1:].max() > 1e-2


def test_giant_embeddings_at_518_are_not_interpolated(giant_embeddings):
    module = _embeddings(giant_embeddings, "reference")
    pixels = torch.randn(1, 3, 518, 518)
    with torch.no_grad():
        assert module.interpolate_pos_encoding(_tokens(module, pixels), 518, 518) is module.position_embeddings
        got = module(pixels)
        expected = _tokens(module, pixels) + module.position_embeddings
    assert torch.equal(got, expected)


def test_giant_embeddings_in_bfloat16_interpolate_in_float32(giant_embeddings):
    module = _embeddings(giant_embeddings, "reference").to(torch.bfloat16)
    pixels = torch.randn(1, 3, 490, 644)
    with torch.no_grad():
        tokens = _tokens(module, pixels)
        positions = module.interpolate_pos_encoding(tokens, 490, 644)
        got = module(pixels)
    assert positions.dtype == torch.bfloat16 and got.dtype == torch.bfloat16
    assert torch.equal(positions, _positions(module, 490, 644, release=True))
    assert torch.equal(got, tokens + positions)


def test_reference_interpolation_survives_to_deepcopy_and_pickling(giant_embeddings):
    module = _embeddings(giant_embeddings, "reference")
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = _tokens(giant_embeddings, pixels) + _positions(giant_embeddings, 224, 224, release=True)
        buffer = io.BytesIO()
        torch.save(module, buffer)
        buffer.seek(0)
        for other in (module.to("cpu", torch.float32), copy.deepcopy(module), torch.load(buffer, weights_only=False)):
            assert other.interpolate_pos_encoding.args[0] is other  # bound to this module, not to the original
            torch.testing.assert_close(other(pixels), expected, rtol=0, atol=1e-5)
    assert set(module.state_dict()) == set(giant_embeddings.state_dict())


def test_unknown_interpolation_is_rejected(giant_embeddings):
    with pytest.raises(ValueError, match="interpolation"):
        _embeddings(giant_embeddings, "nearest")


# --- through load_dinov2 -------------------------------------------------------------------------------------


def _manual_forward(net, pixels: torch.Tensor, *, release: bool) -> list[torch.Tensor]:
    """Hidden states (embeddings, then each block's output) with position embeddings computed here."""
    height, width = pixels.shape[-2:]
    emb = net.embeddings
    states = [_tokens(emb, pixels) + _positions(emb, height, width, release=release)]
    for layer in net.encoder.layer:
        states.append(layer(states[-1]))
    return states


@pytest.mark.parametrize(("height", "width"), [(518, 518), (490, 644)])
def test_load_dinov2_gives_the_reference_hidden_states(height, width):
    net = load_dinov2(DEMO_MODEL, "cpu")
    deviation = load_dinov2({**DEMO_MODEL, "interpolation": "transformers"}, "cpu")
    pixels = torch.randn(1, 3, height, width)
    with torch.no_grad():
        got = net(pixel_values=pixels, output_hidden_states=True).hidden_states
        theirs = deviation(pixel_values=pixels, output_hidden_states=True).hidden_states
        expected = _manual_forward(net, pixels, release=True)
        size_based = _manual_forward(net, pixels, release=False)
    assert len(got) == len(expected) == 5
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    for a, b in zip(theirs, size_based, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    assert (got[0] - theirs[0]).abs().max() > 1e-3
    assert (got[-1] - theirs[-1]).abs().max() > 1e-3


def test_load_dinov2_at_the_pretraining_size_needs_no_interpolation():
    """The demo model's grid is 16 x 16: a 224 x 224 input takes the stored embeddings in both modes."""
    pixels = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        a = load_dinov2(DEMO_MODEL, "cpu")(pixel_values=pixels).last_hidden_state
        b = load_dinov2({**DEMO_MODEL, "interpolation": "transformers"}, "cpu")(pixel_values=pixels).last_hidden_state
    assert torch.equal(a, b)


# --- config option -------------------------------------------------------------------------------------------


def test_config_interpolation_defaults_to_reference_and_takes_only_the_two_modes():
    import yaml

    from lamofc_lib.config import SCHEMA_PATH
    from lamofc_lib.tasks.lamofc.dinov2 import release_interpolate_pos_encoding

    raw = yaml.safe_load((SCHEMA_PATH.parents[2] / "config" / "demo.yaml").read_text())
    # Unset (so the csr and tti model blocks, which have no DINOv2, stay unchanged): load_dinov2 takes reference.
    model = validate(copy.deepcopy(raw), check_paths=False)["tasks"]["dpt"]["model"]
    assert "interpolation" not in model
    net = load_dinov2(model, "cpu")
    assert net.embeddings.interpolate_pos_encoding.func is release_interpolate_pos_encoding
    raw["tasks"]["cls"]["model"] = {**raw["tasks"]["cls"]["model"], "interpolation": "transformers"}
    assert validate(copy.deepcopy(raw), check_paths=False)["tasks"]["cls"]["model"]["interpolation"] == "transformers"
    raw["tasks"]["cls"]["model"]["interpolation"] = "bilinear"
    with pytest.raises(ConfigError, match="interpolation"):
        validate(raw, check_paths=False)
