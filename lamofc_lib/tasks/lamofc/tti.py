"""Text-to-image generation with Stable Diffusion 3 (task tti).

Split: the latent that enters the VAE decoder, i.e. the final latent of the denoising loop BEFORE
`latent / scaling_factor + shift_factor`: 1 x 16 x H/8 x W/8 per prompt (1 x 16 x 128 x 128 at 1024 x 1024).
Generation follows the reference implementation: the pipeline in `model.dtype` (fp16 for the benchmark) on the
run's device, 28 steps, guidance 7.0, negative prompt "", prompts in batches of 16 in manifest (caption file)
order, and the global seed 3407 set ONCE per run (`torch.manual_seed` before the first batch; the pipeline gets
no generator, so its noise comes from the global RNG of the device, one draw per batch). The latents are stored
in the pipeline's dtype: float16 for an fp16 model (the reference saves fp16 `.npy` files), else float32.
Because the noise of a batch is the next draw of the device's RNG, another batch size, another prompt count or
order, or another device gives other latents (the reference warns about this too). `model.seeding: per_prompt`
instead gives every prompt its own CPU generator seeded with the seed: noise independent of the batch, the other
prompts and the device (demos, tests), but not the reference's latents.

Head: the VAE decoder. The head file holds the decoder (and post_quant_conv, where the VAE has one) weights, the
VAE config and its scaling and shift factors. Outputs: the decoded images' InceptionV3 pool3 activations; the
metric is the FID between the activations on decoded and on uncompressed latents (no ground truth).

`model.random_init` builds a tiny SD3 pipeline with seeded random weights instead (lamofc_lib.tasks.lamofc.sd3_demo).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lamofc_lib.sources.captions import CaptionsDemo, CocoCaptions
from lamofc_lib.tasks.base import Extraction, Layout, Task, load_head_file, model_source, torch_dtype

if TYPE_CHECKING:
    import pandas as pd
    import torch

# torch, diffusers and the demo pipeline (lamofc_lib.tasks.lamofc.sd3_demo) are imported where they run, so that
# importing the task registry imports no torch.

# The benchmark's generation settings; `model` or `model.random_init` may override any of them.
GENERATION = {
    "steps": 28,
    "guidance_scale": 7.0,
    "height": 1024,
    "width": 1024,
    "negative_prompt": "",
    "generation_seed": 3407,
    "max_sequence_length": 256,
    # Prompts per pipeline call. The reference keeps 16: another size gives other latents (see the module
    # docstring), so change it only knowingly.
    "generation_batch": 16,
    # global_once: the reference's global seed, set once per run; per_prompt: a seeded CPU generator per prompt.
    "seeding": "global_once",
}
SEEDING = {
    "global_once": "torch.manual_seed(generation_seed) once before the first batch; the device's global RNG",
    "per_prompt": "a torch CPU generator per prompt, seeded with generation_seed",
}
HEAD_KEYS = ("vae_config", "state_dict", "scaling_factor", "shift_factor")


def sampler_settings(defaults: Mapping, model: Mapping, task: str) -> dict:
    """A diffusion pipeline's settings: `defaults`, overridden by the keys of `model` or `model.random_init` that
    are set; height and width checked (multiples of 16: the VAE's factor 8 times the patch size 2)."""
    settings = dict(defaults)
    for where in (model, model.get("random_init") or {}):
        settings.update({k: where[k] for k in defaults if where.get(k) is not None})
    for key in ("height", "width"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 16:
            raise ValueError(f"{task} {key} must be a positive multiple of 16 (VAE factor 8 x patch 2), got {value!r}")
    return settings


def generation_settings(model: Mapping) -> dict:
    """The generation settings: the benchmark's, overridden by keys of `model` or `model.random_init`."""
    settings = sampler_settings(GENERATION, model, "tti")
    for key in ("steps", "generation_batch"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"tti {key} must be a positive integer, got {value!r}")
    if settings["seeding"] not in SEEDING:
        raise ValueError(f"tti seeding must be one of {sorted(SEEDING)}, got {settings['seeding']!r}")
    return settings


def feature_dtype(model: Mapping) -> str:
    """The store dtype of the latents: float16 when the pipeline runs in fp16 (kept as produced), else float32
    (bfloat16 latents are widened: NumPy has no bfloat16)."""
    return "float16" if model.get("dtype", "float32") == "float16" else "float32"


# --------------------------------------------------------------------------------------------------------------------
# Models


def vae_config(model: Mapping) -> dict:
    """The VAE config of the model without loading any weights: the tiny config for `model.random_init`, else
    vae/config.json of the hub id or local folder (read by diffusers, from the hub cache or the folder)."""
    if model.get("random_init"):
        from lamofc_lib.tasks.lamofc.sd3_demo import tiny_vae_config

        return tiny_vae_config(model["random_init"])
    source = model_source(model)  # a missing local folder fails here
    from diffusers import AutoencoderKL

    return dict(AutoencoderKL.load_config(source, subfolder="vae"))


def load_sd3(model: Mapping, device: str):
    """StableDiffusion3Pipeline from a hub id or local folder (model.id), or built from model.random_init."""
    import torch

    from lamofc_lib.tasks.lamofc.sd3_demo import build_random_sd3

    dtype = torch_dtype(model.get("dtype", "float32"))
    if model.get("random_init"):
        pipe = build_random_sd3(model["random_init"], GENERATION).to(device)
        if dtype != torch.float32:
            pipe = pipe.to(dtype=dtype)
    else:
        source = model_source(model)  # a missing local folder fails here, before diffusers loads anything
        from diffusers import StableDiffusion3Pipeline

        pipe = StableDiffusion3Pipeline.from_pretrained(source, torch_dtype=dtype).to(device)
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()  # modules built from configs start in training mode (T5 dropout)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_vae(model: Mapping, device: str):
    """The model's VAE alone (the pipeline's own for `random_init`, whose seeded weights depend on the order
    the components are built in), in `model.dtype`."""
    if model.get("random_init"):
        return load_sd3(model, device).vae
    source = model_source(model)
    from diffusers import AutoencoderKL

    dtype = torch_dtype(model.get("dtype", "float32"))
    return AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype).to(device).eval()


def vae_config_dict(config: Mapping) -> dict:
    """The VAE config as plain Python values (torch.load(weights_only=True) can read it back)."""

    def plain(value):
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"VAE config value {value!r} is not a plain value")

    return {k: plain(v) for k, v in dict(config).items() if not k.startswith("_")}


def decoder_state(vae) -> dict[str, torch.Tensor]:
    """The weights that decoding uses: decoder and post_quant_conv (SD3's VAE has no post_quant_conv)."""
    return {
        k: v.detach().cpu().clone()
        for k, v in vae.state_dict().items()
        if k.startswith(("decoder.", "post_quant_conv."))
    }


def decoder_head(vae) -> dict:
    """What a head file holds of a VAE (`load_vae_decoder` reads it): its config, decoding weights, scaling and
    shift factors."""
    return {
        "vae_config": vae_config_dict(vae.config),
        "state_dict": decoder_state(vae),
        "scaling_factor": float(vae.config.scaling_factor),
        "shift_factor": float(vae.config.shift_factor or 0.0),
    }


def load_vae_decoder(head: Path | Mapping, device: str = "cpu"):
    """(vae, scaling_factor, shift_factor) from a head file (or its loaded dict); only the decoding part of the
    AutoencoderKL holds weights (its encoder is left uninitialised and never used). On a GPU the decoder runs in
    the dtype its weights were saved in (fp16 for the benchmark's SD3, as the reference decodes); on the CPU, in
    float32 (half-precision convolutions are slow or missing there), a documented deviation."""
    import torch
    from diffusers import AutoencoderKL

    state = head if isinstance(head, Mapping) else load_head_file(head, dict.fromkeys(HEAD_KEYS))
    with torch.device("meta"):
        vae = AutoencoderKL(**state["vae_config"])
    vae = vae.to_empty(device=device)
    saved = {v.dtype for v in state["state_dict"].values()}
    dtype = saved.pop() if len(saved) == 1 and str(device).startswith("cuda") else torch.float32
    weights = {k: v.float() for k, v in state["state_dict"].items()}
    result = vae.load_state_dict(weights, strict=False)
    missing = [k for k in result.missing_keys if k.startswith(("decoder.", "post_quant_conv."))]
    if missing or result.unexpected_keys:
        raise ValueError(f"head: VAE decoder weights do not fit its config: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")  # fmt: skip
    return vae.to(dtype).eval(), float(state["scaling_factor"]), float(state["shift_factor"])


def latent_shape(config: Mapping, settings: Mapping) -> tuple[int, int, int, int]:
    """1 x latent_channels x height/f x width/f, f = 2^(number of VAE levels - 1) (8 for SD3's four levels)."""
    factor = 2 ** (len(config["block_out_channels"]) - 1)
    return (1, int(config["latent_channels"]), settings["height"] // factor, settings["width"] // factor)


def decode_latent(vae, latent: torch.Tensor, scaling_factor: float, shift_factor: float) -> torch.Tensor:
    """uint8 N x 3 x H x W images from split-point latents, as SD3's pipeline and image processor make them:
    `latent / scaling_factor + shift_factor`, VAE decode, (x / 2 + 0.5).clamp(0, 1), round(255 x)."""
    import torch

    with torch.no_grad():
        image = vae.decode(latent / scaling_factor + shift_factor).sample
        image = (image / 2 + 0.5).clamp(0, 1)  # in the decoder's dtype, as diffusers' image processor
    return (image.float() * 255).round().to(torch.uint8)


# --------------------------------------------------------------------------------------------------------------------
# Task


class TextToImageTask(Task):
    name = "tti"
    packing = "tiles"
    metric = "fid"
    higher_is_better = False
    metric_label = "FID"
    sources = (CocoCaptions, CaptionsDemo)
    model_options = {
        "steps": {"description": "Denoising steps (reference 28).", "type": "integer", "minimum": 1},
        "guidance_scale": {"description": "Classifier-free guidance (reference 7.0).", "type": "number"},
        "height": {"description": "Image height in pixels (reference 1024).", "type": "integer", "minimum": 16},
        "width": {"description": "Image width in pixels (reference 1024).", "type": "integer", "minimum": 16},
        "negative_prompt": {"description": "Negative prompt (reference empty).", "type": "string"},
        "generation_seed": {"description": "The seed (reference 3407).", "type": "integer"},
        "max_sequence_length": {"description": "T5 prompt tokens (256).", "type": "integer", "minimum": 1},
        "generation_batch": {
            "description": (
                "Prompts per pipeline call (reference 16, in caption-file order). With seeding global_once another "
                "batch size gives other latents than the reference's."
            ),
            "type": "integer",
            "minimum": 1,
        },
        "seeding": {
            "description": (
                "global_once (the reference: torch.manual_seed once per run, noise from the device's global "
                "generator, so latents depend on batch size, prompt order and device) or per_prompt (a seeded CPU "
                "generator per prompt: device-independent, a deviation)."
            ),
            "enum": ["global_once", "per_prompt"],
        },
    }
    preload = ("diffusers:AutoencoderKL", "diffusers:StableDiffusion3Pipeline")
    reference_policy = "first"
    # FID compares the images decoded from the coded latents with those decoded from the uncompressed ones.
    references = ("uncompressed",)
    needs_split = False

    def write_head(self, model, split, head, head_out: Path) -> None:
        """The VAE decoder (decoder and post_quant_conv weights, in the model's dtype), its config and the
        scaling and shift factors; tti takes no head checkpoint."""
        import torch

        if head and head.get("checkpoint"):
            raise ValueError("task tti takes its head (the VAE decoder) from the model; set tasks.tti.head.checkpoint "
                             "to null")  # fmt: skip
        settings = generation_settings(model)
        vae = load_vae(model, "cpu")
        torch.save({**decoder_head(vae), "latent_shape": list(latent_shape(vae.config, settings))}, head_out)

    def layout(self, manifest: pd.DataFrame, model, split) -> Layout:
        """1 x latent_channels x H/f x W/f per prompt (f = 2^(VAE levels - 1) = 8), from the generation settings
        and the VAE config alone."""
        settings = generation_settings(model)
        shape = latent_shape(vae_config(model), settings)
        attrs = {
            "task": self.block,
            "model": {k: v for k, v in model.items() if v is not None},
            "split": {"where": "input of the VAE decoder: final latent, before / scaling_factor + shift_factor"},
            "extraction": {**settings, "noise": SEEDING[settings["seeding"]], "dtype": model.get("dtype", "float32")},
        }
        return Layout([shape] * len(manifest), attrs, feature_dtype(model))

    def features(self, manifest: pd.DataFrame, model, split) -> Extraction:
        import torch

        layout = self.layout(manifest, model, split)
        settings = generation_settings(model)
        shape = layout.shapes[0]
        dtype = layout.dtype
        pipe = load_sd3(model, self.device)
        prompts = [str(p) for p in manifest["text"]]
        batch = settings["generation_batch"]
        seed = int(settings["generation_seed"])

        def samples():
            if settings["seeding"] == "global_once":
                torch.manual_seed(seed)  # seeds the CPU and every CUDA device; once, before the first batch
            for start in range(0, len(prompts), batch):
                chunk = prompts[start : start + batch]
                generator = None
                if settings["seeding"] == "per_prompt":
                    generator = [torch.Generator("cpu").manual_seed(seed) for _ in chunk]
                with torch.no_grad():
                    latents = pipe(
                        prompt=chunk,
                        negative_prompt=settings["negative_prompt"],
                        num_inference_steps=settings["steps"],
                        guidance_scale=float(settings["guidance_scale"]),
                        height=settings["height"],
                        width=settings["width"],
                        max_sequence_length=settings["max_sequence_length"],
                        generator=generator,
                        output_type="latent",
                    ).images
                expected = (len(chunk), *shape[1:])
                if tuple(latents.shape) != expected:
                    raise RuntimeError(f"task tti: the pipeline gave latents of shape {tuple(latents.shape)}, "
                                       f"expected {expected}")  # fmt: skip
                latents = latents.cpu()
                latents = latents if dtype == "float16" else latents.float()
                for i in range(len(chunk)):
                    yield latents[i : i + 1].numpy()

        attrs = {**layout.attrs, "extraction": {**layout.attrs["extraction"], "device": self.device}}
        return Extraction(layout.shapes, samples(), attrs, dtype)

    def reference_stem(self, sample_id: str) -> str:
        """The reference names each latent after its COCO file, e.g. COCO_val2017_000000397133.npy."""
        return f"COCO_val2017_{int(sample_id):012d}"

    def predict(self, head: Path, features: Iterable[np.ndarray]) -> list[str]:
        raise NotImplementedError("task tti has no label predictions; its outputs are Inception activations")

    def head_outputs(
        self, head: Path, features: Iterable[np.ndarray], attrs: Mapping | None = None, save_images: Path | None = None
    ) -> list:
        """Per sample: the 2048-d Inception pool3 activations (float64) of the image decoded from the latent.
        With `save_images`, the decoded images are also written there as 00000.png, 00001.png, ..."""
        import torch

        (vae, scaling_factor, shift_factor), inception = decoding(self, head)
        channels = int(vae.config.latent_channels)
        if save_images is not None:
            save_images = Path(save_images)
            save_images.mkdir(parents=True, exist_ok=True)
        out = []
        for i, x in enumerate(features):
            if x.ndim != 4 or x.shape[:2] != (1, channels):
                raise ValueError(f"task tti: sample {i} has shape {x.shape}, expected 1 x {channels} x h x w")
            latent = torch.from_numpy(np.ascontiguousarray(x)).to(self.device, vae.dtype)
            image = decode_latent(vae, latent, scaling_factor, shift_factor)
            if save_images is not None:
                from PIL import Image

                Image.fromarray(image[0].permute(1, 2, 0).cpu().numpy()).save(save_images / f"{i:05d}.png")
            out.append(inception(image)[0].astype(np.float64))
        return out

    def ground_truth(self, manifest: pd.DataFrame) -> list:
        raise ValueError(
            "task tti is scored against the images decoded from the uncompressed latents, not against ground "
            "truth; set tasks.tti.reference to uncompressed (reference: uncompressed is required)"
        )

    def compare(self, outputs: Sequence, references: Sequence) -> tuple[float, list[dict]]:
        return fid_compare(outputs, references, self.block)


def decoding(task: Task, head: Path) -> tuple[tuple, object]:
    """The head file's VAE decoder (`load_vae_decoder`) and the FID InceptionV3 on the task's device, loaded once
    per job and head file (kept on the task): a score job decodes every point (on the demo's 6 images a point
    took 2.5 to 3.0 s with them kept, 3.2 s loading them again, 2026-12-07)."""
    from lamofc_lib.metrics.fid import InceptionFeatures

    key = (str(head), Path(head).stat().st_mtime_ns, task.device)
    if getattr(task, "_decoding", (None,))[0] != key:
        task._decoding = (key, load_vae_decoder(head, task.device), InceptionFeatures(device=task.device))
    return task._decoding[1], task._decoding[2]


def fid_compare(outputs: Sequence, references: Sequence, task: str) -> tuple[float, list[dict]]:
    """FID between two sets of Inception activations (a generation task's `compare`), and per sample the L2
    distance between its two activation vectors (`identical`: the vectors are equal)."""
    from lamofc_lib.metrics.fid import fid

    if len(outputs) != len(references):
        raise ValueError(f"task {task}: {len(outputs)} outputs for {len(references)} references")
    if len(outputs) < 2:
        raise ValueError(f"task {task}: FID needs at least 2 samples, got {len(outputs)}")
    a = np.stack([np.asarray(o, dtype=np.float64).ravel() for o in outputs])
    b = np.stack([np.asarray(r, dtype=np.float64).ravel() for r in references])
    if a.shape != b.shape:
        raise ValueError(f"task {task}: activations {a.shape[1:]} and references {b.shape[1:]} differ in size")
    rows = [
        {"activation_l2": float(np.linalg.norm(x - y)), "identical": bool(np.array_equal(x, y))}
        for x, y in zip(a, b, strict=True)
    ]
    return float(fid(a, b)), rows


__all__ = [
    "GENERATION",
    "TextToImageTask",
    "decode_latent",
    "decoder_head",
    "decoding",
    "fid_compare",
    "generation_settings",
    "latent_shape",
    "load_sd3",
    "load_vae_decoder",
]
