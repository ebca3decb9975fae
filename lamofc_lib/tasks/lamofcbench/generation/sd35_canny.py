"""LaMoFCBench's controllable text-to-image scenario (row 16, task `sd35_canny`): Stable Diffusion 3.5 Large with
the canny ControlNet (diffusers' StableDiffusion3ControlNetPipeline) draws an image from a COCO caption and the
edges of the COCO image; FID against the uncompressed pipeline's own images.

As the reference (machine/ctti/sd35cond.py):
- control image: the image resized to cover height x width (the larger ratio, sides rounded up, OpenCV's linear
  interpolation), centre-cropped, gray, `cv2.Canny(gray, 50, 150)`, back to RGB (`canny_control`); the model
  card's image processor (no normalisation, x * 255 * 0.5 + 0.5) prepares it for the VAE;
- sampling: 60 steps, guidance 3.5 (classifier-free, empty negative prompt), ControlNet scale 1.0,
  `max_sequence_length` 77, 1024 x 1024, one prompt per call with a CPU generator seeded 42, samples in sorted
  image-name order;
- what crosses, per sample (13 tensors, named as the reference's coder names them):
  - the conditions: for the prompt (items 0-2) and the negative prompt (items 3-5), CLIP-L's and CLIP-G's pooled
    projection (`text_encoder-item0.clip_pooled_prompt_embeds`, 1 x 768 / 1 x 1280) and penultimate hidden state
    (`.clip_prompt_embeds`, 77 x 768 / 77 x 1280), T5's last hidden state (`text_encoder_3-item2.t5_prompt_embeds`,
    77 x 4096); the VAE encoder's output on the control image, which classifier-free guidance duplicates:
    `vae.encoder_f0` and `vae.encoder_f1`, 32 x 128 x 128 moments each;
  - the latent: the denoising loop's final latent before the VAE decoder's un-scaling (`vae.decoder`,
    16 x 128 x 128);
- frames: prompt embeddings and pooled embeddings as planes (77 x C and 1 x C, padded by the codecs to 128 and 64
  rows), the moments as a 4 x 8 grid of channel planes, the latent as 4 x 4 (packing `tiles`);
- scoring by re-injection, two results per point (the variants `conditions` and `latent`, `mode` picks one):
  conditions: forward hooks on the three text encoders and the VAE encoder return the decoded tensors (the CLIP
  outputs' other hidden states zeroed, as the reference), the pipeline samples the control latent from the
  decoded moments and denoises; latent: the decoded latent is un-scaled and decoded by the VAE. The whole file's
  rate is the BPFP (as the reference), the injected tensors' `bpfp_injected`;
- FID (lamofc_lib.metrics.fid: PNG, PIL resize to 299, the FID InceptionV3's 2048-d pool features) between the
  images from the decoded tensors and the uncompressed pipeline's images: the outputs on the uncompressed
  features, which the workflow's score_original computes once (reference: uncompressed).

Randomness (defect 14): the pipeline samples the control latent with `latent_dist.sample()`, which draws from
torch's global generator. The reference seeds it once per run (`--seed 42`), so a sample's draw depends on the
samples before it. `model.vae_noise: per_prompt` (the default) reseeds it with the seed before each prompt,
inside `torch.random.fork_rng` (nothing else's randomness moves): a sample's images are the same wherever it
stands in the run. `global_once` is the reference's behaviour (seeded once before each pass over the samples).

At scoring the conditions pass runs on the sample's prompt and a blank control image: every output of the three
text encoders and of the VAE encoder is replaced, so neither the prompt's tokens nor the control image's pixels
reach the image except through the injected tensors (tests/test_sd35_canny.py checks the images equal the plain
pipeline's).

`model.random_init` builds a tiny pipeline with seeded random weights (the demo's: lamofc_lib.tasks.lamofc.
sd3_demo's SD3 components and a ControlNet of the SD3.5 canny model's kind, without its own position embedding
or text context); `model.cpu_offload` is diffusers' model CPU offload (the reference's; needs a GPU).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.sources.base import Source
from lamofc_lib.sources.images import load_image
from lamofc_lib.sources.manifest import COLUMNS, SourceError
from lamofc_lib.tasks.base import Task, TensorExtraction, TensorsLayout, model_source, torch_dtype

# torch, diffusers and OpenCV are imported where they run: importing the task registry imports none of them.

GENERATION = {
    "steps": 60,
    "guidance_scale": 3.5,
    "controlnet_scale": 1.0,
    "height": 1024,
    "width": 1024,
    "max_sequence_length": 77,
    "generation_seed": 42,
    "negative_prompt": "",
    "canny_low": 50,
    "canny_high": 150,
    "vae_noise": "per_prompt",
}
VAE_NOISE = {
    "per_prompt": "torch's global generator reseeded with generation_seed before each prompt (inside fork_rng)",
    "global_once": "the reference: torch.manual_seed(generation_seed) once before each pass over the samples",
}
MODES = ("conditions", "latent")
ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
LATENT = "vae.decoder"
PACKING = {False: "plane", True: "tiles"}  # the text encoders' tensors as planes, the VAE's channels as tiles
MOMENTS = ("vae.encoder_f0", "vae.encoder_f1")


def condition_names() -> list[str]:
    """The conditions' tensors in the reference's call order: prompt items 0-2, negative prompt items 3-5 (CLIP-L,
    CLIP-G, T5), then the two VAE encoder outputs."""
    names = []
    for item in range(6):
        encoder = ENCODERS[item % 3]
        if encoder == "text_encoder_3":
            names.append(f"{encoder}-item{item}.t5_prompt_embeds")
        else:
            names += [f"{encoder}-item{item}.clip_pooled_prompt_embeds", f"{encoder}-item{item}.clip_prompt_embeds"]
    return [*names, *MOMENTS]


def generation_settings(model: Mapping) -> dict:
    """The sampling settings: the reference's, overridden by keys of `model` or `model.random_init`."""
    from lamofc_lib.tasks.lamofc.tti import sampler_settings

    settings = sampler_settings(GENERATION, model, "sd35_canny")
    if settings["vae_noise"] not in VAE_NOISE:
        raise ValueError(f"sd35_canny vae_noise must be one of {sorted(VAE_NOISE)}, got {settings['vae_noise']!r}")
    return settings


# --------------------------------------------------------------------------------------------------------------------
# Control images


def canny_control(image: np.ndarray, height: int, width: int, low: int = 50, high: int = 150) -> np.ndarray:
    """The reference's control image of an RGB uint8 image: resized (OpenCV, linear) to cover height x width with
    the larger of the two ratios (the other side rounded up), centre-cropped, gray, Canny edges, as RGB."""
    import cv2

    h, w = image.shape[:2]
    cover_width = width / w > height / h
    size = (width, math.ceil(h * width / w)) if cover_width else (math.ceil(w * height / h), height)
    resized = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    top, left = (size[1] - height) // 2, (size[0] - width) // 2
    gray = cv2.cvtColor(resized[top : top + height, left : left + width], cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(gray, low, high)
    return np.repeat(edges[..., None], 3, axis=2)


@functools.cache
def _canny_processor_class():
    from diffusers.image_processor import VaeImageProcessor

    class CannyImageProcessor(VaeImageProcessor):
        """The SD3.5 canny model card's processor: no normalisation to [-1, 1]; the control image scaled to
        x * 255 * 0.5 + 0.5; decoded images denormalised as usual."""

        def __init__(self):
            super().__init__(do_normalize=False)

        def preprocess(self, image, **kwargs):
            return super().preprocess(image, **kwargs) * 255 * 0.5 + 0.5

        def postprocess(self, image, do_denormalize=None, **kwargs):
            return super().postprocess(image, do_denormalize=[True] * image.shape[0], **kwargs)

    return CannyImageProcessor


# --------------------------------------------------------------------------------------------------------------------
# Models

TINY_CONTROLNET = {
    "num_layers": 1,
    "attention_head_dim": 8,
    "num_attention_heads": 4,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "sample_size": 128,
    # the SD3.5 Large canny ControlNet's kind: no text context, no position embedding of its own (the pipeline
    # gives it the transformer's), the pooled embeddings used
    "joint_attention_dim": None,
    "use_pos_embed": False,
    "pos_embed_type": None,
    "force_zeros_for_pooled_projection": False,
}


def build_random_pipeline(random_init: Mapping):
    """A small StableDiffusion3ControlNetPipeline with seeded random weights: the demo SD3's components
    (sd3_demo.random_sd3_components) and a ControlNet of TINY_CONTROLNET (overrides: random_init.controlnet) whose
    zero-initialised layers (its input embedding and output projections, zero in a fresh ControlNet so that it
    starts with no effect) are drawn too, so that the control image reaches the image."""
    import torch
    from diffusers import SD3ControlNetModel, StableDiffusion3ControlNetPipeline

    from lamofc_lib.tasks.lamofc.sd3_demo import random_sd3_components

    components = random_sd3_components(random_init, {*GENERATION, "controlnet"}, task="sd35_canny")
    transformer = components["transformer"].config
    config = {**TINY_CONTROLNET, **(random_init.get("controlnet") or {})}
    config["pooled_projection_dim"] = transformer.pooled_projection_dim
    if (
        config["num_attention_heads"] * config["attention_head_dim"]
        != transformer.num_attention_heads * transformer.attention_head_dim
    ):
        raise ValueError("model.random_init.controlnet: its width (heads x head size) must be the transformer's")
    controlnet = SD3ControlNetModel(**config)
    with torch.no_grad():
        for module in (*controlnet.controlnet_blocks, controlnet.pos_embed_input):
            for parameter in module.parameters():
                parameter.normal_(0.0, 0.05)
    return StableDiffusion3ControlNetPipeline(**components, controlnet=controlnet)


def load_pipeline(model: Mapping, device: str):
    """The pipeline of a model block: `id` (SD3.5 Large's hub id or folder) and `controlnet` (the canny ControlNet's)
    in `dtype`, on `device` or with model CPU offload (`cpu_offload`); or built from `random_init`."""
    import torch

    dtype = torch_dtype(model.get("dtype", "float32"))
    if model.get("random_init"):
        pipe = build_random_pipeline(model["random_init"]).to(device)
        if dtype != torch.float32:
            pipe = pipe.to(dtype=dtype)
    else:
        source = model_source(model)  # a missing local folder fails here, before diffusers loads anything
        if not model.get("controlnet"):
            raise ValueError("sd35_canny: model.controlnet must name the canny ControlNet (hub id or folder)")
        controlnet = model_source({"id": model["controlnet"]})
        from diffusers import SD3ControlNetModel, StableDiffusion3ControlNetPipeline

        net = SD3ControlNetModel.from_pretrained(controlnet, torch_dtype=dtype)
        pipe = StableDiffusion3ControlNetPipeline.from_pretrained(source, controlnet=net, torch_dtype=dtype)
        if model.get("cpu_offload"):
            if not str(device).startswith("cuda"):
                raise ValueError("sd35_canny: model.cpu_offload needs run.device cuda")
            pipe.enable_model_cpu_offload()
        else:
            pipe = pipe.to(device)
    pipe.image_processor = _canny_processor_class()()
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@functools.lru_cache(maxsize=1)
def _cached_pipeline(model_key: str, device: str):
    """A score job scores many points with one pipeline: loaded once per job."""
    return load_pipeline(json.loads(model_key), device)


def shapes(model: Mapping, settings: Mapping) -> dict[str, tuple[int, int, int, int]]:
    """Every tensor's stored shape (N x C x H x W) from the components' configs, without weights: the tiny ones
    for `random_init`, else the model folder's or hub id's config files."""
    if model.get("random_init"):
        from lamofc_lib.tasks.lamofc.sd3_demo import TINY_CLIP, TINY_T5, tiny_vae_config

        init = model["random_init"]
        clips = [{**TINY_CLIP, **(init.get(k) or {})} for k in ("clip", "clip_2")]
        t5_width = {**TINY_T5, **(init.get("t5") or {})}["d_model"]
        vae = tiny_vae_config(init)
    else:
        source = model_source(model)
        from diffusers import AutoencoderKL
        from transformers import CLIPTextConfig, T5Config

        clips = [CLIPTextConfig.from_pretrained(source, subfolder=k).to_dict() for k in ENCODERS[:2]]
        t5_width = T5Config.from_pretrained(source, subfolder="text_encoder_3").d_model
        vae = dict(AutoencoderKL.load_config(source, subfolder="vae"))
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    latent = (int(vae["latent_channels"]), settings["height"] // factor, settings["width"] // factor)
    out = {}
    for item in range(6):
        encoder = ENCODERS[item % 3]
        key = f"{encoder}-item{item}"
        if encoder == "text_encoder_3":
            out[f"{key}.t5_prompt_embeds"] = (1, 1, int(settings["max_sequence_length"]), int(t5_width))
        else:
            clip = clips[item % 3]
            out[f"{key}.clip_pooled_prompt_embeds"] = (1, 1, 1, int(clip["projection_dim"]))
            out[f"{key}.clip_prompt_embeds"] = (1, 1, int(clip["max_position_embeddings"]), int(clip["hidden_size"]))
    for name in MOMENTS:
        out[name] = (1, 2 * latent[0], *latent[1:])
    out[LATENT] = (1, *latent)
    return out


# --------------------------------------------------------------------------------------------------------------------
# The split: the encoders' outputs (conditions) and the final latent


def _stored(tensor):
    """A model tensor as the store holds it, 4-D: (1, C) pooled -> (1, 1, 1, C); (1, T, C) -> (1, 1, T, C)."""
    return tensor.reshape((1,) * (5 - tensor.ndim) + tuple(tensor.shape[1:])) if tensor.ndim < 4 else tensor


def _put(name: str, decoded: Mapping, own) -> None:
    """Overwrite the module's own output tensor `own` with the decoded tensor `name`, in place (its dtype, device
    and memory layout kept, so that what runs after it runs exactly as on the model's own values)."""
    import torch

    if name not in decoded:
        raise KeyError(f"no decoded tensor '{name}'")
    value = decoded[name]
    value = torch.as_tensor(value if torch.is_tensor(value) else np.asarray(value))
    if tuple(value.shape) != tuple(_stored(own).shape):
        raise ValueError(
            f"decoded tensor '{name}' has shape {tuple(value.shape)}, the model's is {tuple(_stored(own).shape)}"
        )
    own.copy_(value.reshape(own.shape))


@contextlib.contextmanager
def condition_split(pipe, decoded: Mapping | None = None) -> Iterator[dict]:
    """While open, one pipeline call's encoder outputs are recorded into the yielded dict (copies, stored shapes)
    under the reference's names, counting the calls as the reference does (prompt, then negative prompt; CLIP-L,
    CLIP-G, T5; then the VAE encoder). With `decoded` (name -> array or tensor, every condition), each module's
    output tensors are overwritten in place with the decoded ones (a CLIP encoder's other hidden states zeroed, as
    the reference), which is what the pipeline then reads."""
    found: dict = {}
    calls = [0]

    def text_hook(encoder):
        def hook(module, args, output):
            item = calls[0]
            calls[0] += 1
            if item > 5 or ENCODERS[item % 3] != encoder:
                raise RuntimeError(
                    f"sd35_canny: {encoder} ran as call {item} of the text encoders; the reference's order is "
                    "CLIP-L, CLIP-G, T5 for the prompt, then for the negative prompt"
                )
            key = f"{encoder}-item{item}"
            if encoder == "text_encoder_3":
                own = {f"{key}.t5_prompt_embeds": output.last_hidden_state}
            else:
                own = {
                    f"{key}.clip_pooled_prompt_embeds": output.text_embeds,
                    f"{key}.clip_prompt_embeds": output.hidden_states[-2],
                }
            found.update({name: _stored(t.detach().clone()) for name, t in own.items()})
            if decoded is not None:
                if encoder != "text_encoder_3":  # the hidden states the pipeline does not read, zeroed
                    for hidden in output.hidden_states:
                        if hidden is not output.hidden_states[-2]:
                            hidden.zero_()
                for name, tensor in own.items():
                    _put(name, decoded, tensor)
            return None

        return hook

    def vae_hook(module, args, output):
        if output.shape[0] != 2:
            raise RuntimeError(
                f"sd35_canny: the VAE encoder ran on {output.shape[0]} images; classifier-free guidance gives the "
                "reference's 2 (guidance_scale > 1)"
            )
        for b, name in enumerate(MOMENTS):
            found[name] = output[b : b + 1].detach().clone()
            if decoded is not None:
                _put(name, decoded, output[b : b + 1])
        return None

    modules = [(getattr(pipe, e), text_hook(e)) for e in ENCODERS] + [(pipe.vae.encoder, vae_hook)]
    handles = [module.register_forward_hook(hook) for module, hook in modules]
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()


def _noise(settings: Mapping, device: str):
    """The randomness of one prompt's VAE draw (see the module docstring): per_prompt reseeds the global
    generator inside fork_rng; global_once leaves it running."""
    import torch

    if settings["vae_noise"] != "per_prompt":
        return contextlib.nullcontext()
    devices = [torch.device(device).index or 0] if str(device).startswith("cuda") else []

    @contextlib.contextmanager
    def reseeded():
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(settings["generation_seed"]))
            yield

    return reseeded()


def generate_latent(pipe, prompt: str, control: np.ndarray, settings: Mapping):
    """The final latent (1 x 16 x h x w, before un-scaling) of one prompt and control image, with the reference's
    sampling settings and its per-prompt CPU generator."""
    import torch
    from PIL import Image

    generator = torch.Generator("cpu").manual_seed(int(settings["generation_seed"]))
    with torch.no_grad():
        return pipe(
            prompt=[prompt],
            negative_prompt=settings["negative_prompt"],
            num_inference_steps=settings["steps"],
            height=settings["height"],
            width=settings["width"],
            generator=[generator],
            max_sequence_length=settings["max_sequence_length"],
            output_type="latent",
            control_image=[Image.fromarray(control)],
            controlnet_conditioning_scale=float(settings["controlnet_scale"]),
            guidance_scale=float(settings["guidance_scale"]),
        ).images


# --------------------------------------------------------------------------------------------------------------------
# Sources


def _coco_canny(source: Mapping) -> pd.DataFrame:
    """The reference's sample list (`labels`: a JSON list of {"image_name", "caption"}) over the image folder
    `root`, in sorted image-name order; sample id = the image file's stem (its feature file's name)."""
    root, path = Path(source["root"]), Path(source["labels"])
    if not path.is_file():
        raise SourceError(f"sample list {path} does not exist (source.labels)")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        pairs = {str(e["image_name"]): str(e["caption"]) for e in entries}
    except (ValueError, KeyError, TypeError) as err:
        raise SourceError(f"{path}: not a list of {{image_name, caption}} entries ({err!r})") from None
    rows = []
    for name in sorted(pairs):
        if "/" in name or name in (".", ".."):
            raise SourceError(f"{path}: image name {name!r} is not a file name in {root}")
        rows.append({"sample_id": Path(name).stem, "source": str(root / name), "label": "", "text": pairs[name]})
    return pd.DataFrame(rows, columns=COLUMNS)


class CocoCanny(Source):
    kind = "coco_canny"
    description = "the reference's COCO sample list (data_infos.json: image_name, caption) over its image folder"
    properties = {
        "root": {"description": "coco_canny: the image folder (selected_100samples/images).",
                 "type": ["string", "null"]},
        "labels": {"description": "coco_canny: the sample list (selected_100samples/data_infos.json).",
                   "type": ["string", "null"]},
    }  # fmt: skip
    path_keys = required = ("root", "labels")
    read = staticmethod(_coco_canny)


def _canny_demo(source: Mapping) -> pd.DataFrame:
    from lamofc_lib.sources.captions import _captions_demo
    from lamofc_lib.sources.images import _skimage

    table = _skimage({"images": sorted(source["images"])})
    captions = list(_captions_demo({})["text"])
    if len(table) > len(captions):
        raise SourceError(f"canny_demo: {len(table)} images but {len(captions)} shipped captions")
    return table.assign(text=captions[: len(table)])


class CannyDemo(Source):
    kind = "canny_demo"
    description = "images that scikit-image ships, in name order, each with the next shipped demo caption (demo)"
    properties = {"images": {"description": "canny_demo: the image names.", "type": "array", "minItems": 1,
                             "items": {"type": "string"}}}  # fmt: skip
    required = ("images",)
    read = staticmethod(_canny_demo)


# --------------------------------------------------------------------------------------------------------------------
# Task


class ControlNetCanny(Task):
    name = "sd35_canny"
    metric = "fid"
    metric_label = "FID"
    higher_is_better = False
    sources = (CocoCanny, CannyDemo)
    references = ("uncompressed",)
    needs_split = False
    reference_policy = "first"
    metric_options = ("mode",)
    options = {
        "mode": {
            "description": (
                "Which split is put back: conditions, latent, or null (both, the variants sd35_canny:conditions "
                "and sd35_canny:latent, as the reference's two runs)."
            ),
            "enum": ["conditions", "latent", None],
            "default": None,
        },
    }
    model_options = {
        "controlnet": {"description": "The canny ControlNet (hub id or folder).", "type": "string"},
        "cpu_offload": {"description": "diffusers' model CPU offload (the reference's; GPU only).", "type": "boolean"},
        "steps": {"description": "Denoising steps (reference 60).", "type": "integer", "minimum": 1},
        "guidance_scale": {"description": "Classifier-free guidance (reference 3.5; must be > 1).", "type": "number"},
        "controlnet_scale": {"description": "ControlNet conditioning scale (reference 1.0).", "type": "number"},
        "height": {"description": "Image height (reference 1024).", "type": "integer", "minimum": 16},
        "width": {"description": "Image width (reference 1024).", "type": "integer", "minimum": 16},
        "max_sequence_length": {"description": "T5 prompt tokens (reference 77).", "type": "integer", "minimum": 1},
        "generation_seed": {"description": "The generators' seed (reference 42).", "type": "integer"},
        "negative_prompt": {"description": "Negative prompt (reference empty).", "type": "string"},
        "canny_low": {"description": "Canny's lower threshold (reference 50).", "type": "integer", "minimum": 0},
        "canny_high": {"description": "Canny's upper threshold (reference 150).", "type": "integer", "minimum": 0},
        "vae_noise": {
            "description": (
                "The control latent's draw: per_prompt (the global generator reseeded before each prompt: a "
                "sample's images independent of the others) or global_once (the reference: seeded once per pass, "
                "so a draw depends on the samples before it)."
            ),
            "enum": sorted(VAE_NOISE),
        },
    }
    preload = ("diffusers:StableDiffusion3ControlNetPipeline", "diffusers:AutoencoderKL", "cv2")
    mode = None  # tasks.sd35_canny.mode

    def layout(self, manifest: pd.DataFrame, model: Mapping, split) -> TensorsLayout:
        from lamofc_lib.store import TensorLayout

        settings = generation_settings(model)
        dtype = str(model.get("dtype", "float32"))
        if dtype not in ("float16", "float32"):
            raise ValueError(f"sd35_canny: model.dtype float16 or float32 (the reference's fp16), got {dtype}")
        tensors = {
            name: TensorLayout([shape] * len(manifest), dtype, {"packing": PACKING[name.startswith("vae.")]})
            for name, shape in shapes(model, settings).items()
        }
        attrs = {
            "task": self.block,
            "model": {k: v for k, v in model.items() if v is not None},
            "split": {
                "where": "conditions: the text encoders' and VAE encoder's outputs; latent: the VAE decoder's "
                "input before un-scaling"
            },  # fmt: skip
            "extraction": {
                **settings,
                "noise": VAE_NOISE[settings["vae_noise"]],
                "dtype": dtype,
                "prompts": [str(t) for t in manifest["text"]],
            },  # fmt: skip
        }
        return TensorsLayout(tensors, attrs)

    def features(self, manifest: pd.DataFrame, model: Mapping, split) -> TensorExtraction:
        import torch

        layout = self.layout(manifest, model, split)
        settings = generation_settings(model)
        pipe = load_pipeline(model, self.device)

        def samples():
            if settings["vae_noise"] == "global_once":
                torch.manual_seed(int(settings["generation_seed"]))
            for source, prompt in zip(manifest["source"], manifest["text"], strict=True):
                control = canny_control(load_image(source), settings["height"], settings["width"],
                                        settings["canny_low"], settings["canny_high"])  # fmt: skip
                with condition_split(pipe) as found, _noise(settings, self.device):
                    latent = generate_latent(pipe, str(prompt), control, settings)
                found[LATENT] = latent
                sample = {name: found[name].cpu().numpy() for name in layout.tensors}
                for name, tensor in layout.tensors.items():
                    if sample[name].shape != tensor.shapes[0]:
                        raise RuntimeError(
                            f"sd35_canny: {name} has shape {sample[name].shape}, expected {tensor.shapes[0]}"
                        )
                yield sample

        attrs = {**layout.attrs, "extraction": {**layout.attrs["extraction"], "device": self.device}}
        return TensorExtraction(layout.tensors, samples(), attrs)

    def write_head(self, model: Mapping, split, head: Mapping, head_out: Path) -> None:
        """The VAE decoder (as tti's head), which turns either split's latent into the image; the conditions' pass
        loads the rest of the pipeline from the model block at scoring."""
        import torch

        from lamofc_lib.tasks.lamofc.tti import decoder_head

        if head and head.get("checkpoint"):
            raise ValueError(f"task {self.block} takes its head (the VAE decoder) from the model; set "
                             f"tasks.{self.block}.head.checkpoint to null")  # fmt: skip
        if model.get("random_init"):
            vae = build_random_pipeline(model["random_init"]).vae
        else:
            from diffusers import AutoencoderKL

            vae = AutoencoderKL.from_pretrained(model_source(model), subfolder="vae",
                                                torch_dtype=torch_dtype(model.get("dtype", "float32")))  # fmt: skip
        torch.save({**decoder_head(vae), "scenario": self.name}, head_out)

    def head_input(self, sample: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return sample

    def import_tensors(self, name: str, tensor) -> dict:
        """The reference's file holds the moments as `vae.encoder` -> {`vae.encoder_f0`, `vae.encoder_f1`} (its
        key possibly `vae.encoder-item6`) and the latent `vae.decoder`, each without the batch axis: as the stored
        (1, C, H, W) tensors."""
        match = re.fullmatch(r"vae\.encoder(?:-item\d+)?\.(vae\.encoder_f[01])", name)
        if match:
            return {match[1]: tensor[None]}
        if name == LATENT and tensor.ndim == 3:
            return {name: tensor[None]}
        return {name: tensor}

    def variants(self, attrs: Mapping) -> dict[str, dict]:
        return {} if self.mode else {mode: {"mode": mode} for mode in MODES}

    def injected_tensors(self, attrs: Mapping) -> list[str]:
        return condition_names() if self.mode == "conditions" else [LATENT]

    def tensor_groups(self, layouts: Mapping[str, Mapping]) -> dict[str, list[str]]:
        """The conditions by module: CLIP-L, CLIP-G and T5 (prompt and negative prompt each), the VAE encoder
        (the latent is the latent variant's only tensor)."""
        names = condition_names()
        groups = {e: [n for n in names if n.startswith(f"{e}-")] for e in ENCODERS}
        return {**groups, "vae.encoder": list(MOMENTS)}

    def images(self, head: Path, features: Iterable[Mapping[str, np.ndarray]], attrs: Mapping) -> Iterator:
        """uint8 1 x 3 x H x W images from each sample's (decoded) tensors, in `mode`: the conditions put back
        into the pipeline, or the latent decoded."""
        import torch

        from lamofc_lib.tasks.lamofc.tti import decode_latent, decoding

        if self.mode not in MODES:
            raise ValueError(f"task {self.block}: mode must be one of {MODES}, got {self.mode!r}")
        (vae, scaling_factor, shift_factor), _ = decoding(self, head)
        model = attrs["model"]
        settings = generation_settings(model)
        if self.mode == "conditions":
            pipe = _cached_pipeline(json.dumps(model, sort_keys=True), self.device)
            blank = np.zeros((settings["height"], settings["width"], 3), np.uint8)
            if settings["vae_noise"] == "global_once":
                torch.manual_seed(int(settings["generation_seed"]))
        prompts = attrs["extraction"]["prompts"]
        for prompt, sample in zip(prompts, features, strict=True):
            if self.mode == "conditions":
                with condition_split(pipe, decoded=sample), _noise(settings, self.device):
                    latent = generate_latent(pipe, prompt, blank, settings)
            else:
                latent = torch.from_numpy(np.ascontiguousarray(sample[LATENT]))
            yield decode_latent(vae, latent.to(self.device, vae.dtype), scaling_factor, shift_factor)

    def head_outputs(self, head: Path, features: Iterable, attrs: Mapping) -> list:
        """Per sample: the 2048-d Inception pool features (float64) of its image. An image this job has seen
        before (the latent variant's uncompressed latent while a tensor group of the conditions is scored, the
        uncompressed images of each variant) reuses its features."""
        import hashlib

        from lamofc_lib.tasks.lamofc.tti import decoding

        _, inception = decoding(self, head)
        seen = self.__dict__.setdefault("_activations", {})
        out = []
        for image in self.images(head, features, attrs):
            pixels = image.cpu().numpy()
            key = (pixels.shape, hashlib.sha256(pixels.tobytes()).hexdigest())
            if key not in seen:
                seen[key] = inception(image)[0].astype(np.float64)
            out.append(seen[key].copy())
        return out

    def ground_truth(self, manifest: pd.DataFrame) -> list:
        raise ValueError(f"task {self.block} is scored against the uncompressed pipeline's images, not ground truth; "
                         f"set tasks.{self.block}.reference to uncompressed")  # fmt: skip

    def compare(self, outputs: Sequence, references: Sequence) -> tuple[float, list[dict]]:
        from lamofc_lib.tasks.lamofc.tti import fid_compare

        return fid_compare(outputs, references, self.block)
