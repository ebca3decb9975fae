"""Task tti: the feature is the SD3 latent that enters the VAE decoder (before / scaling_factor + shift_factor),
the head is the VAE decoder, and the metric is the FID of the decoded images against the images decoded from
the uncompressed latents."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lamofc_lib import determinism
from lamofc_lib.sources import SourceError, build_candidates
from lamofc_lib.sources.manifest import COLUMNS
from lamofc_lib.store import FeatureStore
from lamofc_lib.tasks.lamofc.tti import (
    TextToImageTask,
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
    """The paper's and the reference's values (28 steps, guidance 7.0, 1024 x 1024, negative prompt "", seed 3407,
    batches of 16, the global seed set once)."""
    settings = generation_settings({})
    assert (settings["steps"], settings["guidance_scale"]) == (28, 7.0)
    assert (settings["height"], settings["width"]) == (1024, 1024)
    assert (settings["negative_prompt"], settings["generation_seed"]) == ("", 3407)
    assert (settings["generation_batch"], settings["seeding"]) == (16, "global_once")
    assert generation_settings({"random_init": {"height": 256, "steps": 4}})["height"] == 256
    assert generation_settings({"id": "x", "guidance_scale": 5.0})["guidance_scale"] == 5.0
    assert generation_settings({"id": "x", "seeding": "per_prompt", "generation_batch": 2})["generation_batch"] == 2
    with pytest.raises(ValueError, match="height must be a positive multiple of 16"):
        generation_settings({"random_init": {"height": 100}})
    with pytest.raises(ValueError, match="generation_batch must be a positive integer"):
        generation_settings({"generation_batch": 0})
    with pytest.raises(ValueError, match="seeding must be one of"):
        generation_settings({"seeding": "per_batch"})


def test_reference_stem_is_the_coco_file_name():
    task = TextToImageTask()
    assert task.reference_stem("397133") == "COCO_val2017_000000397133"
    assert task.reference_stem("5") == "COCO_val2017_000000000005"


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


@pytest.mark.slow  # the full SD3-medium VAE decoder (83 M parameters): about 2 x 5 s on 2 CPU cores
def test_sd3_medium_vae_decodes_a_latent_through_the_head_file(tmp_path):
    """The paper-size VAE decoder rebuilt from the head file decodes as the VAE itself does. On a 16 x 16 latent
    (a 128 x 128 image): the layers and weights are those of the 128 x 128 latents (1024 x 1024), which take 64
    times as long on the CPU for the same check."""
    from diffusers import AutoencoderKL

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    vae = AutoencoderKL(**SD3_MEDIUM_VAE).eval()
    head = tmp_path / "head.pt"
    torch.save({"vae_config": vae_config_dict(vae.config), "state_dict": decoder_state(vae),
                "scaling_factor": 1.5305, "shift_factor": 0.0609}, head)  # fmt: skip
    decoder, scaling, shift = load_vae_decoder(head, device)
    latent = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(1)).to(device)
    image = decode_latent(decoder, latent, scaling, shift)
    assert image.dtype == torch.uint8 and tuple(image.shape) == (1, 3, 128, 128)
    with torch.no_grad():
        direct = vae.to(device).decode(latent / 1.5305 + 0.0609).sample
    expected = ((direct / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    assert torch.equal(image, expected)


def manifest_of(prompts) -> pd.DataFrame:
    ids = [str(397133 + i) for i in range(len(prompts))]
    return pd.DataFrame({"sample_id": ids, "source": "coco.json", "label": "", "text": prompts}, columns=COLUMNS)


def reference_generation(prompts, model=DEMO, batch=16, output_type="latent"):
    """The reference's loop (machines/sd3/sd3.py), written out: the global seed 3407 once, then the pipeline on
    consecutive slices of `batch` prompts with no generator."""
    pipe = load_sd3(model, "cpu")
    torch.manual_seed(3407)
    out = []
    for start in range(0, len(prompts), batch):
        with torch.no_grad():
            result = pipe(prompt=prompts[start : start + batch], negative_prompt="", num_inference_steps=6,
                          guidance_scale=7.0, height=128, width=128, output_type=output_type)  # fmt: skip
        out.extend(result.images[i] for i in range(len(result.images)))
    return out


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tti")
    manifest = manifest_of(PROMPTS)
    task = TextToImageTask(device="cpu")
    task.write_head(DEMO, None, {"checkpoint": None}, tmp / "head.pt")
    task.extract(manifest, DEMO, None, tmp / "f.zarr")
    return manifest, task, FeatureStore(tmp / "f.zarr"), tmp / "head.pt", tmp


def test_demo_extract_writes_latents_of_the_declared_shape_and_a_safe_head(demo_run):
    manifest, task, store, head, _ = demo_run
    assert store.shapes == [(1, 16, 16, 16)] * 4  # 1 x 16 x H/8 x W/8 at 128 x 128
    assert store.dtype == np.float32  # a float32 model
    extraction = store.attrs["extraction"]
    assert extraction["steps"] == 6 and extraction["generation_seed"] == 3407
    assert (extraction["generation_batch"], extraction["seeding"], extraction["device"]) == (16, "global_once", "cpu")
    layout = task.layout(manifest, DEMO, None)
    assert (layout.shapes, layout.dtype) == (store.shapes, "float32")
    # the extraction records its code path too (this test process is pinned, tests/conftest.py)
    recorded = {**layout.attrs["extraction"], "device": "cpu", "cpu_path": determinism.summary()}
    expected = {**layout.attrs, "sample_ids": store.sample_ids, "tensors": ["feature"], "extraction": recorded}
    assert expected == store.attrs
    assert store.attrs["extraction"]["cpu_path"].startswith("pinned: torch AVX2 kernels, no oneDNN")
    latents = [store.read(i) for i in range(4)]
    assert all(np.isfinite(x).all() and x.std() > 0.1 for x in latents)
    # Noise from the global RNG, one draw for the batch: the same prompt at positions 0 and 3 gets other noise.
    assert not np.array_equal(latents[0], latents[3])
    state = torch.load(head, map_location="cpu", weights_only=True)
    assert {"vae_config", "state_dict", "scaling_factor", "shift_factor"} <= set(state)
    assert state["scaling_factor"] == pytest.approx(1.5305) and state["shift_factor"] == pytest.approx(0.0609)
    assert state["vae_config"]["latent_channels"] == 16 and len(state["vae_config"]["block_out_channels"]) == 4
    assert state["state_dict"] and all(k.startswith("decoder.") for k in state["state_dict"])  # no encoder
    assert state["latent_shape"] == [1, 16, 16, 16]


def test_demo_latents_are_the_reference_loop_s(demo_run):
    """The stored latents are those of the reference's procedure: seed once, one pipeline call on all prompts."""
    manifest, _, store, _, _ = demo_run
    expected = reference_generation(list(manifest["text"]))
    for i, latent in enumerate(expected):
        np.testing.assert_array_equal(store.read(i)[0], latent.numpy())


def test_the_global_seed_is_set_once_and_each_batch_draws_on(tmp_path, monkeypatch):
    """The noise each batch starts from, recorded in the pipeline: with batches of 2, the first is the first draw
    of torch's global RNG after torch.manual_seed(3407) and the second the next draw (not a reseed)."""
    from diffusers import StableDiffusion3Pipeline

    noise = []
    original = StableDiffusion3Pipeline.prepare_latents

    def recording(self, *args, **kwargs):
        latents = original(self, *args, **kwargs)
        noise.append(latents.clone())
        return latents

    monkeypatch.setattr(StableDiffusion3Pipeline, "prepare_latents", recording)
    model = {**DEMO, "generation_batch": 2}
    task = TextToImageTask(device="cpu")
    task.extract(manifest_of(PROMPTS[:3]), model, None, tmp_path / "f.zarr")
    assert [tuple(n.shape) for n in noise] == [(2, 16, 16, 16), (1, 16, 16, 16)]
    torch.manual_seed(3407)
    first, second = torch.randn(2, 16, 16, 16), torch.randn(1, 16, 16, 16)
    assert torch.equal(noise[0], first) and torch.equal(noise[1], second)
    assert FeatureStore(tmp_path / "f.zarr").attrs["extraction"]["generation_batch"] == 2

    noise.clear()
    task.extract(manifest_of(PROMPTS[:3]), {**model, "seeding": "per_prompt"}, None, tmp_path / "p.zarr")
    own = torch.randn(16, 16, 16, generator=torch.Generator("cpu").manual_seed(3407))
    assert all(torch.equal(n[i], own) for n in noise for i in range(len(n)))


def test_per_prompt_seeding_gives_a_prompt_the_same_latent_anywhere(tmp_path):
    task = TextToImageTask(device="cpu")
    task.extract(manifest_of(PROMPTS), {**DEMO, "seeding": "per_prompt", "generation_batch": 3}, None, tmp_path / "f")
    store = FeatureStore(tmp_path / "f")
    assert store.attrs["extraction"]["noise"] == "a torch CPU generator per prompt, seeded with generation_seed"
    latents = [store.read(i) for i in range(4)]
    # positions 0 (first batch) and 3 (second batch): same prompt, same noise, same latent up to batched numerics
    np.testing.assert_allclose(latents[0], latents[3], rtol=0, atol=1e-5)
    assert not np.allclose(latents[0], latents[1], atol=1e-2)


def test_fp16_model_stores_its_fp16_latents(tmp_path):
    """A float16 pipeline's latents are stored as float16, exactly as the pipeline returns them (no widening)."""
    model = {**DEMO, "dtype": "float16"}
    task = TextToImageTask(device="cpu")
    manifest = manifest_of(PROMPTS[:2])
    assert task.layout(manifest, model, None).dtype == "float16"
    task.extract(manifest, model, None, tmp_path / "f.zarr")
    store = FeatureStore(tmp_path / "f.zarr")
    assert store.dtype == np.float16
    assert store.attrs["extraction"]["dtype"] == "float16"
    expected = reference_generation(PROMPTS[:2], model)
    assert all(latent.dtype == torch.float16 for latent in expected)
    for i, latent in enumerate(expected):
        np.testing.assert_array_equal(store.read(i)[0].view(np.uint16), latent.numpy().view(np.uint16))


def test_layout_of_a_hub_style_folder_reads_the_vae_config_only(tmp_path):
    """For a model folder (or hub id) the layout comes from vae/config.json: no weights are needed."""
    (tmp_path / "sd3" / "vae").mkdir(parents=True)
    config = {"_class_name": "AutoencoderKL", **SD3_MEDIUM_VAE}
    (tmp_path / "sd3" / "vae" / "config.json").write_text(json.dumps(config))
    task = TextToImageTask()
    manifest = manifest_of(PROMPTS[:3])
    layout = task.layout(manifest, {"id": str(tmp_path / "sd3"), "dtype": "float16"}, None)
    assert layout.shapes == [(1, 16, 128, 128)] * 3 and layout.dtype == "float16"
    assert layout.attrs["extraction"]["height"] == 1024 and layout.attrs["extraction"]["seeding"] == "global_once"
    wide = task.layout(manifest, {"id": str(tmp_path / "sd3"), "dtype": "float32", "height": 512}, None)
    assert wide.shapes == [(1, 16, 64, 128)] * 3 and wide.dtype == "float32"
    assert task.layout(manifest, {"dtype": "bfloat16", "random_init": {"seed": 0}}, None).dtype == "float32"


def test_features_are_the_latent_before_scaling_and_shift(demo_run):
    """Decoding the stored latents with the head file gives exactly the images the SD3 pipeline itself outputs
    (decoded as one batch, as the pipeline does: batched convolutions may differ in the last bit)."""
    manifest, _, store, head, _ = demo_run
    images = np.stack(reference_generation(list(manifest["text"]), output_type="np"))
    expected = (images * 255).round().astype(np.uint8)
    vae, scaling, shift = load_vae_decoder(head)
    latents = torch.from_numpy(np.concatenate([store.read(i) for i in range(len(store))]))
    ours = decode_latent(vae, latents, scaling, shift).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(ours, expected)
    # Feeding the latent to the decoder without / scaling_factor + shift_factor would give another image.
    assert not np.array_equal(decode_latent(vae, latents, 1.0, 0.0).permute(0, 2, 3, 1).numpy(), expected)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 4 samples: singular covariances
def test_fid_is_zero_against_itself_and_positive_for_perturbed_latents(demo_run):
    _, task, store, head, tmp = demo_run
    reference = task.head_outputs(head, (store.read(i) for i in range(len(store))), save_images=tmp / "images")
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
    outputs = task.head_outputs(head, iter(noisy))
    value, rows = task.compare(outputs, reference)
    assert value > 1.0
    # The Fréchet distance by its definition, with SciPy's matrix square root (not lamofc_lib's metric code), taken
    # in an orthonormal basis Q of the centred activations' span, where both covariances live (S = Q Q^T S Q Q^T):
    # the square root of an 8 x 8 matrix instead of the 2048 x 2048 one, which took a minute of CI.
    from scipy import linalg

    a, b = np.stack(outputs), np.stack(reference)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    q, _ = np.linalg.qr(np.concatenate([a - a.mean(0), b - b.mean(0)]).T)
    assert np.allclose(q @ (q.T @ s1 @ q) @ q.T, s1, atol=1e-9 * np.abs(s1).max())
    root = linalg.sqrtm((q.T @ s1 @ q) @ (q.T @ s2 @ q)).real
    expected = float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1 + s2) - 2 * np.trace(root))
    assert value == pytest.approx(expected, rel=1e-6)
    assert not any(row["identical"] for row in rows) and all(row["activation_l2"] > 0 for row in rows)
    with pytest.raises(ValueError, match="FID needs at least 2 samples"):
        task.compare(outputs[:1], reference[:1])


def test_tti_has_no_ground_truth():
    with pytest.raises(ValueError, match="reference: uncompressed"):
        TextToImageTask().ground_truth(pd.DataFrame({"sample_id": ["1"], "label": [""]}))


def test_missing_model_folder_fails_before_any_work(tmp_path):
    manifest = manifest_of(["a cat"])
    task = TextToImageTask()
    missing = {"id": str(tmp_path / "no-such-sd3"), "dtype": "float16"}
    calls = (
        lambda: task.layout(manifest, missing, None),
        lambda: task.write_head(missing, None, {}, tmp_path / "h"),
        lambda: task.extract(manifest, missing, None, tmp_path / "f.zarr"),
    )
    for call in calls:
        with pytest.raises(FileNotFoundError, match="no-such-sd3"):
            call()
    with pytest.raises(ValueError, match="head.checkpoint"):
        task.write_head(missing, None, {"checkpoint": "x.pth"}, tmp_path / "h")
    assert not (tmp_path / "f.zarr").exists() and not (tmp_path / "h").exists()


def _coco(path, images, annotations):
    path.write_text(json.dumps({"info": {}, "images": images, "annotations": annotations}))
    return path


def test_coco_reader_takes_the_longest_caption_per_image_in_id_order(tmp_path, caplog):
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
    table = build_candidates({"kind": "coco_captions", "path": str(path), "order": "id"})
    assert "1 images have no caption and are not candidates, e.g. [5]" in caplog.text
    assert list(table.columns) == ["sample_id", "source", "label", "text"]
    assert list(table["sample_id"]) == ["37777", "252219", "397133"]
    assert list(table["text"]) == [
        "A  very  long caption, withnewlines and  spaces",
        "Three people on a street.",
        "A man is preparing dessert in a kitchen.",
    ]
    assert set(table["source"]) == {str(path)} and set(table["label"]) == {""}
    assert list(build_candidates({"kind": "coco_captions", "path": str(path)})["sample_id"]) == [
        "397133", "37777", "252219"
    ]  # fmt: skip


def test_coco_reader_names_a_malformed_or_missing_file(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [{"id": 1}], "annotations": [')
    with pytest.raises(SourceError, match="broken.json"):
        build_candidates({"kind": "coco_captions", "path": str(broken)})
    no_annotations = _coco(tmp_path / "other.json", [{"id": 1}], [])
    no_annotations.write_text(json.dumps({"images": [{"id": 1}]}))
    with pytest.raises(SourceError, match=r"other\.json: not a COCO captions file"):
        build_candidates({"kind": "coco_captions", "path": str(no_annotations)})
    bad_caption = _coco(tmp_path / "bad.json", [{"id": 1}], [{"image_id": 1, "caption": 7}])
    with pytest.raises(SourceError, match="bad.json"):
        build_candidates({"kind": "coco_captions", "path": str(bad_caption)})
    with pytest.raises(SourceError, match="missing.json does not exist"):
        build_candidates({"kind": "coco_captions", "path": str(tmp_path / "missing.json")})
