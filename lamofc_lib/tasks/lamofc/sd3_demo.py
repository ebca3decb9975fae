"""The demo's tiny Stable Diffusion 3 (task tti with `model.random_init`): diffusers' StableDiffusion3Pipeline built
from small configs with seeded random weights, so the demo and the tests run the real pipeline code on the CPU.

`model.random_init` builds a tiny SD3 pipeline from configs with seeded random weights (demo, tests): an
SD3Transformer2DModel, an AutoencoderKL with SD3's 16 latent channels and scaling/shift factors, the
FlowMatchEulerDiscreteScheduler with SD3's shift 3.0, two CLIP text encoders with projection and a T5 encoder.
The real tokenizers' vocabularies cannot be downloaded here, so the demo tokenizers are built offline: a CLIP
byte-level BPE tokenizer with the 512 byte symbols of CLIP's base vocabulary and no merges (character level),
and a T5 Unigram tokenizer over printable ASCII. The pipeline itself (prompt encoding, classifier-free
guidance, scheduler, latent output) is diffusers' StableDiffusion3Pipeline in both cases.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping

import torch

SD3_SCALING_FACTOR = 1.5305
SD3_SHIFT_FACTOR = 0.0609
LATENT_CHANNELS = 16

# The tiny demo pipeline; `model.random_init` overrides these per component (keys transformer, vae, clip, clip_2,
# t5, scheduler). pooled_projection_dim and joint_attention_dim follow from the text encoders.
TINY_TRANSFORMER = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": LATENT_CHANNELS,
    "out_channels": LATENT_CHANNELS,
    "num_layers": 2,
    "attention_head_dim": 8,
    "num_attention_heads": 4,
    "caption_projection_dim": 32,
    "pos_embed_max_size": 96,
}
TINY_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 16, 32, 32],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "act_fn": "silu",
    "latent_channels": LATENT_CHANNELS,
    "sample_size": 1024,
    "scaling_factor": SD3_SCALING_FACTOR,
    "shift_factor": SD3_SHIFT_FACTOR,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
TINY_CLIP = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "projection_dim": 32,
    "max_position_embeddings": 77,
}
TINY_T5 = {"d_model": 64, "d_kv": 16, "d_ff": 128, "num_layers": 2, "num_heads": 4}
SD3_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0}


def demo_clip_tokenizer(max_length: int = 77):
    """A CLIP tokenizer built offline: CLIP's byte-level BPE with only its 512 base symbols (each byte symbol,
    alone and word-final) and no merges, so it tokenizes character by character; lower-cases like CLIP."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    vocab.update({symbol + "</w>": len(alphabet) + i for i, symbol in enumerate(alphabet)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def demo_t5_tokenizer(max_length: int = 512):
    """A T5 (Unigram, sentencepiece-style) tokenizer built offline over printable ASCII characters."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in string.printable if not c.isspace()]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def tiny_vae_config(random_init: Mapping) -> dict:
    """The demo VAE's config: TINY_VAE with the overrides of `random_init.vae`."""
    return {**TINY_VAE, **(random_init.get("vae") or {})}


def random_sd3_components(random_init: Mapping, allowed: Iterable[str] = (), task: str = "tti") -> dict:
    """The components of a small SD3 pipeline from configs with seeded random weights (transformer, scheduler, VAE,
    the three text encoders and their tokenizers), built in a fixed order after seeding torch with
    `random_init.seed`; `allowed` are the other keys `random_init` may hold (the task's own settings)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    values = dict(random_init)
    unknown = set(values) - {"seed", "transformer", "vae", "clip", "clip_2", "t5", "scheduler", *allowed}
    if unknown:
        raise ValueError(f"model.random_init: unknown keys {sorted(unknown)} for task {task}")
    torch.manual_seed(int(values.get("seed", 0)))
    tokenizer, tokenizer_3 = demo_clip_tokenizer(), demo_t5_tokenizer()

    def clip_encoder(overrides):
        config = {**TINY_CLIP, **(overrides or {})}
        special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                   "pad_token_id": tokenizer.pad_token_id, "vocab_size": len(tokenizer)}  # fmt: skip
        return CLIPTextModelWithProjection(CLIPTextConfig(**config, **special))

    text_encoder, text_encoder_2 = clip_encoder(values.get("clip")), clip_encoder(values.get("clip_2"))
    t5 = {**TINY_T5, **(values.get("t5") or {}), "vocab_size": len(tokenizer_3)}
    text_encoder_3 = T5EncoderModel(T5Config(**t5))
    clip_width = text_encoder.config.hidden_size + text_encoder_2.config.hidden_size
    if t5["d_model"] < clip_width:
        raise ValueError(f"model.random_init: t5 d_model {t5['d_model']} is below the two CLIP widths {clip_width}")
    transformer = SD3Transformer2DModel(
        **{
            **TINY_TRANSFORMER,
            **(values.get("transformer") or {}),
            "joint_attention_dim": t5["d_model"],
            "pooled_projection_dim": text_encoder.config.projection_dim + text_encoder_2.config.projection_dim,
        }
    )
    vae = AutoencoderKL(**tiny_vae_config(values))
    scheduler = FlowMatchEulerDiscreteScheduler(**{**SD3_SCHEDULER, **(values.get("scheduler") or {})})
    return {
        "transformer": transformer,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": tokenizer,
        "text_encoder_3": text_encoder_3,
        "tokenizer_3": tokenizer_3,
    }


def build_random_sd3(random_init: Mapping, settings: Iterable[str] = ()):
    """A small StableDiffusion3Pipeline from configs with seeded random weights; `settings` are the other keys
    `random_init` may hold (the task's generation settings)."""
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline(**random_sd3_components(random_init, settings))
