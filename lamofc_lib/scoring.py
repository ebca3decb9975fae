"""Scores of the operating points of a task and codec: the task metric from the head's outputs, BPFP from the
bitstreams, feature MSE against the uncompressed features."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.bitstreams import rate, read_sidecars
from lamofc_lib.distortion import feature_errors
from lamofc_lib.io import atomic_path
from lamofc_lib.sources import read_manifest
from lamofc_lib.store import FeatureStore, StoreShards
from lamofc_lib.tasks import get_task

ORIGINAL = "original"
UNCOMPRESSED_BPFP = 32.0  # float32 features


def save_outputs(path: str | Path, sample_ids: Sequence[str], outputs: Mapping[str, Sequence]) -> None:
    """Keep per-sample head outputs (labels, maps, activations) of each variant (`""`: a task without variants)
    as the reference of the coded points."""
    arrays = {_key(variant, i): np.asarray(o) for variant, values in outputs.items() for i, o in enumerate(values)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, sample_ids=np.asarray(list(sample_ids)), **arrays)


def load_outputs(path: str | Path, sample_ids: Sequence[str], variant: str = "") -> list:
    with np.load(path, allow_pickle=False) as data:
        if list(data["sample_ids"]) != list(sample_ids):
            raise ValueError(f"{path} holds the outputs of other samples than the manifest's")
        if _key(variant, 0) not in data:
            raise ValueError(f"{path} holds no outputs of variant '{variant}'")
        return [_plain(data[_key(variant, i)]) for i in range(len(sample_ids))]


def _key(variant: str, i: int) -> str:
    return f"{variant}:{i:05d}" if variant else f"{i:05d}"


def result_name(task: str, variant: str) -> str:
    """A result's task label in the scores and tables: the task, or `task:variant` for one of its variants."""
    return f"{task}:{variant}" if variant else task


def _plain(array: np.ndarray):
    return array.item() if array.ndim == 0 else array


class Scorer:
    """Scores of a task's features with its head: the uncompressed ones (`score()`) or the reconstructions of
    one operating point after another (`score(reconstructed, bitstreams, codec, point)`), the task, manifest
    and uncompressed features loaded once.

    `reference` is ground_truth (the manifest's answers) or uncompressed (the outputs the head gave on the
    uncompressed features: `reference_outputs`, or the outputs themselves when scoring the uncompressed
    features)."""

    def __init__(
        self,
        task_name: str,
        manifest_path: str | Path,
        features_path: str | Path,
        head_path: str | Path,
        reference: str,
        reference_outputs: str | Path | None = None,
        device: str = "cpu",
        threads: int | None = None,
        metric_options: Mapping | None = None,
        quantization_measures: Callable | None = None,
        kind: str | None = None,
    ):
        self.task_name, self.reference, self.metric_options = task_name, reference, dict(metric_options or {})
        self.task = get_task(task_name, device=device, threads=threads, kind=kind)
        self.task.set_metric_options(self.metric_options)
        self.head = Path(head_path)
        self.manifest = read_manifest(manifest_path)
        self.original = FeatureStore(features_path)
        if list(self.original.sample_ids) != list(self.manifest["sample_id"]):
            raise ValueError(f"{features_path} does not hold the samples of {manifest_path}")
        self.reference_outputs = reference_outputs
        self._references: dict[str, list] = {}
        self.variants = self.task.variants(self.original.attrs) or {"": {}}
        # what the quantizer alone loses on a coded point and the entropy of its symbols
        # (coding.quantization_measures; the score jobs of coded points pass it, so the uncompressed scores do not
        # depend on the pre-processing), and its cache
        self._quantization_measures, self._quantization = quantization_measures, {}

    def references(self, outputs: list | None, variant: str = "") -> list:
        if self.reference == "ground_truth":
            return self.task.ground_truth(self.manifest)
        if outputs is not None:  # the uncompressed features' own outputs
            return outputs
        if variant not in self._references:
            if self.reference_outputs is None:
                raise ValueError("reference is uncompressed but no outputs of the uncompressed features were given")
            self._references[variant] = load_outputs(self.reference_outputs, self.manifest["sample_id"], variant)
        return self._references[variant]

    def score(
        self,
        reconstructed: Sequence[str | Path] = (),
        bitstream_dirs: Sequence[str | Path] = (),
        codec: str = ORIGINAL,
        point: str = ORIGINAL,
    ) -> tuple[list[dict], pd.DataFrame, dict[str, list]]:
        """The scores records (one per variant of the task, `Task.variants`; one for most tasks), per-sample
        table (a row per sample and variant) and per-sample outputs (by variant) of one point (its
        reconstruction's stores, one per code job, and their bitstream folders), or of the uncompressed features
        when none are given."""
        store = StoreShards(reconstructed) if reconstructed else self.original
        records, tables, outputs = [], [], {}
        rates = self._rates(store, bitstream_dirs) if reconstructed else None
        for variant, options in self.variants.items():
            self.task.set_metric_options({**self.metric_options, **options})
            samples = (self.task.head_input(store.sample(i)) for i in range(len(store)))
            outputs[variant] = self.task.head_outputs(self.head, samples, self.original.attrs)
            references = self.references(None if reconstructed else outputs[variant], variant)
            value, rows = self.task.compare(outputs[variant], references)
            table = pd.DataFrame(rows)
            table.insert(0, "sample_id", list(self.manifest["sample_id"]))
            if variant:
                table.insert(1, "variant", variant)
            record, table = self._record(table, rates, codec, point, value)
            records.append({**record, "task": result_name(self.task_name, variant)})
            tables.append(table)
        self.task.set_metric_options(self.metric_options)
        if reconstructed:
            for record in records:
                record["codec_version"] = store.attrs.get("codec_version", "")
        return records, pd.concat(tables, ignore_index=True), outputs

    def score_groups(
        self, reconstructed: Sequence[str | Path], bitstream_dirs: Sequence[str | Path], codec: str, point: str
    ) -> list[dict]:
        """Which tensor carries the accuracy: for each of the task's tensor groups (`Task.tensor_groups`), the
        metric of a point with that group's tensors decoded and every other tensor uncompressed, one record per
        group and variant (`coded`: the group, `coded_tensors`, their rate `bpfp_coded`: the group's bits over
        its points, and their MSE `mse_coded`, each the mean over samples; a variant that puts none of a group's
        tensors back, `Task.injected_tensors`, gives none). None for a task without groups."""
        layouts = {name: self.original.layout(name).attrs for name in self.original.tensors}
        groups = self.task.tensor_groups(layouts)
        if not groups:
            return []
        store = StoreShards(reconstructed)
        errors, sidecars = self._rates(store, bitstream_dirs)
        records = []
        for group, names in groups.items():
            own = {n: np.array([sum(t.feature_points for t in s.tensors if t.name == n) for s in sidecars], float)
                   for n in names}  # fmt: skip
            points = sum(own.values())
            bits = errors[[f"bits.{n}" for n in names]].sum(axis=1).to_numpy(dtype=float)
            squared = sum(errors[f"mse.{n}"].fillna(0).to_numpy() * own[n] for n in names)  # NaN: absent
            for variant, options in self.variants.items():
                self.task.set_metric_options({**self.metric_options, **options})
                injected = self.task.injected_tensors(self.original.attrs)
                if injected is not None and not set(names) & set(injected):
                    continue  # a variant that puts none of the group's tensors back (sd35_canny's latent)

                def samples(names=names):
                    for i in range(len(store)):
                        sample = self.original.sample(i)
                        yield self.task.head_input({**sample, **{n: store.read(i, n) for n in names}})

                outputs = self.task.head_outputs(self.head, samples(), self.original.attrs)
                value, _ = self.task.compare(outputs, self.references(None, variant))
                records.append({
                    "task": result_name(self.task_name, variant), "codec": codec, "point": point, "coded": group,
                    "coded_tensors": list(names), "bpfp_coded": float(np.mean(bits / points)),
                    "mse_coded": float(np.mean(squared / points)), "metric": self.task.metric, "value": value,
                    "higher_is_better": self.task.higher_is_better, "samples": len(self.manifest),
                    "reference": self.reference,
                })  # fmt: skip
        self.task.set_metric_options(self.metric_options)
        return records

    def _rates(self, store, bitstream_dirs: Sequence[str | Path]) -> tuple[pd.DataFrame, list]:
        """Per-sample errors, quantization errors and rates of a point, and its sidecars."""
        items = read_sidecars(bitstream_dirs)
        sidecars = [record for _, record in items]
        quantization = (
            self._quantization_measures(self.original, sidecars, self._quantization)
            if self._quantization_measures
            else pd.DataFrame({"quant_mse": [float("nan")] * len(sidecars), "entropy": [float("nan")] * len(sidecars)})
        )
        rates = pd.DataFrame(rate(bitstream_dirs, items)).drop(columns=["sample_index", "feature_points"])
        return pd.concat([feature_errors(self.original, store), quantization, rates], axis=1), sidecars

    def _record(self, table: pd.DataFrame, rates, codec: str, point: str, value: float) -> tuple[dict, pd.DataFrame]:
        """The scores record of one result and its per-sample table with the point's rates and errors."""
        means = {
            "bpfp": UNCOMPRESSED_BPFP,
            "ebpfp": UNCOMPRESSED_BPFP,
            "mse": 0.0,
            "quant_mse": 0.0,
            "entropy": math.nan,
        }
        tensors = {}
        injected = UNCOMPRESSED_BPFP
        if rates is not None:
            errors, sidecars = rates
            table = pd.concat([table, errors], axis=1)
            means = {key: float(table[key].mean()) for key in means}
            names = self.task.injected_tensors(self.original.attrs)
            if names is None:
                injected = means["bpfp"]
            else:  # each sample's bits of the injected tensors over their points, averaged as BPFP is
                points = [sum(t.feature_points for t in s.tensors if t.name in names) for s in sidecars]
                bits = table[[f"bits.{n}" for n in names]].sum(axis=1).to_numpy(dtype=float)
                injected = float(np.mean(bits / np.asarray(points, dtype=float)))
            tensors = {
                t.name: {
                    "dtype": t.feature_dtype,
                    **{key: float(table[f"{key}.{t.name}"].mean()) for key in ("bpfp", "mse", "quant_mse", "entropy")
                       if f"{key}.{t.name}" in table},
                    # the tensor's share of the point's bits (all samples' bits of it over all their bits)
                    "bit_share": float(table[f"bits.{t.name}"].sum() / table["bits"].sum()),
                }
                for t in sidecars[0].tensors
            }  # fmt: skip
        else:
            table["mse"] = 0.0
        scores = {
            "task": self.task_name,
            "codec": codec,
            "point": point,
            **means,
            "bpfp_injected": injected,
            **({"tensors": tensors} if tensors else {}),
            "metric": self.task.metric,
            "value": value,
            **({"metrics": dict(self.task.summary)} if getattr(self.task, "summary", None) else {}),
            "higher_is_better": self.task.higher_is_better,
            "samples": len(self.manifest),
            "reference": self.reference,
            **({"metric_options": self.metric_options} if self.metric_options else {}),
        }
        return scores, table
