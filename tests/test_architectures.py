"""Architecture-true shapes: the published configurations of DINOv2-giant and Llama3-8B (layers reduced to fit
memory) with random weights yield exactly the paper's feature shapes through the extraction code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lamofc_lib.sources import COLUMNS
from lamofc_lib.tasks.cls import image_transform
from lamofc_lib.tasks.csr import decoder_output, head_logits, head_state
from lamofc_lib.tasks.dense import dense_layout, dense_samples
from lamofc_lib.tasks.dinov2 import block_outputs, set_interpolation

# facebook/dinov2-giant config.json
DINOV2_GIANT = dict(
    hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, mlp_ratio=4, use_swiglu_ffn=True,
    image_size=518, patch_size=14, layerscale_value=1.0, layer_norm_eps=1e-6, drop_path_rate=0.0,
)  # fmt: skip
# meta-llama/Meta-Llama-3-8B-Instruct config.json, with 2 of its 32 decoder layers
LLAMA3_8B = dict(
    hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
    rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=8192, hidden_act="silu", tie_word_embeddings=False,
    num_hidden_layers=2,
)  # fmt: skip

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def giant():
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    net = Dinov2Model(Dinov2Config(**DINOV2_GIANT)).eval()
    set_interpolation(net, "reference")  # as load_dinov2 sets it
    return net


def _image(path, width: int, height: int) -> str:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return str(path)


def _manifest(source: str) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": ["x"], "source": [source], "label": [""], "text": [""]}, columns=COLUMNS)


def test_dinov2_giant_cls_feature_is_257_by_1536(giant, tmp_path):
    image = np.asarray(Image.open(_image(tmp_path / "a.png", 500, 375)))
    feature = block_outputs(giant, image_transform()(image).unsqueeze(0), [40])
    assert tuple(feature.shape) == (1, 257, 1536)


def test_dinov2_giant_seg_feature_of_a_500_by_375_image(giant, tmp_path):
    manifest = _manifest(_image(tmp_path / "voc.jpg", 500, 375))
    layout = dense_layout("seg", giant.config, manifest, 40, {})
    feature = next(dense_samples("seg", giant, manifest, layout, "cpu"))
    assert layout.shapes == [(2, 1, 1370, 1536)] and feature.shape == (2, 1, 1370, 1536)


def test_dinov2_giant_dpt_feature_of_a_480_by_640_image(giant, tmp_path):
    manifest = _manifest(_image(tmp_path / "nyu.jpg", 640, 480))
    layout = dense_layout("dpt", giant.config, manifest, [10, 20, 30, 40], {})
    feature = next(dense_samples("dpt", giant, manifest, layout, "cpu"))
    assert layout.shapes == [(2, 4, 1611, 1536)] and feature.shape == (2, 4, 1611, 1536)


def test_llama3_8b_split_feature_is_n_by_4096_before_the_final_norm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    net = LlamaForCausalLM(LlamaConfig(**LLAMA3_8B)).to(torch.bfloat16).eval()
    ids = torch.randint(0, 128256, (1, 37), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    # The csr task's own extraction (forward hook on the split layer) and head code.
    feature = decoder_output(net, 2, inputs)
    assert feature.dtype == torch.bfloat16
    stored = feature.float().numpy().reshape(1, 1, 37, 4096)  # as the store holds it: float32, exact for bf16
    with torch.no_grad():
        out = net(**inputs, output_hidden_states=True)
    # Before the final norm: transformers' last hidden state is the norm of the feature, not the feature.
    assert not torch.equal(out.hidden_states[-1][0], feature[0])
    assert torch.equal(net.model.norm(feature)[0], out.hidden_states[-1][0])
    # The head (final RMSNorm + lm_head, in bf16) on the stored feature gives the model's own next-token logits.
    logits = head_logits(head_state(net), torch.from_numpy(stored[0, 0]))
    assert logits.dtype == torch.bfloat16
    assert torch.equal(logits, out.logits[0])
    assert int(logits[-1].float().argmax()) == int(out.logits[0, -1].float().argmax())
