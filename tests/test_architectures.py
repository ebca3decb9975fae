"""Architecture-true shapes: the published configurations of DINOv2-giant and Llama3-8B (their depth, and Llama's
vocabulary, reduced: to fit memory, and because a block's output has the same shape at any depth) with random
weights yield exactly the paper's feature shapes through the extraction code. DINOv2-giant runs 4 of its 40
blocks: the paper's blocks 10, 20, 30 and 40 are blocks 1 to 4 here (all 40 took 207 s of CI for dpt's two
views and 138 s for seg's two windows, for the same shapes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lamofc_lib.sources.manifest import COLUMNS
from lamofc_lib.store import FeatureStore
from lamofc_lib.tasks import get_task
from lamofc_lib.tasks.lamofc.cls import image_transform
from lamofc_lib.tasks.lamofc.dense import dense_layout, dense_samples
from lamofc_lib.tasks.lamofc.dinov2 import block_outputs, set_interpolation

# facebook/dinov2-giant config.json, with 4 of its 40 blocks
DINOV2_GIANT = dict(
    hidden_size=1536, num_hidden_layers=4, num_attention_heads=24, mlp_ratio=4, use_swiglu_ffn=True,
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
    feature = block_outputs(giant, image_transform()(image).unsqueeze(0), [4])
    assert tuple(feature.shape) == (1, 257, 1536)


def test_dinov2_giant_seg_feature_of_a_500_by_375_image(giant, tmp_path):
    manifest = _manifest(_image(tmp_path / "voc.jpg", 500, 375))
    layout = dense_layout("seg", giant.config, manifest, 4, {})
    feature = next(dense_samples("seg", giant, manifest, layout, "cpu"))
    assert layout.shapes == [(2, 1, 1370, 1536)] and feature.shape == (2, 1, 1370, 1536)


def test_dinov2_giant_dpt_feature_of_a_480_by_640_image(giant, tmp_path):
    manifest = _manifest(_image(tmp_path / "nyu.jpg", 640, 480))
    layout = dense_layout("dpt", giant.config, manifest, [1, 2, 3, 4], {})
    feature = next(dense_samples("dpt", giant, manifest, layout, "cpu"))
    assert layout.shapes == [(2, 4, 1611, 1536)] and feature.shape == (2, 4, 1611, 1536)


def _byte_tokenizer():
    """A byte-level tokenizer (one token per UTF-8 byte) with Llama-3's BOS post-processor: an N-byte prompt is
    N + 1 tokens, known without running the tokenizer (Llama3-8B's own tokenizer is not available offline)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))},
                                   merges=[]))  # fmt: skip
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken("<|begin_of_text|>", special=True, normalized=False)])
    backend.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", backend.token_to_id("<|begin_of_text|>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>")


@pytest.fixture(scope="module")
def llama3_folder(tmp_path_factory):
    """A model folder as the workflow loads one (model.id): the Llama3-8B architecture with random bf16 weights,
    2 of its 32 decoder layers and the byte tokenizer's 257-entry vocabulary (the split feature does not depend
    on the vocabulary size; Llama3-8B's 128256 would add 2 x 525M parameters)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("llama3") / "model"
    tokenizer = _byte_tokenizer()
    torch.manual_seed(0)
    net = LlamaForCausalLM(LlamaConfig(**{**LLAMA3_8B, "vocab_size": len(tokenizer)})).to(torch.bfloat16)
    net.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, tokenizer


def test_llama3_8b_split_feature_is_n_by_4096_before_the_final_norm(llama3_folder, tmp_path):
    """The csr task's extraction (ReasoningTask.extract, as the workflow's extract rule runs it) against
    transformers' own hidden states of the same model: the output of the split layer, before the final RMSNorm."""
    from transformers import AutoModelForCausalLM

    folder, tokenizer = llama3_folder
    texts = ["Which is a mammal? The best answer is", "Pick one. The best answer is"]
    manifest = pd.DataFrame({"sample_id": ["q1", "q2"], "source": "", "label": ["B", "A"], "text": texts},
                            columns=COLUMNS)  # fmt: skip
    model = {"id": str(folder), "dtype": "bfloat16"}
    task = get_task("csr", device="cpu")
    task.extract(manifest, model, 2, tmp_path / "last.zarr")  # the paper's split: the last decoder layer
    task.extract(manifest, model, 1, tmp_path / "first.zarr")
    last, first = FeatureStore(tmp_path / "last.zarr"), FeatureStore(tmp_path / "first.zarr")
    # 1 x 1 x N x 4096, N = the prompt's bytes + BOS (38 and 29 tokens), stored as float32.
    assert last.shapes == first.shapes == [(1, 1, len(text.encode()) + 1, 4096) for text in texts]
    assert last.dtype == first.dtype == np.float32

    net = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    for i, text in enumerate(texts):
        with torch.no_grad():
            out = net(**tokenizer(text, return_tensors="pt"), output_hidden_states=True)
        assert len(out.hidden_states) == 3  # the embeddings, then one per decoder layer
        # An earlier split: transformers' hidden state after layer 1, exactly (bf16 is exact in float32).
        np.testing.assert_array_equal(first.read(i)[0, 0], out.hidden_states[1][0].float().numpy())
        # The last layer: transformers' last hidden state is the final norm of the feature, not the feature.
        stored = torch.from_numpy(last.read(i)[0, 0])
        feature = stored.to(torch.bfloat16)
        assert torch.equal(feature.float(), stored)  # the model's bf16 values, widened exactly
        assert not torch.equal(feature, out.hidden_states[-1][0])
        with torch.no_grad():
            assert torch.equal(net.model.norm(feature), out.hidden_states[-1][0])

    # The head file (final RMSNorm + lm_head, in bf16) on the stored feature: the model's own next token.
    task.write_head(model, 2, {}, tmp_path / "head.pt")
    predictions = task.predict(tmp_path / "head.pt", [last.read(i) for i in range(len(last))])
    expected = []
    for text in texts:
        with torch.no_grad():
            token = int(net(**tokenizer(text, return_tensors="pt")).logits[0, -1].float().argmax())
        answer = tokenizer.decode([token], skip_special_tokens=True).strip()
        expected.append(answer if answer and answer in "ABCDE" else f"<token {token}>")
    assert predictions == expected
