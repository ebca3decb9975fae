"""LaMoFCBench's language scenarios (rows 6-10): an lm-evaluation-harness task answered by a causal LM whose first
layers run on one machine; what crosses is the hidden state after decoder layer 4 and the caches of layers 0-4
(lamofc_lib.tasks.lamofcbench.language.prefill), and the other machine generates the answer from the decoded
ones. The reference runs each task on Qwen3-8B and on FalconMamba-7B-instruct: one registered task per
lm-eval task (`lm_arc_challenge`, ...), configured once per model as task profiles (`qwen3_arc_challenge:
{task: lm_arc_challenge, model: {id: Qwen/Qwen3-8B, ...}}`).

- Samples: the task's documents from the user's local copy of the hub files (`source.path`), sorted as the
  reference sorts them (lamofc_lib.tasks.lamofcbench.language.lm_tasks), sample id = index in that order (the
  reference's sample lists are such indices: give them as `selection.list`); without a path, the demo
  documents shipped in lamofc_lib/data.
- Extraction: lm-eval builds the prompt (chat template on, Qwen3's thinking off with `model.enable_thinking:
  false`) and its HF model wrapper (HFLM, batch size 1) tokenizes it; the prompt's pass records the split and
  stops there. Tensors in the model's dtypes, stored 4-D for the frames (`tokens` packing: keys and values T x
  (heads x head size), head-major; the hidden state T x D; a Mamba state I x S), each its own K-means centres.
- Scoring: the same prompt, the decoded tensors put in place at prefill, greedy generation to the task's stop
  sequences, lm-eval's answer filter and exact match against the task's target. Every tensor coded is injected.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.sources.base import Source
from lamofc_lib.sources.manifest import COLUMNS, SourceError
from lamofc_lib.tasks.base import Task, TensorExtraction, TensorsLayout, split_layers
from lamofc_lib.tasks.lamofcbench.language.lm_tasks import build_task, lm_task
from lamofc_lib.tasks.lamofcbench.language.models import lm_config, load_lm

# The tensors stored with an added axis 1 (a 3-D model tensor as a 1 x 1 x H x W frame tensor).
WIDENED = ("output", "ssm_state", "conv_state")


def to_store(name: str, tensor) -> np.ndarray:
    """A split tensor as the store holds it: float32 (bfloat16 values exact in it) or its own float dtype, 4-D."""
    import torch

    x = tensor.detach().cpu()
    x = x.float() if x.dtype == torch.bfloat16 else x
    x = x.numpy()
    return x[:, None] if name.split(".")[0] in WIDENED else x


def from_store(name: str, x: np.ndarray) -> np.ndarray:
    """The model's shape of a stored split tensor."""
    return x[:, 0] if name.split(".")[0] in WIDENED else x


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def split_dtype(config, model: Mapping, name: str) -> str:
    """A split tensor's dtype as the reference's runs give it: the model's (model.dtype), but a Mamba model's
    hidden state with `residual_in_fp32` (FalconMamba's), float32. (Without the mamba-ssm kernels, transformers
    keeps a float16 FalconMamba's SSM state in float32: an extraction stores what the model gives.)"""
    from lamofc_lib.tasks.lamofcbench.language.prefill import OUTPUT, is_mamba

    if name == OUTPUT and is_mamba(config) and getattr(config, "residual_in_fp32", False):
        return "float32"
    return str(model.get("dtype") or "float32")


SHIPPED = "lamofc_lib/data/"
"""How a manifest names a demo data file shipped with lamofc_lib (wherever the checkout lies)."""


def data_file(source: str | Path) -> Path:
    """The file a manifest's `source` names: a shipped demo file, or a user's path."""
    text = str(source)
    if not text.startswith(SHIPPED):
        return Path(text)
    path = Path(str(resources.files("lamofc_lib").joinpath(f"data/{text.removeprefix(SHIPPED)}")))
    if not path.is_file():
        raise SourceError(f"{text} is not shipped")
    return path


def lm_candidates(lm_task: str, source: str) -> pd.DataFrame:
    """Every document of a data file (`source`: a path, or a shipped file as lamofc_lib/data/<name>) in the
    reference's order: sample id its index, label lm-eval's target, text the prompt."""

    task = build_task(lm_task, data_file(source))
    rows = [
        {
            "sample_id": str(i),
            "source": str(source),
            "label": str(task.doc_to_target(doc)),
            "text": task.doc_to_text(doc),
        }
        for i, doc in enumerate(task.test_docs())
    ]
    if not rows:
        raise SourceError(f"{lm_task}: data file {source} holds no documents")
    return pd.DataFrame(rows, columns=COLUMNS)


class LmDocs(Source):
    """A language task's documents: a local hub data file, or the demo's shipped file of the task."""

    lm_task = ""
    demo_files: dict[str, str] = {}  # set -> shipped file name
    properties = {
        "path": {"description": "<task>_docs: the split's hub data file (parquet, json or jsonl); null: the demo's.",
                 "type": ["string", "null"]},
        "set": {"description": "<task>_docs without a path: the shipped evaluation (eval) or training (train) "
                "documents.", "enum": ["eval", "train"]},
    }  # fmt: skip
    path_keys = ("path",)

    @classmethod
    def read(cls, source: Mapping) -> pd.DataFrame:
        path = source.get("path")
        if not path:
            shipped = cls.demo_files.get(source.get("set") or "eval")
            if not shipped:
                raise SourceError(f"{cls.kind}: no {source.get('set')} documents are shipped; give a path")
            path = SHIPPED + shipped
        return lm_candidates(cls.lm_task, path)


class ArcChallengeDocs(LmDocs):
    kind = "arc_challenge_docs"
    description = (
        "ARC-Challenge documents (allenai/ai2_arc's layout: id, question, choices, answerKey) from a local hub "
        "file (path: parquet, json or jsonl), or without a path the ARC questions shipped for the demo (set)"
    )
    lm_task = "arc_challenge"
    demo_files = {"eval": "arc_demo.jsonl", "train": "arc_demo_train.jsonl"}


class GsmDocs(LmDocs):
    kind = "gsm8k_docs"
    description = (
        "GSM8K documents (gsm8k main's layout: question, answer ending '#### <number>') from a local hub file, or "
        "without a path the word problems shipped for the demo"
    )
    lm_task = "gsm8k"
    demo_files = {"eval": "gsm8k_demo.jsonl"}


class HellaSwagDocs(LmDocs):
    kind = "hellaswag_docs"
    description = (
        "HellaSwag documents (Rowan/hellaswag's layout: activity_label, ctx_a, ctx_b, endings, label) from a local "
        "hub file, or without a path the contexts shipped for the demo"
    )
    lm_task = "hellaswag"
    demo_files = {"eval": "hellaswag_demo.jsonl"}


class TruthfulQaDocs(LmDocs):
    kind = "truthfulqa_mc1_docs"
    description = (
        "TruthfulQA multiple-choice documents (truthful_qa multiple_choice's layout: question, mc1_targets with "
        "the right choice first) from a local hub file, or without a path the questions shipped for the demo"
    )
    lm_task = "truthfulqa_mc1"
    demo_files = {"eval": "truthfulqa_demo.jsonl"}


class WinograndeDocs(LmDocs):
    kind = "winogrande_docs"
    description = (
        "WinoGrande documents (winogrande_xl's layout: sentence with a blank _, option1, option2, answer 1 or 2) "
        "from a local hub file, or without a path the sentences shipped for the demo"
    )
    lm_task = "winogrande"
    demo_files = {"eval": "winogrande_demo.jsonl"}


def _key(model: Mapping) -> str:
    """A model block as a cache key."""
    return json.dumps(model, sort_keys=True, default=str)


@functools.lru_cache(maxsize=1)
def _wrapper(model_key, device: str):
    """The model and lm-eval's HF wrapper of it (batch size 1)."""
    import warnings

    from lm_eval.models.huggingface import HFLM

    model = json.loads(model_key)
    net, tokenizer = load_lm(model, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = HFLM(pretrained=net, tokenizer=tokenizer, batch_size=1, max_length=model.get("max_length"),
                  enable_thinking=model.get("enable_thinking"))  # fmt: skip
    return net, lm


@functools.lru_cache(maxsize=1)
def _requests(lm_task: str, model_key, device: str, path: str, max_gen_toks, doc_ids: tuple[int, ...]):
    """lm-eval's task on the data file `path` and its requests (prompt with the model's chat template) for
    `doc_ids`."""

    _, lm = _wrapper(model_key, device)
    task = build_task(lm_task, path, max_gen_toks)
    task.build_all_requests(apply_chat_template=True, chat_template=lm.apply_chat_template,
                            samples=sorted(set(doc_ids)))  # fmt: skip
    by_doc = {inst.doc_id: inst for inst in task.instances}
    missing = [i for i in doc_ids if i not in by_doc]
    if missing:
        raise ValueError(f"{lm_task}: {path} has no documents {missing[:5]}")
    return task, [by_doc[i] for i in doc_ids]


class LanguageScenario(Task):
    """One lm-eval task (`lm_task`) of LaMoFCBench's language category."""

    lm_task = ""
    metric = "accuracy"
    metric_label = "exact match (%)"
    references = ("ground_truth", "uncompressed")  # uncompressed: the demo's seeded models
    random_init_tokenizer = True
    head_checkpoint = False
    reference_policy = "first"
    metric_options = ("max_gen_toks",)
    options = {
        "max_gen_toks": {
            "description": (
                "At most this many generated tokens at scoring (default: the task's, as lm-eval gives it). The "
                "split is extracted with the task's: a prompt that lm-eval truncates to leave room for the "
                "generation (longer than max_length less max_gen_toks) must be truncated alike in both."
            ),
            "type": ["integer", "null"],
            "minimum": 1,
            "default": None,
        },
    }
    model_options = {
        "enable_thinking": {
            "description": "Qwen3's chat template: thinking on or off (the reference: false); null: the template's.",
            "type": ["boolean", "null"],
        },
        "max_length": {
            "description": "The model wrapper's context length in tokens (FalconMamba in the reference: 8192).",
            "type": ["integer", "null"],
            "minimum": 1,
        },
    }
    preload = ("transformers:AutoModelForCausalLM", "transformers:AutoTokenizer", "lm_eval.models.huggingface")
    max_gen_toks = None  # tasks.<task>.max_gen_toks

    def _layer(self, split, config) -> int:
        layers = split_layers(split)
        if len(layers) != 1 or not 1 <= layers[0] <= int(config.num_hidden_layers) - 1:
            raise ValueError(
                f"tasks.{self.block}.split: one decoder layer count, 1 to {int(config.num_hidden_layers) - 1} (the "
                f"layers that run before the split; the reference's 5), got {split}"
            )
        return layers[0] - 1

    def layout(self, manifest: pd.DataFrame, model: Mapping, split) -> TensorsLayout:
        """The tensors' names, ranks and dtypes (`split_dtype`) without weights; their token counts only the
        tokenizer's pass knows (None)."""
        from lamofc_lib.store import TensorLayout
        from lamofc_lib.tasks.lamofcbench.language.prefill import tensor_names

        config = lm_config(model)
        layer = self._layer(split, config)
        tensors = {
            name: TensorLayout(
                [(1, None, None, None)] * len(manifest), split_dtype(config, model, name), {"packing": "tokens"}
            )  # fmt: skip
            for name in tensor_names(config, layer)
        }
        return TensorsLayout(tensors, self._attrs(manifest, model, layer))

    def _attrs(self, manifest: pd.DataFrame, model: Mapping, layer: int) -> dict:
        files = sorted(set(manifest["source"]))
        if len(files) != 1:
            raise ValueError(f"task {self.block}: the samples come from {len(files)} data files, expected one")
        return {
            "task": self.block,
            "model": {k: v for k, v in model.items() if v is not None},
            "split": {"layer": layer, "where": "decoder layer output (0-based) and the caches of layers 0..layer"},
            "extraction": {"lm_task": self.lm_task, "data_file": files[0]},
        }

    def _run(self, model: Mapping, source: str, doc_ids: Sequence[int]):
        """(net, lm-eval's HFLM wrapper, the task, its requests for `doc_ids` in that order, with no responses
        yet). A scoring job scores many points of one task: the model, the wrapper and the requests are made
        once per job (the model 2.2 s, the task and its requests 0.5 s for the demo's SmolLM2)."""
        task, requests = _requests(self.lm_task, _key(model), self.device, str(data_file(source)),
                                   self.max_gen_toks, tuple(doc_ids))  # fmt: skip
        for request in requests:
            request.resps, request.filtered_resps = [], {}
        net, lm = _wrapper(_key(model), self.device)
        return net, lm, task, requests

    def features(self, manifest: pd.DataFrame, model: Mapping, split) -> TensorExtraction:
        """The split of every sample's prompt (computed here, in memory, for the token counts)."""
        import torch

        from lamofc_lib.store import TensorLayout
        from lamofc_lib.tasks.lamofcbench.language.prefill import PrefillCaptured, prefill_split

        layout = self.layout(manifest, model, split)
        layer = layout.attrs["split"]["layer"]
        ids = [int(s) for s in manifest["sample_id"]]
        net, lm, _, requests = self._run(model, layout.attrs["extraction"]["data_file"], ids)
        samples, dtypes = [], {}
        for request in requests:
            with torch.no_grad(), prefill_split(net, layer, stop=True) as found, suppress(PrefillCaptured):
                lm.generate_until([request], disable_tqdm=True)
            if set(found) != set(layout.tensors):
                raise RuntimeError(f"task {self.block}: the prompt's pass gave {sorted(found)}")
            dtypes.update({name: dtype_name(t.dtype) for name, t in found.items()})
            samples.append({name: to_store(name, t) for name, t in found.items()})
        tensors = {
            name: TensorLayout([s[name].shape for s in samples], dtypes[name], dict(spec.attrs))
            for name, spec in layout.tensors.items()
        }
        return TensorExtraction(tensors, iter(samples), layout.attrs)

    def write_head(self, model: Mapping, split, head: Mapping, head_out: Path) -> None:
        """The head is the model itself (its layers after the split and its LM head), loaded at scoring from the
        model block: the file records the task and the split."""
        import torch

        layer = self._layer(split, lm_config(model))
        torch.save({"lm_task": self.lm_task, "layer": layer}, head_out)

    def head_input(self, sample: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return sample

    def reference_stem(self, sample_id: str) -> str:
        """The reference's file of a sample: `sample<document index>-layer4-item1.zst` (its split, after layer 4),
        holding `output` and the lists `key`, `value` (or `ssm_state`, `conv_state`) of layers 0-4, which import
        as output, key.0, ..., value.4."""
        return f"sample{sample_id}-layer4-item1"

    def tensor_groups(self, layouts: Mapping[str, Mapping]) -> dict[str, list[str]]:
        """The hidden state alone, the keys (SSM states) alone, the values (convolution states) alone, and each
        layer's cache alone."""
        names = list(layouts)
        groups = {"output": [n for n in names if n == "output"]}
        for kind in ("key", "value", "ssm_state", "conv_state"):
            found = [n for n in names if n.split(".")[0] == kind]
            if found:
                groups[f"{kind}s"] = found
        for layer in sorted({int(n.split(".")[1]) for n in names if "." in n}):
            groups[f"layer.{layer}"] = [n for n in names if n.endswith(f".{layer}")]
        return {k: v for k, v in groups.items() if v}

    def head_outputs(self, head: Path, features: Iterable[Mapping[str, np.ndarray]], attrs: Mapping) -> list[str]:
        """Per sample, lm-eval's filtered answer of the greedy generation from the decoded split."""
        import logging

        import torch

        from lamofc_lib.tasks.lamofcbench.language.prefill import prefill_split

        log = logging.getLogger("lamofc")
        extraction = attrs["extraction"]
        ids = [int(s) for s in attrs["sample_ids"]]
        net, lm, task, requests = self._run(attrs["model"], extraction["data_file"], ids)
        for request, sample in zip(requests, features, strict=True):
            decoded = {name: torch.from_numpy(np.ascontiguousarray(from_store(name, x))) for name, x in sample.items()}
            with torch.no_grad(), prefill_split(net, int(attrs["split"]["layer"]), decoded):
                [response] = lm.generate_until([request], disable_tqdm=True)
            request.resps.append(response)
            log.info("sample %s: %r", request.doc_id, response)
        task.apply_filters()
        key = lm_task(self.lm_task).answer_filter
        return [str(r.filtered_resps[key]) for r in requests]

    def compare(self, outputs: Sequence, references: Sequence) -> tuple[float, list[dict]]:
        """lm-eval's exact match of each answer and its target with the task's settings (the reference's: case and
        punctuation ignored; GSM8K's ignores ",", "$", a trailing "." and the reasoning up to "#### "), in
        percent."""
        from lm_eval.api.metrics import exact_match_hf_evaluate

        self.check_counts(outputs, references)
        metric = lm_task(self.lm_task).metric
        settings = {k: v for k, v in metric.items() if k.startswith("ignore") or k == "regexes_to_ignore"}
        rows = []
        for answer, target in zip(outputs, references, strict=True):
            match = exact_match_hf_evaluate(predictions=[str(answer)], references=[str(target)], **settings)
            rows.append(
                {"prediction": str(answer), "reference": str(target), "correct": bool(match["exact_match"] == 1)}
            )
        return 100.0 * float(np.mean([row["correct"] for row in rows])), rows


class LmArcChallenge(LanguageScenario):
    """ARC-Challenge's test split (the reference's `fc_arc_challenge`); its train split is the calibration of the
    K-means centres of every language task of a model (the reference's `arc_fewshot`)."""

    name = "lm_arc_challenge"
    lm_task = "arc_challenge"
    sources = (ArcChallengeDocs,)


class LmGsm8k(LanguageScenario):
    """GSM8K's test split (the reference's `fc_gsm8k`): the answer is the last number generated."""

    name = "lm_gsm8k"
    lm_task = "gsm8k"
    sources = (GsmDocs,)


class LmHellaSwag(LanguageScenario):
    """HellaSwag's validation split (the reference's `fc_hellaswag`)."""

    name = "lm_hellaswag"
    lm_task = "hellaswag"
    sources = (HellaSwagDocs,)


class LmTruthfulQaMc1(LanguageScenario):
    """TruthfulQA-MC1's validation split (the reference's `fc_truthfulqa_mc1`): the target is always "A"."""

    name = "lm_truthfulqa_mc1"
    lm_task = "truthfulqa_mc1"
    sources = (TruthfulQaDocs,)


class LmWinogrande(LanguageScenario):
    """WinoGrande's (winogrande_xl) validation split (the reference's `fc_winogrande`)."""

    name = "lm_winogrande"
    lm_task = "winogrande"
    sources = (WinograndeDocs,)
