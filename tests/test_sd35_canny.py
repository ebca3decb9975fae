"""LaMoFCBench's controllable generation scenario (sd35_canny) on the demo's tiny seeded SD3.5 + canny ControlNet
pipeline: control images as the reference makes them, the conditions and the latent recorded and put back (the
images equal the plain pipeline's), the reference's frame layouts, its .zst files, FID against the uncompressed
pipeline's images."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from lamofc_lib.preprocess import pack, unpack
from lamofc_lib.sources import build_candidates
from lamofc_lib.sources.images import load_image
from lamofc_lib.sources.manifest import SourceError
from lamofc_lib.store import FeatureStore
from lamofc_lib.tasks import get_task
from lamofc_lib.tasks.lamofcbench.generation import sd35_canny as ctti

REPO = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
MODEL = {"random_init": {"seed": 0, "height": 64, "width": 96, "steps": 3}}
IMAGES = ["astronaut", "coffee"]


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """The tiny pipeline's split of two demo samples, with its head file."""
    tmp = tmp_path_factory.mktemp("sd35_canny")
    manifest = build_candidates({"kind": "canny_demo", "images": IMAGES})
    task = get_task("sd35_canny")
    task.extract(manifest, MODEL, None, tmp / "features.zarr")
    task.write_head(MODEL, None, {}, tmp / "head.pt")
    return manifest, task, FeatureStore(tmp / "features.zarr"), tmp / "head.pt"


def _plain_images(manifest, head) -> list[np.ndarray]:
    """Each sample's image from the pipeline without any hook: its latent decoded by the head's VAE."""
    from lamofc_lib.tasks.lamofc.tti import decode_latent, load_vae_decoder

    settings = ctti.generation_settings(MODEL)
    pipe = ctti.load_pipeline(MODEL, "cpu")
    vae, scaling, shift = load_vae_decoder(head)
    out = []
    for source, prompt in zip(manifest["source"], manifest["text"], strict=True):
        control = ctti.canny_control(load_image(source), settings["height"], settings["width"])
        with torch.random.fork_rng():
            torch.manual_seed(settings["generation_seed"])
            latent = ctti.generate_latent(pipe, prompt, control, settings)
        out.append(decode_latent(vae, latent, scaling, shift).numpy())
    return out


def _images(task, mode, head, samples, attrs) -> list[np.ndarray]:
    task.set_metric_options({"mode": mode})
    return [image.numpy() for image in task.images(head, samples, attrs)]


def test_control_image_is_cv2_canny_of_the_reference_resize_and_crop():
    for name, (height, width) in [("astronaut", (64, 96)), ("coffee", (96, 64)), ("coffee", (1024, 1024))]:
        image = load_image(f"skimage:{name}")
        h, w = image.shape[:2]
        # cover the target: the larger ratio, the other side rounded up; centre crop
        ratio = max(width / w, height / h)
        new_w, new_h = (width, math.ceil(h * ratio)) if width / w > height / h else (math.ceil(w * ratio), height)
        resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        top, left = (new_h - height) // 2, (new_w - width) // 2
        crop = resized[top : top + height, left : left + width]
        edges = cv2.Canny(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), 50, 150)
        got = ctti.canny_control(image, height, width)
        assert got.shape == (height, width, 3) and got.dtype == np.uint8
        for channel in range(3):
            np.testing.assert_array_equal(got[..., channel], edges)
        assert 0 < (edges > 0).mean() < 0.5  # edges, not a blank or full image


def test_the_split_has_the_reference_s_thirteen_tensors_in_its_shapes_and_packings(extracted):
    _, _, store, _ = extracted
    clip, t5, latent = 32, 64, (16, 8, 12)  # the demo's CLIP and T5 widths; 64 x 96 pixels / 8
    expected = {}
    for item, encoder in enumerate(["text_encoder", "text_encoder_2", "text_encoder_3"] * 2):
        if encoder == "text_encoder_3":
            expected[f"{encoder}-item{item}.t5_prompt_embeds"] = ((1, 1, 77, t5), "plane")
        else:
            expected[f"{encoder}-item{item}.clip_pooled_prompt_embeds"] = ((1, 1, 1, clip), "plane")
            expected[f"{encoder}-item{item}.clip_prompt_embeds"] = ((1, 1, 77, clip), "plane")
    expected["vae.encoder_f0"] = expected["vae.encoder_f1"] = ((1, 32, *latent[1:]), "tiles")
    expected["vae.decoder"] = ((1, *latent), "tiles")
    assert store.tensors == list(expected)
    for name, (shape, packing) in expected.items():
        assert store.layout(name).shapes == [shape, shape]
        assert store.layout(name).attrs["packing"] == packing
        assert store.layout(name).dtype == "float32"
    # the two moments are the CFG-duplicated control image's: equal
    sample = store.sample(0)
    np.testing.assert_array_equal(sample["vae.encoder_f0"], sample["vae.encoder_f1"])


def test_frames_are_the_reference_s_layouts_and_round_trip(extracted):
    """Prompt embeddings T x C, pooled 1 x C, moments a 4 x 8 grid of channel planes (row c // 8, column c % 8),
    the latent 4 x 4: each frame built here element by element, and unpacked back exactly."""
    _, _, store, _ = extracted
    sample = store.sample(1)
    for name, x in sample.items():
        frame = pack(x, store.layout(name).attrs["packing"])
        _, c, h, w = x.shape
        if name.startswith("vae."):
            cols = 8 if c == 32 else 4
            expected = np.zeros(((c // cols) * h, cols * w), x.dtype)
            for k in range(c):
                expected[(k // cols) * h : (k // cols + 1) * h, (k % cols) * w : (k % cols + 1) * w] = x[0, k]
        else:
            expected = x[0, 0]
        np.testing.assert_array_equal(frame, expected, err_msg=name)
        np.testing.assert_array_equal(unpack(frame, store.layout(name).attrs["packing"], x.shape), x)


def test_putting_back_the_uncompressed_split_reproduces_the_pipeline_s_images(extracted):
    manifest, task, store, head = extracted
    samples = [store.sample(i) for i in range(len(store))]
    plain = _plain_images(manifest, head)
    for mode in ("conditions", "latent"):
        images = _images(task, mode, head, samples, store.attrs)
        assert all(np.array_equal(a, b) for a, b in zip(images, plain, strict=True)), mode
    assert plain[0].shape == (1, 3, 64, 96) and plain[0].dtype == np.uint8
    assert not np.array_equal(plain[0], plain[1])


@pytest.mark.parametrize(
    ("mode", "names"),
    [
        ("conditions", ["vae.encoder_f0", "vae.encoder_f1"]),
        ("conditions", ["text_encoder_3-item2.t5_prompt_embeds"]),
        ("conditions", ["text_encoder-item0.clip_prompt_embeds"]),
        ("conditions", ["text_encoder_2-item1.clip_pooled_prompt_embeds"]),
        ("latent", ["vae.decoder"]),
    ],
)
def test_a_perturbed_tensor_changes_the_images(extracted, mode, names):
    _, task, store, head = extracted
    samples = [store.sample(i) for i in range(len(store))]
    perturbed = [{**s, **{n: s[n] + 0.5 for n in names}} for s in samples]
    before = _images(task, mode, head, samples, store.attrs)
    after = _images(task, mode, head, perturbed, store.attrs)
    assert all(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))


def test_each_replaced_module_returns_the_decoded_tensor(extracted):
    """Hooks registered after the scenario's see each module's output as the pipeline reads it: the decoded
    tensors (noise here, not the model's values), and the CLIP encoders' other hidden states zeroed."""
    manifest, task, store, head = extracted
    rng = np.random.default_rng(0)
    decoded = {name: rng.normal(size=x.shape).astype(np.float32) for name, x in store.sample(0).items()}
    pipe = ctti.load_pipeline(MODEL, "cpu")
    settings = ctti.generation_settings(MODEL)
    seen: dict[str, list] = {"text_encoder": [], "text_encoder_2": [], "text_encoder_3": [], "vae": []}
    with ctti.condition_split(pipe, decoded=decoded):
        handles = [
            getattr(pipe, e).register_forward_hook(lambda m, a, o, e=e: seen[e].append(o)) for e in ctti.ENCODERS
        ]
        handles.append(pipe.vae.encoder.register_forward_hook(lambda m, a, o: seen["vae"].append(o.clone())))
        ctti.generate_latent(pipe, manifest["text"][0], np.zeros((64, 96, 3), np.uint8), settings)
        for handle in handles:
            handle.remove()

    def same(tensor, name):
        np.testing.assert_array_equal(tensor.reshape(decoded[name].shape).numpy(), decoded[name], err_msg=name)

    for item in range(6):
        encoder = ctti.ENCODERS[item % 3]
        output = seen[encoder][item // 3]
        if encoder == "text_encoder_3":
            same(output.last_hidden_state, f"{encoder}-item{item}.t5_prompt_embeds")
            continue
        same(output[0], f"{encoder}-item{item}.clip_pooled_prompt_embeds")  # what the pipeline takes as pooled
        same(output.hidden_states[-2], f"{encoder}-item{item}.clip_prompt_embeds")
        assert all(not h.any() for h in (*output.hidden_states[:-2], output.hidden_states[-1]))
    [moments] = seen["vae"]
    same(moments[0:1], "vae.encoder_f0")
    same(moments[1:2], "vae.encoder_f1")


def test_per_prompt_noise_gives_a_sample_the_same_split_anywhere_and_global_once_follows_the_run(tmp_path):
    """The VAE's draw of the control latent (defect 14): per_prompt reseeds before each prompt, so coffee's tensors
    are the same alone or after astronaut; global_once (the reference) seeds once per pass, so they are not; and
    with global_once, putting back the uncompressed conditions still reproduces the latents (each scoring pass
    seeds as the extraction did)."""
    both = build_candidates({"kind": "canny_demo", "images": IMAGES})
    # coffee alone, with the caption it has in `both`
    alone = both.iloc[1:].reset_index(drop=True)
    task = get_task("sd35_canny")
    for noise in ("per_prompt", "global_once"):
        model = {"random_init": {**MODEL["random_init"], "vae_noise": noise}}
        first = list(task.features(both, model, None).samples)[1]
        second = list(task.features(alone, model, None).samples)[0]
        prompt = "text_encoder-item0.clip_prompt_embeds"
        assert np.array_equal(first[prompt], second[prompt])
        assert np.array_equal(first["vae.encoder_f0"], second["vae.encoder_f0"])  # the moments: no noise yet
        same = np.array_equal(first["vae.decoder"], second["vae.decoder"])
        assert same == (noise == "per_prompt"), noise
    task.extract(both, model, None, tmp_path / "f.zarr")
    task.write_head(model, None, {}, tmp_path / "head.pt")
    store = FeatureStore(tmp_path / "f.zarr")
    assert store.attrs["extraction"]["vae_noise"] == "global_once"
    samples = [store.sample(i) for i in range(2)]
    conditions = _images(task, "conditions", tmp_path / "head.pt", samples, store.attrs)
    latent = _images(task, "latent", tmp_path / "head.pt", samples, store.attrs)
    assert all(np.array_equal(a, b) for a, b in zip(conditions, latent, strict=True))


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # 2 samples: singular covariances
def test_fid_against_the_uncompressed_images_is_zero_and_the_frechet_distance(extracted):
    _, task, store, head = extracted
    samples = [store.sample(i) for i in range(len(store))]
    task.set_metric_options({"mode": "latent"})
    reference = task.head_outputs(head, samples, store.attrs)
    assert all(a.shape == (2048,) and a.dtype == np.float64 for a in reference)
    value, rows = task.compare(reference, reference)
    assert abs(value) < 1e-6 and all(row["identical"] for row in rows)
    noisy = [{**s, "vae.decoder": s["vae.decoder"] + 1.0} for s in samples]
    outputs = task.head_outputs(head, noisy, store.attrs)
    value, _ = task.compare(outputs, reference)
    # the Fréchet distance by its definition (SciPy's square root), in the activations' span
    from scipy import linalg

    a, b = np.stack(outputs), np.stack(reference)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    q, _ = np.linalg.qr(np.concatenate([a - a.mean(0), b - b.mean(0)]).T)
    root = linalg.sqrtm((q.T @ s1 @ q) @ (q.T @ s2 @ q)).real
    expected = float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1 + s2) - 2 * np.trace(root))
    assert value > 0 and value == pytest.approx(expected, rel=1e-6)


def test_variants_and_the_injected_tensors(extracted):
    _, task, store, _ = extracted
    task.set_metric_options({"mode": None})
    assert task.variants(store.attrs) == {"conditions": {"mode": "conditions"}, "latent": {"mode": "latent"}}
    task.set_metric_options({"mode": "conditions"})
    assert task.variants(store.attrs) == {}
    assert task.injected_tensors(store.attrs) == store.tensors[:-1]
    task.set_metric_options({"mode": "latent"})
    assert task.injected_tensors(store.attrs) == ["vae.decoder"]
    groups = task.tensor_groups({})
    assert sorted(n for names in groups.values() for n in names) == sorted(store.tensors[:-1])
    task.set_metric_options({"mode": None})


def test_the_reference_s_zst_files_import_as_the_extracted_tensors(extracted, tmp_path):
    """A sample written as the reference's coder restores it (SD35Handler.restore_format: per text encoder call a
    dict of 1-D pooled and 2-D prompt embeddings, `vae.decoder` (16, h, w), `vae.encoder` a dict of the two
    (32, h, w) moments) imports as the extraction's store, with the tiles packing of the VAE tensors."""
    import zstandard

    from lamofc_lib.feature_files import import_features

    manifest, task, store, _ = extracted
    folder = tmp_path / "files"
    folder.mkdir()
    for i, sid in enumerate(manifest["sample_id"]):
        sample = {k: torch.from_numpy(v) for k, v in store.sample(i).items()}
        data: dict = {}
        for name, x in sample.items():
            if name.startswith("text_encoder"):
                key, field = name.split(".")
                data.setdefault(key, {})[field] = x[0, 0, 0] if "pooled" in field else x[0, 0]
        data["vae.decoder"] = sample["vae.decoder"][0]
        data["vae.encoder"] = {k: sample[k][0] for k in ("vae.encoder_f0", "vae.encoder_f1")}
        buffer = io.BytesIO()
        torch.save({"features": data, "metadata": {"bpfp": 1.5}}, buffer)
        (folder / f"{sid}.zst").write_bytes(zstandard.ZstdCompressor().compress(buffer.getvalue()))
    import_features(task, folder, manifest, MODEL, None, tmp_path / "imported.zarr")
    imported = FeatureStore(tmp_path / "imported.zarr")
    assert imported.tensors == store.tensors
    for name in store.tensors:
        assert imported.layout(name).attrs["packing"] == store.layout(name).attrs["packing"]
        for i in range(2):
            np.testing.assert_array_equal(imported.read(i, name), store.read(i, name))


def test_the_coco_sample_list_is_read_in_sorted_image_name_order(tmp_path):
    (tmp_path / "images").mkdir()
    entries = [{"image_name": "000000000139.jpg", "caption": "a room"}, {"image_name": "000000000001.jpg",
               "caption": "a dog", "class_score": 0.3}]  # fmt: skip
    (tmp_path / "data_infos.json").write_text(json.dumps(entries))
    table = build_candidates({"kind": "coco_canny", "root": str(tmp_path / "images"),
                              "labels": str(tmp_path / "data_infos.json")})  # fmt: skip
    assert list(table["sample_id"]) == ["000000000001", "000000000139"]
    assert list(table["text"]) == ["a dog", "a room"]
    assert table["source"][1] == str(tmp_path / "images" / "000000000139.jpg")
    (tmp_path / "bad.json").write_text(json.dumps([{"image": "x.jpg"}]))
    with pytest.raises(SourceError, match="bad.json: not a list of"):
        build_candidates({"kind": "coco_canny", "root": str(tmp_path), "labels": str(tmp_path / "bad.json")})
    with pytest.raises(SourceError, match="does not exist"):
        build_candidates({"kind": "coco_canny", "root": str(tmp_path), "labels": str(tmp_path / "none.json")})


def test_settings_are_the_reference_s_and_bad_ones_are_named():
    settings = ctti.generation_settings({})
    assert (settings["steps"], settings["guidance_scale"], settings["controlnet_scale"]) == (60, 3.5, 1.0)
    assert (settings["height"], settings["width"], settings["max_sequence_length"]) == (1024, 1024, 77)
    assert (settings["generation_seed"], settings["canny_low"], settings["canny_high"]) == (42, 50, 150)
    with pytest.raises(ValueError, match="vae_noise must be one of"):
        ctti.generation_settings({"vae_noise": "sometimes"})
    with pytest.raises(ValueError, match="multiple of 16"):
        ctti.generation_settings({"height": 100})
    with pytest.raises(ValueError, match="model.controlnet"):
        ctti.load_pipeline({"id": str(REPO)}, "cpu")


def test_the_demo_runs_both_modes_on_the_tiny_pipeline():
    block = DEMO["tasks"]["sd35_canny"]
    assert "sd35_canny" in DEMO["run"]["tasks"]
    assert block["source"]["kind"] == "canny_demo" and block["model"]["random_init"]
    assert block.get("mode") is None  # both variants


def test_the_layout_of_a_hub_style_folder_reads_the_component_configs_only(tmp_path):
    """SD3.5 Large's sizes from its folders' config files alone (no weights): CLIP-L 768, CLIP-G 1280, T5 4096,
    the VAE's 16 latent channels at a factor of 8, fp16."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, T5Config

    CLIPTextConfig(hidden_size=768, projection_dim=768).save_pretrained(tmp_path / "text_encoder")
    CLIPTextConfig(hidden_size=1280, projection_dim=1280).save_pretrained(tmp_path / "text_encoder_2")
    T5Config(d_model=4096).save_pretrained(tmp_path / "text_encoder_3")
    vae = {"latent_channels": 16, "block_out_channels": [128, 256, 512, 512], "_class_name": "AutoencoderKL"}
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / AutoencoderKL.config_name).write_text(json.dumps(vae))
    manifest = build_candidates({"kind": "canny_demo", "images": IMAGES})
    model = {"id": str(tmp_path), "controlnet": str(tmp_path), "dtype": "float16"}
    layout = get_task("sd35_canny").layout(manifest, model, None)
    shapes = {name: t.shapes[0] for name, t in layout.tensors.items()}
    assert shapes["text_encoder-item3.clip_pooled_prompt_embeds"] == (1, 1, 1, 768)
    assert shapes["text_encoder_2-item1.clip_prompt_embeds"] == (1, 1, 77, 1280)
    assert shapes["text_encoder_3-item5.t5_prompt_embeds"] == (1, 1, 77, 4096)
    assert shapes["vae.encoder_f0"] == (1, 32, 128, 128) and shapes["vae.decoder"] == (1, 16, 128, 128)
    assert {t.dtype for t in layout.tensors.values()} == {"float16"}
    assert layout.attrs["extraction"]["prompts"] == list(manifest["text"])
    with pytest.raises(ValueError, match="model.dtype float16 or float32"):
        get_task("sd35_canny").layout(manifest, {**model, "dtype": "bfloat16"}, None)
