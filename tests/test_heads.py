"""The DINOv2 evaluation heads: official checkpoint formats, loader checks, and hand-checkable computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lamofc_lib.tasks.lamofc.dinov2 import merge_flip_views, slide_windows, stitch_windows
from lamofc_lib.tasks.lamofc.heads import (
    DepthLinear4Head,
    FinalNorm,
    LinearHead,
    SegmentationLinearHead,
    checkpoint_spec,
    official_head,
    random_state_dict,
    read_state_dict,
)

DIM = 64
FILES = {"seg": "dinov2_vitg14_voc2012_linear_head.pth", "dpt": "dinov2_vitg14_nyu_linear4_head.pth"}


def load(kind: str, path, dim: int, norm: FinalNorm | None = None, layers: int | None = None):
    """A head file as the head rule reads it (DenseTask.write_head): read, check and load, then the norm."""
    head = official_head(kind, dim, read_state_dict(path), path, layers=layers)
    if norm is not None:
        head.set_final_norm(norm)
    return head


def random_norm(dim: int = DIM, seed: int = 1) -> FinalNorm:
    gen = torch.Generator().manual_seed(seed)
    return FinalNorm(1 + 0.2 * torch.randn(dim, generator=gen), 0.1 * torch.randn(dim, generator=gen), 1e-6)


def random_tokens(n: int, layers: int, tokens: int, dim: int = DIM, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, layers, tokens, dim)) * 3 + 0.5).astype(np.float32)


def save_official(tmp_path, kind: str, dim: int = DIM, wrap: bool = False, **kw) -> tuple:
    state = random_state_dict(kind, dim, seed=7, **kw)
    path = tmp_path / FILES[kind]
    # mmcv files wrap the state dict next to a `meta` that may hold numpy scalars
    obj = {"meta": {"iter": 38400, "best_score": np.float64(0.5)}, "state_dict": state} if wrap else state
    torch.save(obj, path)
    return path, state


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint formats


def test_official_specs_for_dinov2_giant():
    seg = checkpoint_spec("seg", 1536)
    assert seg["decode_head.bn.running_var"] == (1536,)
    assert seg["decode_head.conv_seg.weight"] == (21, 1536, 1, 1)
    assert checkpoint_spec("dpt", 1536) == {
        "decode_head.conv_depth.weight": (256, 12288, 1, 1),
        "decode_head.conv_depth.bias": (256,),
    }


@pytest.mark.parametrize("kind", ["seg", "dpt"])
def test_random_state_dict_is_seeded_and_official(kind):
    a, b, c = (random_state_dict(kind, DIM, seed=s) for s in (3, 3, 4))
    spec = checkpoint_spec(kind, DIM)
    assert {k: tuple(v.shape) for k, v in a.items()} == spec
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


# ---------------------------------------------------------------------------------------------------------------
# Classification


def test_classifier_hand_check_norm_before_pooling_and_cls_first():
    """tasks/heads.py's LinearHead (the ImageNet linear head of the workflow): LayerNorm per token, then CLS and
    the mean of the normalised patch tokens, then Linear. Identity Linear(8, 8): the logits are that feature."""
    head = LinearHead(4, eps=0.0, classes=8)
    with torch.no_grad():
        head.norm.weight.fill_(2.0)
        head.norm.bias.fill_(0.5)
        head.linear.weight.copy_(torch.eye(8))
        head.linear.bias.zero_()
    cls = [3.0, 1.0, 3.0, 1.0]  # mean 2, std 1 -> [1, -1, 1, -1]
    p1 = [10.0, -10.0, 10.0, -10.0]  # -> [1, -1, 1, -1]
    p2 = [-1.0, 1.0, 1.0, -1.0]  # -> itself
    out = head(torch.tensor([[cls, p1, p2]]))[0]
    # LayerNorm per token (weight 2, bias 0.5), then CLS, then the mean of the normalised patch tokens [0, 0, 1, -1]
    expected = [2.5, -1.5, 2.5, -1.5] + [0.5, 0.5, 2.5, -1.5]
    torch.testing.assert_close(out, torch.tensor(expected))
    # pooling before the norm would give a different answer: LN(mean(p1, p2)) != mean(LN(p1), LN(p2))
    raw_mean = torch.tensor([p1, p2]).mean(0)
    assert not torch.allclose(2 * F.layer_norm(raw_mean, (4,), eps=0.0) + 0.5, out[4:])


# ---------------------------------------------------------------------------------------------------------------
# Segmentation


def test_segmentation_loads_and_matches_reference(tmp_path):
    path, state = save_official(tmp_path, "seg", wrap=True)
    norm = random_norm()
    head = load("seg", path, DIM, norm)
    h, w = 6, 5
    x = random_tokens(2, 1, 1 + h * w)
    grid_logits = head(x, grid=(h, w))
    assert grid_logits.shape == (2, 21, h, w)
    up = head(x, grid=(h, w), size=(84, 70))
    assert up.shape == (2, 21, 84, 70)

    t = F.layer_norm(torch.from_numpy(x[:, 0]), (DIM,), norm.weight, norm.bias, 1e-6)
    maps = t[:, 1:].reshape(2, h, w, DIM).permute(0, 3, 1, 2)
    s = {k.removeprefix("decode_head."): v for k, v in state.items()}
    bn = (maps - s["bn.running_mean"][:, None, None]) / torch.sqrt(s["bn.running_var"][:, None, None] + 1e-5)
    bn = bn * s["bn.weight"][:, None, None] + s["bn.bias"][:, None, None]
    ref = torch.einsum("kc,nchw->nkhw", s["conv_seg.weight"][:, :, 0, 0], bn) + s["conv_seg.bias"][:, None, None]
    torch.testing.assert_close(grid_logits, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(up, F.interpolate(ref, size=(84, 70), mode="bilinear", align_corners=False))


def test_segmentation_hand_check_drops_cls_and_is_row_major():
    head = SegmentationLinearHead(4, classes=4, norm=FinalNorm.identity(4, eps=0.0))
    with torch.no_grad():
        head.bn.running_var.fill_(1.0 - head.bn.eps)  # BatchNorm becomes the identity
        head.conv_seg.weight.copy_(torch.eye(4)[:, :, None, None])
        head.conv_seg.bias.zero_()
    h, w = 2, 3
    tokens = torch.zeros(1, 1, 1 + h * w, 4)
    tokens[0, 0, 0] = torch.tensor([9.0, -9.0, 0.0, 0.0])  # CLS: must not appear anywhere
    for i in range(h * w):
        tokens[0, 0, 1 + i] = torch.roll(torch.tensor([1.0 + i, -1.0 - i, 0.0, 0.0]), i % 4)
    out = head(tokens, grid=(h, w))[0]
    for r in range(h):
        for c in range(w):
            i = r * w + c
            expected = torch.roll(torch.tensor([1.0, -1.0, 0.0, 0.0]) * 2**0.5, i % 4)  # standardised
            torch.testing.assert_close(out[:, r, c], expected)


def test_segmentation_grid_is_checked():
    head = SegmentationLinearHead(DIM, norm=random_norm())
    assert head(random_tokens(1, 1, 1 + 16)).shape == (1, 21, 4, 4)  # square grids are inferred
    with pytest.raises(ValueError, match="grid"):
        head(random_tokens(1, 1, 1 + 15))
    with pytest.raises(ValueError, match="grid 3 x 4"):
        head(random_tokens(1, 1, 1 + 16), grid=(3, 4))


def test_slide_windows_and_stitching():
    assert slide_windows(512, 683) == [(0, 512, 0, 512), (0, 512, 171, 683)]
    assert slide_windows(300, 400) == [(0, 300, 0, 400)]
    boxes = slide_windows(512, 683)
    crops = [torch.full((2, 512, 512), 1.0), torch.full((2, 512, 512), 3.0)]
    out = stitch_windows(crops, boxes, 512, 683)
    assert out.shape == (2, 512, 683)
    assert out[0, 0, 0] == 1.0 and out[0, 0, 300] == 2.0 and out[0, 0, 682] == 3.0


# ---------------------------------------------------------------------------------------------------------------
# Depth


def test_depth_loads_and_gives_metric_depth(tmp_path):
    path, state = save_official(tmp_path, "dpt", wrap=True)
    head = load("dpt", path, DIM)
    h, w = 5, 7
    x = random_tokens(2, 4, 1 + h * w)
    depth = head(x, grid=(h, w))
    assert depth.shape == (2, 1, 4 * h, 4 * w)
    assert float(depth.min()) >= 0.001 and float(depth.max()) <= 10.0
    resized = head(x, grid=(h, w), size=(66, 92))
    assert resized.shape == (2, 1, 66, 92)
    assert float(resized.min()) >= 0.001 and float(resized.max()) <= 10.0

    # literal reference: per layer [patch map, CLS], x4 bilinear upsampling, 1x1 conv, linear bins, no LayerNorm
    t = torch.from_numpy(x)
    parts = []
    for layer in range(4):
        maps = t[:, layer, 1:].reshape(2, h, w, DIM).permute(0, 3, 1, 2)
        parts += [maps, t[:, layer, 0, :, None, None].expand_as(maps)]
    feats = F.interpolate(torch.cat(parts, 1), size=(4 * h, 4 * w), mode="bilinear", align_corners=False)
    s = {k.removeprefix("decode_head."): v for k, v in state.items()}
    logits = F.conv2d(feats, s["conv_depth.weight"], s["conv_depth.bias"])
    prob = torch.relu(logits) + 0.1
    prob = prob / prob.sum(1, keepdim=True)
    ref = (prob * torch.linspace(0.001, 10, 256)[None, :, None, None]).sum(1, keepdim=True).clamp(0.001, 10)
    torch.testing.assert_close(depth, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(head(x, grid=(h, w), fused=False), ref, rtol=1e-4, atol=1e-4)


def test_depth_hand_check_channel_order_without_norm():
    dim, h, w = 2, 2, 3
    head = DepthLinear4Head(dim)
    tokens = torch.arange(4 * (1 + h * w) * dim, dtype=torch.float32).reshape(1, 4, 1 + h * w, dim) * 7 - 50
    fm = head.feature_map(tokens, grid=(h, w))
    assert fm.shape == (1, 4 * 2 * dim, h, w)
    for layer in range(4):
        base = layer * 2 * dim
        for r in range(h):
            for c in range(w):
                # raw (un-normalised) patch token first, then the layer's CLS token
                torch.testing.assert_close(fm[0, base : base + dim, r, c], tokens[0, layer, 1 + r * w + c])
                torch.testing.assert_close(fm[0, base + dim : base + 2 * dim, r, c], tokens[0, layer, 0])


def test_depth_hand_check_bins():
    dim, v = 2, 5.0
    head = DepthLinear4Head(dim)
    with torch.no_grad():
        head.conv_depth.weight.zero_()
        head.conv_depth.bias.zero_()
        head.conv_depth.weight[255, 2 * 2 * dim + dim] = 1.0  # layer 2, CLS part, channel 0 -> the 10 m bin
    tokens = torch.zeros(1, 4, 1 + 4, dim)
    tokens[0, 2, 0, 0] = v
    depth = head(tokens, grid=(2, 2))
    bins = torch.linspace(0.001, 10.0, 256)
    # relu(logit) + 0.1, normalised: bin 255 gets v + 0.1, the other 255 bins 0.1 each
    expected = (0.1 * bins[:255].sum() + (v + 0.1) * bins[255]) / (v + 0.1 * 256)
    torch.testing.assert_close(depth, torch.full((1, 1, 8, 8), float(expected)))


def test_merge_flip_views():
    a = torch.arange(6.0).reshape(1, 1, 2, 3)
    out = merge_flip_views(torch.cat([a, a.flip(-1)]), [False, True])
    torch.testing.assert_close(out, a)


# ---------------------------------------------------------------------------------------------------------------
# Loader errors name the file, the key and the expected shape


@pytest.mark.parametrize("kind", ["seg", "dpt"])
def test_missing_file(tmp_path, kind):
    path = tmp_path / FILES[kind]
    with pytest.raises(FileNotFoundError, match=FILES[kind]):
        load(kind, path, DIM)


@pytest.mark.parametrize("kind", ["seg", "dpt"])
def test_wrong_shape(tmp_path, kind):
    path, _ = save_official(tmp_path, kind, dim=DIM)
    key = next(iter(checkpoint_spec(kind, 32)))
    expected = checkpoint_spec(kind, 32)[key]
    with pytest.raises(ValueError, match=FILES[kind]) as err:
        load(kind, path, 32)
    assert key in str(err.value) and str(expected) in str(err.value)


@pytest.mark.parametrize("kind", ["seg", "dpt"])
def test_wrong_keys(tmp_path, kind):
    state = random_state_dict(kind, DIM)
    key = sorted(k for k in state if "num_batches" not in k)[-1]
    state["renamed." + key] = state.pop(key)
    path = tmp_path / FILES[kind]
    torch.save(state, path)
    with pytest.raises(ValueError, match=FILES[kind]) as err:
        load(kind, path, DIM)
    assert key in str(err.value)


def test_other_heads_file_is_rejected(tmp_path):
    seg_path, _ = save_official(tmp_path, "seg")
    # the 4-layer 'ms' segmentation layout has the same keys but 4 x dim channels
    ms = random_state_dict("seg", DIM, layers=4)
    torch.save(ms, seg_path)
    with pytest.raises(ValueError, match=r"expected \(64,\)"):
        load("seg", seg_path, DIM)
    assert load("seg", seg_path, DIM, layers=4).layers == 4
    extra = random_state_dict("dpt", DIM) | {"decode_head.bn.weight": torch.ones(8 * DIM)}
    torch.save(extra, seg_path)
    with pytest.raises(ValueError, match="unexpected key 'decode_head.bn.weight'"):
        load("dpt", seg_path, DIM)


def test_unreadable_file(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        load("dpt", path, DIM)
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match="garbage.pth"):
        load("dpt", path, DIM)
