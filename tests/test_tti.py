"""Task tti: the feature is the SD3 latent that enters the VAE decoder (before / scaling_factor + shift_factor),
the head is the VAE decoder, and the metric is the FID of the decoded images against the images decoded from
the uncompressed latents."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import torch

from lamofc_lib.metrics import fid
from lamofc_lib.sources import COLUMNS, SourceError
from lamofc_lib.store import FeatureStore
from lamofc_lib.tasks.tti import (
    GENERATION,
    TextToImageTask,
    coco_captions_manifest,
    decode_latent,
    decoder_state,
    generation_settings,
    load_sd3,
    load_vae_decoder,
    vae_config_dict,
)

# vae/config.json of stabilityai/stable-diffusion-3-medium-diffusers (the published values).
SD3_MEDIUM_VAE = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 16,
    "latents_mean": None,
    "latents_std": None,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 1024,
    "scaling_factor": 1.5305,
    "shift_factor": 0.0609,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "use_post_quant_conv": False,
    "use_quant_conv": False,
}

LONG_PROMPT = (
    "A large passenger airplane flying over a city skyline at sunset, with clouds lit in orange and purple "
    "and a river winding below"  # > 77 characters: the character-level demo CLIP tokenizer truncates it
)
PROMPTS = ["A cat sitting on a red mat.", "Two dogs playing in the snow.", LONG_PROMPT, "A cat sitting on a red mat."]
DEMO = {"random_init": {"seed": 0, "height": 128, "width": 128, "steps": 6}}


def test_generation_defaults_are_the_benchmark_settings():
    assert (
        generation_settings({})
        == GENERATION
        == {
            "steps": 28,
            "guidance_scale": 7.0,
            "height": 1024,
            "width": 1024,
            "negative_prompt": "",
            "generation_seed": 3407,
            "max_sequence_length": 256,
        }
    )
    assert generation_settings({"random_init": {"height": 256, "steps": 4}})["height"] == 256
    assert generation_settings({"id": "x", "guidance_scale": 5.0})["guidance_scale"] == 5.0
    with pytest.raises(ValueError, match="height must be a positive multiple of 16"):
        generation_settings({"random_init": {"height": 100}})


def test_sd3_medium_vae_maps_a_128x128_latent_to_a_1024x1024_image():
    """Architecture-true shapes: the published SD3-medium VAE config on the meta device (no memory, no compute)."""
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL(**SD3_MEDIUM_VAE)
        with torch.no_grad():
            image = vae.decode(torch.empty(1, 16, 128, 128)).sample
    assert tuple(image.shape) == (1, 3, 1024, 1024)
    assert sum(p.numel() for p in vae.parameters()) == 83_819_683
    assert sum(p.numel() for k, p in vae.named_parameters() if k.startswith("decoder.")) == 49_545_475
    assert vae.post_quant_conv is None  # SD3's VAE has no post_quant_conv: the decoder reads the latent directly
    # The config survives the head file's plain-value form (what torch.load(weights_only=True) reads).
    plain = vae_config_dict(vae.config)
    assert {k: plain[k] for k in SD3_MEDIUM_VAE} == SD3_MEDIUM_VAE


@pytest.mark.slow  # the full SD3-medium VAE decoder at 1024 x 1024: about 2 x 60-125 s and 5 GB on 2 CPU cores
def test_sd3_medium_vae_decodes_a_latent_through_the_head_file(tmp_path):
    from diffusers import AutoencoderKL

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    vae = AutoencoderKL(**SD3_MEDIUM_VAE).eval()
    head = tmp_path / "head.pt"
    torch.save({"vae_config": vae_config_dict(vae.config), "state_dict": decoder_state(vae),
                "scaling_factor": 1.5305, "shift_factor": 0.0609}, head)  # fmt: skip
    decoder, scaling, shift = load_vae_decoder(head, device)
    latent = torch.randn(1, 16, 128, 128, generator=torch.Generator().manual_seed(1)).to(device)
    image = decode_latent(decoder, latent, scaling, shift)
    assert image.dtype == torch.uint8 and tuple(image.shape) == (1, 3, 1024, 1024)
    with torch.no_grad():
        direct = vae.to(device).decode(latent / 1.5305 + 0.0609).sample
    expected = ((direct / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    assert torch.equal(image, expected)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tti")
    manifest = pd.DataFrame(
        {"sample_id": ["1", "2", "3", "4"], "source": "coco.json", "label": "", "text": PROMPTS}, columns=COLUMNS
    )
    task = TextToImageTask(device="cpu")
    start = time.perf_counter()
    task.extract(manifest, DEMO, None, {"checkpoint": None}, tmp / "f.zarr", tmp / "head.pt")
    seconds = time.perf_counter() - start
    return manifest, task, FeatureStore(tmp / "f.zarr"), tmp / "head.pt", seconds, tmp


def test_demo_extract_writes_latents_of_the_declared_shape_and_a_safe_head(demo_run):
    _, _, store, head, seconds, _ = demo_run
    assert store.shapes == [(1, 16, 16, 16)] * 4  # 1 x 16 x H/8 x W/8 at 128 x 128
    assert store.attrs["extraction"]["steps"] == 6 and store.attrs["extraction"]["generation_seed"] == 3407
    latents = [store.read(i) for i in range(4)]
    assert all(np.isfinite(x).all() and x.std() > 0.1 for x in latents)
    # One generator seeded per prompt: the same prompt gives the same latent wherever it is in the manifest.
    np.testing.assert_array_equal(latents[0], latents[3])
    assert not np.array_equal(latents[0], latents[1])
    state = torch.load(head, map_location="cpu", weights_only=True)
    assert {"vae_config", "state_dict", "scaling_factor", "shift_factor"} <= set(state)
    assert state["scaling_factor"] == pytest.approx(1.5305) and state["shift_factor"] == pytest.approx(0.0609)
    assert state["vae_config"]["latent_channels"] == 16 and len(state["vae_config"]["block_out_channels"]) == 4
    assert state["state_dict"] and all(k.startswith("decoder.") for k in state["state_dict"])  # no encoder
    assert seconds < 60


def test_features_are_the_latent_before_scaling_and_shift(demo_run):
    """Decoding the stored latent with the head file gives exactly the image the SD3 pipeline itself outputs."""
    manifest, _, store, head, _, _ = demo_run
    pipe = load_sd3(DEMO, "cpu")
    settings = generation_settings(DEMO)
    generator = torch.Generator("cpu").manual_seed(3407)
    with torch.no_grad():
        image = pipe(prompt=manifest["text"][1], negative_prompt="", num_inference_steps=6, guidance_scale=7.0,
                     height=128, width=128, generator=generator, output_type="np").images  # fmt: skip
    assert settings["guidance_scale"] == 7.0
    expected = (image * 255).round().astype(np.uint8)[0]
    vae, scaling, shift = load_vae_decoder(head)
    latent = torch.from_numpy(store.read(1))
    ours = decode_latent(vae, latent, scaling, shift)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(ours, expected)
    # Feeding the latent to the decoder without / scaling_factor + shift_factor would give another image.
    assert not np.array_equal(decode_latent(vae, latent, 1.0, 0.0)[0].permute(1, 2, 0).numpy(), expected)


def test_fid_is_zero_against_itself_and_positive_for_perturbed_latents(demo_run):
    _, task, store, head, _, tmp = demo_run
    reference = task.outputs(head, (store.read(i) for i in range(len(store))), save_images=tmp / "images")
    assert len(reference) == 4
    assert all(a.shape == (2048,) and a.dtype == np.float64 for a in reference)
    from PIL import Image

    with Image.open(tmp / "images" / "00002.png") as im:
        assert im.size == (128, 128) and im.mode == "RGB"
    value, rows = task.compare(reference, reference)
    assert abs(value) < 1e-6
    assert all(row["identical"] and row["activation_l2"] == 0.0 for row in rows)

    rng = np.random.default_rng(0)
    noisy = [store.read(i) + rng.normal(0, 0.5, store.shapes[i]).astype(np.float32) for i in range(len(store))]
    outputs = task.outputs(head, iter(noisy))
    value, rows = task.compare(outputs, reference)
    assert value > 1.0
    assert value == pytest.approx(fid(np.stack(outputs), np.stack(reference)))
    assert not any(row["identical"] for row in rows) and all(row["activation_l2"] > 0 for row in rows)
    with pytest.raises(ValueError, match="FID needs at least 2 samples"):
        task.compare(outputs[:1], reference[:1])


def test_tti_has_no_ground_truth():
    with pytest.raises(ValueError, match="reference: uncompressed"):
        TextToImageTask().ground_truth(pd.DataFrame({"sample_id": ["1"], "label": [""]}))
    assert (TextToImageTask.name, TextToImageTask.metric, TextToImageTask.higher_is_better) == ("tti", "fid", False)


def test_missing_model_folder_fails_before_any_work(tmp_path):
    manifest = pd.DataFrame({"sample_id": ["1"], "source": "c.json", "label": "", "text": ["a cat"]}, columns=COLUMNS)
    task = TextToImageTask()
    missing = tmp_path / "no-such-sd3"
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="no-such-sd3"):
        task.extract(manifest, {"id": str(missing), "dtype": "float16"}, None, {}, tmp_path / "f.zarr", tmp_path / "h")
    assert time.perf_counter() - start < 5
    with pytest.raises(ValueError, match="head.checkpoint"):
        task.extract(manifest, {"id": str(missing)}, None, {"checkpoint": "x.pth"}, tmp_path / "f.zarr", tmp_path / "h")
    assert not (tmp_path / "f.zarr").exists() and not (tmp_path / "h").exists()


def _coco(path, images, annotations):
    path.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations}))
    return path


def test_coco_reader_takes_the_longest_caption_per_image_in_id_order(tmp_path):
    images = [{"id": 397133, "file_name": "000000397133.jpg"}, {"id": 37777, "file_name": "000000037777.jpg"},
              {"id": 252219, "file_name": "000000252219.jpg"}, {"id": 5, "file_name": "000000000005.jpg"}]  # fmt: skip
    annotations = [
        {"id": 1, "image_id": 397133, "caption": "A man in a kitchen."},
        {"id": 2, "image_id": 37777, "caption": "A kitchen with a stove."},
        {"id": 3, "image_id": 397133, "caption": "A man is preparing dessert in a kitchen.\n"},
        {"id": 4, "image_id": 37777, "caption": "The kitchen is clean and empty today."},
        {"id": 5, "image_id": 252219, "caption": "Three people on a street."},
        {"id": 6, "image_id": 252219, "caption": "Two big dogs on a street."},  # 25 characters too: the first wins
        {"id": 7, "image_id": 37777, "caption": "  A  very  long caption, with\nnewlines and  spaces   "},
        {"id": 8, "image_id": 5, "caption": "   "},  # no usable caption: image 5 is skipped
    ]
    path = _coco(tmp_path / "captions_val2017.json", images, annotations)
    table = coco_captions_manifest({"kind": "coco_captions", "path": str(path), "order": "id"}, 10)
    assert list(table.columns) == COLUMNS
    assert list(table["sample_id"]) == ["37777", "252219", "397133"]
    assert list(table["text"]) == [
        "A  very  long caption, withnewlines and  spaces",
        "Three people on a street.",
        "A man is preparing dessert in a kitchen.",
    ]
    assert set(table["source"]) == {str(path)} and set(table["label"]) == {""}
    assert list(coco_captions_manifest({"path": str(path), "order": "id"}, 2)["sample_id"]) == ["37777", "252219"]
    assert list(coco_captions_manifest({"path": str(path)}, 3)["sample_id"]) == [
        "397133", "37777", "252219"
    ]  # fmt: skip


def test_coco_reader_names_a_malformed_or_missing_file(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [{"id": 1}], "annotations": [')
    with pytest.raises(SourceError, match="broken.json"):
        coco_captions_manifest({"path": str(broken)}, 1)
    no_annotations = _coco(tmp_path / "other.json", [{"id": 1}], [])
    no_annotations.write_text(json.dumps({"images": [{"id": 1}]}))
    with pytest.raises(SourceError, match=r"other\.json: not a COCO captions file"):
        coco_captions_manifest({"path": str(no_annotations)}, 1)
    bad_caption = _coco(tmp_path / "bad.json", [{"id": 1}], [{"image_id": 1, "caption": 7}])
    with pytest.raises(SourceError, match="bad.json"):
        coco_captions_manifest({"path": str(bad_caption)}, 1)
    with pytest.raises(SourceError, match="missing.json does not exist"):
        coco_captions_manifest({"path": str(tmp_path / "missing.json")}, 1)
