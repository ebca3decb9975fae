"""Extension points: a task is one module plus one config block, and so is a trained codec, whether the module
lies in lamofc_lib or in another installed package that registers it through an entry point (lamofc.tasks,
lamofc.codecs). The toy codec here is a real, if simple, trained codec: its training picks a quantization step
from the training frames and the lambda, its bitstream is the zlib-compressed codes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lamofc_lib.store import FeatureStore

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

TOY_CODEC = '''
"""A toy trained codec: uniform codes of a step trained per lambda, zlib-compressed."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from lamofc_lib.codecs.base import Codec, CodecError


class ToyCodec(Codec):
    name = "toy"
    settings_schema = "learned"
    input_kind = "normalized"
    trained = True

    @classmethod
    def train_point(cls, frames, point, sizes, training, model, loss, device, provenance):
        spread = float(np.mean([f.std() for f in frames]))
        step = spread / (1.0 + 100.0 * float(point))
        Path(model).write_text(json.dumps({"lambda": float(point), "step": step}))
        Path(loss).write_text(f"step,loss,bpfp,mse\\n0,{step},0,0\\n")
        return {"step": step}

    def _step(self) -> float:
        return json.loads(self.model.read_text())["step"]

    def version(self) -> str:
        return f"toy zlib {zlib.ZLIB_VERSION} step {self._step():.6g}"

    def encode(self, frame, point, bitstream, workdir):
        codes = np.rint(frame / self._step()).astype(np.int32)
        Path(bitstream).write_bytes(zlib.compress(codes.tobytes(), 9))

    def decode(self, bitstream, frame_shape, workdir):
        try:
            codes = np.frombuffer(zlib.decompress(Path(bitstream).read_bytes()), np.int32)
            return (codes.reshape(frame_shape) * self._step()).astype(np.float32)
        except (zlib.error, ValueError) as err:
            raise CodecError(f"{bitstream}: not a toy bitstream ({err})") from None
'''

TOY_TASK = '''
"""A toy task: ImageNet-style classification under another name (one module, one config block)."""

from lamofc_lib.tasks.lamofc.cls import ClassificationTask


class ToyTask(ClassificationTask):
    name = "toy"
'''


def toy_config(codecs: list[str]) -> dict:
    """The demo profile running the toy task alone with VVenC and the given codecs: one block each."""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["tasks"]["toy"] = config["tasks"]["cls"]
    config["run"]["tasks"] = ["toy"]
    config["run"]["codecs"] = ["vvenc", *codecs]
    config["codecs"]["vvenc"].pop("tasks")  # the demo's VVenC codes LaMoFC's tasks alone
    config["run"]["score_jobs"] = "label"  # one score job per codec: the toy codec's own is asserted
    config["codecs"]["toy"] = {
        "points": {"toy": [0.01, 0.1]},
        "truncation": "learned",
        "training": {"toy": {"steps": 1, "batch": 1, "crop": [64, 64]}},
        "samples_per_job": 8,
    }
    return config


def scheduled(workdir: Path, repo: Path, config: dict, env: dict | None = None) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run of `repo`'s workflow schedules in `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [str(SNAKEMAKE), "-s", str(repo / "Snakefile"), "--directory", str(workdir), "--configfile",
         str(workdir / "config.yaml"), "-n", "--cores", "1"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = re.findall(r"rule (\w+):\n(?:    .*\n)*?    wildcards: (.*)\n", result.stdout + result.stderr)
    return jobs


def assert_toy_jobs(jobs: list[tuple[str, str]]) -> None:
    """The toy task is extracted and scored; the toy codec trains one model per lambda and codes both points."""
    assert any(rule == "extract" and "task=toy" in w for rule, w in jobs)
    trains = sorted(w for rule, w in jobs if rule == "train")
    assert trains == ["task=toy, codec=toy, point=0.01", "task=toy, codec=toy, point=0.1"]
    codes = [w for rule, w in jobs if rule == "code" and "codec=toy" in w]
    assert sorted(re.search(r"point=([\d.]+)", w).group(1) for w in codes) == ["0.01", "0.1"]
    assert any(rule == "score" and w == "task=toy, codec=toy" for rule, w in jobs)
    assert any(rule == "score" and w == "task=toy, codec=vvenc" for rule, w in jobs)


def copy_repository(dest: Path) -> Path:
    files = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def test_a_toy_task_and_a_toy_trained_codec_in_the_tree_are_one_module_and_one_config_block_each(tmp_path):
    repo = copy_repository(tmp_path / "repo")
    (repo / "lamofc_lib" / "tasks" / "toy.py").write_text(TOY_TASK)
    (repo / "lamofc_lib" / "codecs" / "toy.py").write_text(TOY_CODEC)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    assert_toy_jobs(scheduled(tmp_path / "run", repo, toy_config(["toy"]), env))


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """The toy codec as a separate distribution, installed (pip, no dependencies) into a folder of its own."""
    root = tmp_path_factory.mktemp("plugin")
    src = root / "src"
    (src / "lamofc_toy_plugin").mkdir(parents=True)
    (src / "lamofc_toy_plugin" / "__init__.py").write_text("")
    (src / "lamofc_toy_plugin" / "codec.py").write_text(TOY_CODEC)
    (src / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "lamofc-toy-plugin"
        version = "0.1"

        [project.entry-points."lamofc.codecs"]
        toy = "lamofc_toy_plugin.codec:ToyCodec"
        """)
    )
    site = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(site), str(src)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return site


def test_a_codec_installed_as_a_plugin_is_registered_and_codes_through_the_workflows_path(plugin_site, tmp_path):
    """The installed toy codec is found through its entry point, trains through its hook, and codes a feature
    store's frames to bitstream files whose sizes the rate counts, decoding back within its step."""
    script = textwrap.dedent(f"""
        import numpy as np
        from lamofc_lib.bitstreams import rate
        from lamofc_lib.codecs import REGISTRY, get_codec
        from lamofc_lib.coding import code_shard
        from lamofc_lib.preprocess import preprocess_store, store_frames
        from lamofc_lib.store import FeatureStore, TensorLayout, write_store

        cls = REGISTRY["toy"]
        assert cls.__module__ == "lamofc_toy_plugin.codec", cls.__module__
        root = __import__("pathlib").Path({str(tmp_path)!r})
        rng = np.random.default_rng(0)
        xs = [rng.normal(0, 3, (1, 1, 20, 30)).astype(np.float32) for _ in range(2)]
        write_store(root / "f.zarr", ["a", "b"], {{"feature": TensorLayout([x.shape for x in xs], "float32",
                    {{"packing": "plane"}})}}, ({{"feature": x}} for x in xs), attrs={{"task": "cls"}})
        frames = store_frames(root / "f.zarr", "normalized", [-8, 8])
        cls.train_point(frames, "0.01", {{}}, {{}}, root / "m.json", root / "loss.csv", "cpu", {{}})
        preprocess_store(root / "f.zarr", root / "frames.zarr", "cls", [-8, 8], "normalized", 10)
        codec = get_codec("toy", {{}}, model=root / "m.json")
        code_shard(root / "frames.zarr", root / "bits", root / "rec.zarr", codec, "0.01", range(2))
        sizes = [sum(8 * p.stat().st_size for p in (root / "bits").glob(f"{{i:05d}}.*.bin")) for i in range(2)]
        assert [r["bits"] for r in rate([root / "bits"])] == sizes and min(sizes) > 0, sizes
        step = __import__("json").loads((root / "m.json").read_text())["step"] * 16  # frame units -> feature
        rec = FeatureStore(root / "rec.zarr")
        for i, x in enumerate(xs):
            assert np.abs(rec.read(i) - np.clip(x, -8, 8)).max() <= step / 2 + 1e-4
        print("toy plugin coded", sizes)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), str(REPO)])}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and "toy plugin coded" in result.stdout, result.stderr[-3000:]
    # without the plugin on the path, the codec is unknown
    bare = subprocess.run([sys.executable, "-c", "from lamofc_lib.codecs import REGISTRY; print(sorted(REGISTRY))"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert "'toy'" not in bare.stdout and "'vvenc'" in bare.stdout


def test_the_workflow_schedules_a_plugin_codecs_jobs_like_its_own(plugin_site, tmp_path):
    """The same toy codec from the installed distribution: the toy task in the tree (one module), the codec
    from the plugin, and the dry run trains, codes and scores it."""
    repo = copy_repository(tmp_path / "repo")
    (repo / "lamofc_lib" / "tasks" / "toy.py").write_text(TOY_TASK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), str(repo)])}
    assert_toy_jobs(scheduled(tmp_path / "run", repo, toy_config(["toy"]), env))


def test_editing_a_plugin_codecs_module_changes_its_jobs_code_hash(plugin_site):
    """A plugin's code is hashed like the library's: an edit to its module reruns its jobs, not VVenC's."""
    script = textwrap.dedent(f"""
        from pathlib import Path
        from lamofc_lib import code_hash
        package, code = Path({str(REPO / "lamofc_lib")!r}), Path({str(REPO / "workflow" / "scripts" / "code.py")!r})
        toy, vvenc = (code_hash.script_code_version(package, code, "cls", c) for c in ("toy", "vvenc"))
        module = Path({str(plugin_site / "lamofc_toy_plugin" / "codec.py")!r})
        module.write_text(module.read_text() + "\\n# edited\\n")
        print(toy != code_hash.script_code_version(package, code, "cls", "toy"),
              vvenc == code_hash.script_code_version(package, code, "cls", "vvenc"))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), str(REPO)])}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.stdout.split() == ["True", "True"], result.stderr[-3000:]


# --- A new scenario as docs/extending.md adds one -------------------------------------------------------------------

SCENARIO = '''
"""A toy scenario: seeded signals, a seeded random projection as its model and two named tensors of different
dtypes at its split point, its own source kind, selection policy, model option and metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.selection import Policy, first_eligible, pick
from lamofc_lib.sources.base import Source
from lamofc_lib.store import TensorLayout
from lamofc_lib.tasks.base import Task, TensorExtraction, TensorsLayout

ROWS = 16  # of each tensor


class Signals(Source):
    kind = "toy_signals"
    description = "seeded random signals (toy)"
    properties = {"count": {"description": "toy_signals: how many signals.", "type": "integer", "minimum": 1},
                  "seed": {"description": "toy_signals: their seed.", "type": "integer"}}
    required = ("count",)

    @classmethod
    def read(cls, source):
        seed = int(source.get("seed", 0))
        return pd.DataFrame([{"sample_id": f"sig{i:02d}", "source": f"toy_signals:{seed}:{i}", "label": "",
                              "text": ""} for i in range(int(source["count"]))])


class EvenIds(Policy):
    policy = "even_ids"
    description = "toy: the signals of even index"
    kinds = ("toy_signals",)

    @classmethod
    def select(cls, task, candidates, samples, source, correct):
        even = [int(s.rsplit(":", 1)[1]) % 2 == 0 for s in candidates["source"]]
        kept = first_eligible(even, samples)
        return pick(candidates, kept, ["" if k else "odd or beyond samples" for k in kept])


def _signal(source: str, width: int) -> np.ndarray:
    _, seed, index = source.split(":")
    return np.random.default_rng([int(seed), int(index)]).normal(0, 1, (2 * ROWS, width))


class PoolingTask(Task):
    name = "toy_pooling"
    metric = "agreement"
    metric_label = "agreement (%)"
    sources = (Signals,)
    policies = (EvenIds,)
    reference_policy = "even_ids"
    references = ("uncompressed",)
    needs_split = False
    model_options = {"width": {"description": "Width of the projection.", "type": "integer", "minimum": 2}}

    def _weights(self, model):
        rng = np.random.default_rng(int(model["random_init"]["seed"]))
        return rng.normal(0, 1, (int(model["width"]), int(model["width"]))).astype(np.float32)

    def _tensors(self, manifest, model):
        width = int(model["width"])
        return {"hidden": TensorLayout([(1, 1, ROWS, width)] * len(manifest), "float32", {"packing": "plane"}),
                "gate": TensorLayout([(1, 1, ROWS, width)] * len(manifest), "float16", {"packing": "plane"})}

    def layout(self, manifest, model, split):
        return TensorsLayout(self._tensors(manifest, model), {"task": self.name, "model": dict(model)})

    def features(self, manifest, model, split):
        weights, width = self._weights(model), int(model["width"])

        def samples():
            for source in manifest["source"]:
                x = np.tanh(_signal(source, width) @ weights)
                yield {"hidden": x[None, None, :ROWS], "gate": x[None, None, ROWS:].astype(np.float16)}

        return TensorExtraction(self._tensors(manifest, model), samples(), {"task": self.name, "model": dict(model)})

    def write_head(self, model, split, head, head_out):
        rng = np.random.default_rng(int(head.get("seed", 0)))
        np.save(Path(head_out).with_suffix(".npy"), rng.normal(0, 1, (int(model["width"]), 3)))
        Path(head_out).write_bytes(Path(head_out).with_suffix(".npy").read_bytes())

    def head_input(self, sample):
        return sample

    def head_outputs(self, head, features, attrs):
        classes = np.load(Path(head), allow_pickle=False)
        return [str(int(np.argmax((s["hidden"].mean(axis=(0, 1, 2)) + s["gate"].astype(np.float32).mean(
            axis=(0, 1, 2))) @ classes))) for s in features]
'''

SCENARIO_BLOCK = {
    "samples": 3,
    "source": {"kind": "toy_signals", "count": 8, "seed": 1},
    "model": {"random_init": {"seed": 0}, "width": 32},
    "reference": "uncompressed",
    "truncation": {"learned": [-1, 1]},
    "train": {"samples": 2, "source": {"kind": "toy_signals", "count": 2, "seed": 2}},
}


def _dt_ufc_checkpoint(path: Path) -> None:
    """A small one-channel scale hyperprior in DT-UFC's checkpoint layout, built from CompressAI's classes."""
    import torch
    from compressai.models import ScaleHyperprior
    from compressai.models.utils import conv, deconv

    torch.manual_seed(3)
    net = ScaleHyperprior(8, 16)
    net.g_a[0], net.g_s[-1] = conv(1, 8), deconv(8, 1)
    torch.save({"epoch": 1, "state_dict": net.state_dict(), "loss": 0.0}, path)


def scenario_config(checkpoint: Path) -> dict:
    """The demo profile running the toy scenario alone, coded by a universal codec (pretrained, DT-UFC's layout)
    whose points, training and K-means settings name no task."""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["tasks"]["toy_pooling"] = SCENARIO_BLOCK
    config["run"]["tasks"] = ["toy_pooling"]
    config["run"]["codecs"] = ["hyperprior_u"]
    codec = config["codecs"]["hyperprior_u"]
    codec["pretrained"] = {"0.004": str(checkpoint)}
    codec["points"] = {"hybrid": [0.004]}
    for key in ("N", "M", "training"):
        codec.pop(key)
    return config


def test_a_new_scenario_is_one_module_and_its_config_block(tmp_path):
    """docs/extending.md's walk-through: a scenario with two named tensors of different dtypes, its own source
    kind, selection policy, model option and metric, added as one module (git sees no other file change) and one
    config block; the dry run schedules it with a universal codec that has no entry for it, and the run scores
    it, on the tensors as the scenario gave them."""
    repo = copy_repository(tmp_path / "repo")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "base"], check=True)
    (repo / "lamofc_lib" / "tasks" / "toy_pooling.py").write_text(SCENARIO)
    status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True, check=True).stdout
    assert status.splitlines() == ["?? lamofc_lib/tasks/toy_pooling.py"]

    _dt_ufc_checkpoint(tmp_path / "hybrid_lambda0.004.pth.tar")
    config = scenario_config(tmp_path / "hybrid_lambda0.004.pth.tar")
    env = {**os.environ, "PYTHONPATH": str(repo)}
    jobs = scheduled(tmp_path / "run", repo, config, env)
    assert ("select", "task=toy_pooling") in jobs and ("extract", "task=toy_pooling") in jobs
    assert any(rule == "calibrate" and "toy_pooling" in w for rule, w in jobs)
    assert not any(rule == "train" for rule, _ in jobs)  # pretrained
    assert any(rule.startswith("score") and "toy_pooling" in w for rule, w in jobs)

    result = subprocess.run(
        [str(SNAKEMAKE), "-s", str(repo / "Snakefile"), "--directory", str(tmp_path / "run"), "--configfile",
         str(tmp_path / "run" / "config.yaml"), "--cores", "2", "results/tables/rate_accuracy.csv"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    results = tmp_path / "run" / "results"
    table = pd.read_csv(results / "tables" / "rate_accuracy.csv")
    coded = table[table["codec"] == "hyperprior_u@hybrid"]
    assert list(coded["task"]) == ["toy_pooling"] and list(coded["metric"]) == ["agreement"]
    assert 0 <= float(coded["value"].iloc[0]) <= 100
    manifest = pd.read_csv(results / "toy_pooling" / "manifest.csv", dtype=str)
    assert list(manifest["sample_id"]) == ["sig00", "sig02", "sig04"]  # its policy: even indices
    store = FeatureStore(results / "toy_pooling" / "features.zarr")
    assert {name: store.layout(name).dtype for name in store.tensors} == {"hidden": "float32", "gate": "float16"}
    bitstreams = sorted(p.name for p in (results / "toy_pooling").rglob("*.bin"))
    assert {"00000.hidden.bin", "00000.gate.bin"} <= set(bitstreams)

    # features_from: the same tensors as a folder per sample of one .npy per tensor import to the same store
    script = textwrap.dedent(f"""
        from pathlib import Path
        import numpy as np, pandas as pd, pytest
        from lamofc_lib.feature_files import import_features
        from lamofc_lib.io import FeatureFileError
        from lamofc_lib.store import FeatureStore
        from lamofc_lib.tasks import get_task
        results = Path({str(results)!r})
        store = FeatureStore(results / "toy_pooling" / "features.zarr")
        folder = Path({str(tmp_path / "files")!r})
        for i, sid in enumerate(store.sample_ids):
            (folder / sid).mkdir(parents=True)
            for name in store.tensors:
                np.save(folder / sid / f"{{name}}.npy", store.read(i, name))
        manifest = pd.read_csv(results / "toy_pooling" / "manifest.csv", dtype=str, keep_default_na=False)
        model = {{"random_init": {{"seed": 0}}, "width": 32}}
        import_features(get_task("toy_pooling"), folder, manifest, model, None, folder.parent / "imported.zarr")
        imported = FeatureStore(folder.parent / "imported.zarr")
        assert imported.tensors == store.tensors
        for name in store.tensors:
            assert imported.layout(name).dtype == store.layout(name).dtype, name
            for i in range(len(store)):
                assert np.array_equal(imported.read(i, name), store.read(i, name))
        np.save(folder / "sig02" / "gate.npy", np.zeros((1, 1, 3, 32), np.float16))
        shapes = "has shape 1 x 1 x 3 x 32, task toy_pooling expects 1 x 1 x 16 x 32"
        with pytest.raises(FeatureFileError, match="sig02/gate.npy " + shapes):
            import_features(get_task("toy_pooling"), folder, manifest, model, None, folder.parent / "bad.zarr")
        print("imported", imported.tensors)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=repo, timeout=300
    )
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr[-3000:]
