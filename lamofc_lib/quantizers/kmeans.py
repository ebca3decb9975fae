"""LaMoFCBench's K-means quantizer: 256 centres per named tensor, fitted on a few calibration samples.

Facts from the reference (LaMoFCBench's coding code and DT-UFC's recipe, see docs/lamofcbench.md):

- one set of centres per tensor, fitted with scikit-learn's ``KMeans(n_clusters=256, random_state=42)`` and its
  other defaults (k-means++ init, ``n_init="auto"``, ``max_iter=300``, ``tol=1e-4``) on the flattened float32
  values of the first calibration samples in name order (10), with no truncation; the centres sorted ascending;
- a value's code is the index of the largest centre <= the value (floor, not the nearest centre), computed in
  float32; values below the first centre get code 0;
- a learned codec's input is code / 256 (in [0, 255/256]); the reconstruction of a decoded value y is
  centre[round(y * 256)], the code clamped to [0, 255];
- a mapping folder holds ``mapping.json`` (handler -> {tensor key -> per-tensor JSON path, relative to it}) and
  one JSON array of the 256 sorted centres per tensor.

Tensor names match the mapping's keys exactly. The reference takes the first key that is a substring of the
tensor's name, which lets ``layer.9`` match ``layer.9.1``; an exact match cannot pick another tensor's centres,
so a tensor with no key of its own stops the run naming it. The reference codes K-means codes with learned
codecs only; so does LaMoFC (a VVC codec's config with ``quantizer: kmeans`` is refused).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

LEVELS = 256
"""Centres per tensor: 8-bit codes."""

MAPPING_FILE = "mapping.json"
CALIBRATION_FILE = "calibration.json"

KMEANS_SETTINGS = {
    "n_clusters": LEVELS,
    "random_state": 42,
    "init": "k-means++",
    "n_init": "auto",
    "max_iter": 300,
    "tol": 1e-4,
}


THREADS = 1
"""Threads of the K-means fit (see fit_centres), recorded in calibration.json."""


class MappingError(ValueError):
    """A K-means mapping that is missing, malformed, or has no centres for a tensor."""


def _values(x: np.ndarray, what: str) -> np.ndarray:
    """The values of a feature tensor as float32 (float16 and bfloat16 widen exactly), refusing NaN and Inf."""
    if x.dtype.kind != "f":
        raise ValueError(f"{what}: K-means quantizes float tensors; got dtype {x.dtype}")
    values = np.asarray(x, dtype=np.float32)
    if not np.isfinite(values).all():
        bad = int(np.count_nonzero(~np.isfinite(values)))
        raise ValueError(f"{what}: {bad} of {values.size} values are NaN or Inf; a feature must be finite")
    return values


def fit_centres(values: np.ndarray) -> np.ndarray:
    """The 256 sorted float32 centres scikit-learn's KMeans finds on the flattened `values` (KMEANS_SETTINGS),
    on one thread: KMeans sums in the order its OpenMP threads split the data, so its centres differ in the last
    bits between machines with other core counts (measured: 189 of 256 centres one float32 step apart between
    the demo's one-thread job and a two-thread refit), and the benchmark's codes must not depend on them."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    flat = _values(values, "fit_centres").reshape(-1, 1)
    if flat.shape[0] < LEVELS:
        raise ValueError(f"fit_centres: {flat.shape[0]} values cannot give {LEVELS} centres")
    with threadpool_limits(limits=THREADS):
        model = KMeans(**KMEANS_SETTINGS).fit(flat)
    return np.sort(model.cluster_centers_[:, 0].astype(np.float32))


def check_centres(centres: Sequence[float], what: str) -> np.ndarray:
    """`centres` as a float32 array, refused unless it holds 256 finite values sorted ascending."""
    arr = np.asarray(centres, dtype=np.float32)
    if arr.shape != (LEVELS,):
        raise MappingError(f"{what}: expected {LEVELS} centres, found shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise MappingError(f"{what}: the centres hold NaN or Inf")
    if (np.diff(arr) < 0).any():
        raise MappingError(f"{what}: the centres are not sorted ascending")
    return arr


def codes(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The 8-bit code of every value of `x`: the index of the largest centre <= the value, 0 below the first
    centre (floor), computed in float32. Returns uint8 codes of x's shape."""
    values = _values(x, "K-means codes")
    return np.clip(np.digitize(values, centres) - 1, 0, LEVELS - 1).astype(np.uint8)


def to_codec_input(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """What a learned codec codes: code / 256, float32 in [0, 255/256]."""
    return codes(x, centres).astype(np.float32) / np.float32(LEVELS)


def from_codec_output(y: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The float32 reconstruction centre[code] of a decoded frame y, code = round(y * 256) clamped to [0, 255]
    (NumPy's rint, half to even, as torch.round)."""
    q = np.rint(np.asarray(y, dtype=np.float32) * np.float32(LEVELS))
    return centres[np.clip(q, 0, LEVELS - 1).astype(np.intp)]


class KMeansCodes:
    """The quantizer of a TensorSpec with quantizer kmeans: its 256 centres; learned codecs only."""

    name = "kmeans"

    @staticmethod
    def check(spec) -> None:
        if spec.centres is None or spec.truncation is not None:
            raise ValueError("a K-means TensorSpec has centres and no truncation")
        check_centres(spec.centres, "TensorSpec")

    @staticmethod
    def calibrated(calibration: str | Path, task: str, tensors: Sequence[str]) -> dict[str, np.ndarray]:
        """The centres of `tensors` from a task's calibration folder (the calibrate rule's output)."""
        return read_mapping(calibration, task, tensors)

    @staticmethod
    def _centres(spec, input_kind: str) -> np.ndarray:
        if input_kind != "normalized":
            raise ValueError("K-means codes are coded by learned codecs only (input kind normalized)")
        return np.asarray(spec.centres, dtype=np.float32)

    @classmethod
    def to_codec_input(cls, x: np.ndarray, spec, input_kind: str, bit_depth: int) -> np.ndarray:
        return to_codec_input(x, cls._centres(spec, input_kind))

    @staticmethod
    def symbols(x: np.ndarray, spec, bit_depth: int) -> np.ndarray:
        """The integer symbols the codec's input stands for: the 8-bit codes."""
        return codes(x, np.asarray(spec.centres, dtype=np.float32))

    @classmethod
    def from_codec_output(cls, y: np.ndarray, spec, input_kind: str, bit_depth: int) -> np.ndarray:
        return from_codec_output(y, cls._centres(spec, input_kind))


# --------------------------------------------------------------------------------------------------
# Calibration and mapping folders
# --------------------------------------------------------------------------------------------------


def _tensor_file(name: str) -> str:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise MappingError(f"tensor name {name!r} cannot name a mapping file")
    return f"{name}.json"


def calibration_indices(sample_ids: Sequence[str], samples: int) -> list[int]:
    """The store indices of the first `samples` sample ids in name order (the reference's sorted files)."""
    if samples < 1:
        raise ValueError(f"calibration samples must be at least 1, got {samples}")
    if len(sample_ids) < samples:
        raise ValueError(f"calibration needs {samples} samples; the store holds {len(sample_ids)}")
    return sorted(range(len(sample_ids)), key=lambda i: sample_ids[i])[:samples]


def calibrate_store(features: str | Path, out: str | Path, handler: str, samples: int) -> dict[str, np.ndarray]:
    """Fit every tensor's centres on the first `samples` samples (name order) of the feature store `features`
    (tensors whose layouts share a `calibration` attribute, the items of one level, on their values pooled, and
    absent tensors left out) and write them as a mapping folder `out` (handler key `handler`) with
    calibration.json (the samples, the KMeans settings, the scikit-learn and NumPy versions). Returns the centres
    by tensor name."""
    import sklearn

    from lamofc_lib.store import FeatureStore

    store = FeatureStore(features)
    picked = calibration_indices(store.sample_ids, samples)
    groups: dict[str, list[str]] = {}  # tensors sharing centres: the items of one level (attribute calibration)
    for name in store.tensors:
        groups.setdefault(store.layout(name).attrs.get("calibration", name), []).append(name)
    centres = {}
    for names in groups.values():
        values = [_values(store.read(i, n), f"tensor {n}").ravel() for n in names for i in picked if store.has(i, n)]
        if not values:
            raise ValueError(
                f"calibration of {names}: none of the calibration samples {[store.sample_ids[i] for i in picked]} "
                "has these tensors; calibrate on samples that do (more samples, or others)"
            )
        flat = np.concatenate(values)
        if flat.size < LEVELS:
            raise ValueError(
                f"calibration of {names}: {flat.size} values in the calibration samples "
                f"{[store.sample_ids[i] for i in picked]}, fewer than the {LEVELS} centres; calibrate on more samples"
            )
        centres.update(dict.fromkeys(names, fit_centres(flat)))
    about = {
        "features": str(features),
        "samples": [store.sample_ids[i] for i in picked],
        "kmeans": KMEANS_SETTINGS,
        "threads": THREADS,
        "scikit_learn": sklearn.__version__,
        "numpy": np.__version__,
    }
    write_mapping(out, handler, centres, about)
    return centres


def write_mapping(out: str | Path, handler: str, centres: Mapping[str, np.ndarray], about: Mapping) -> None:
    """A mapping folder in the reference's layout: mapping.json, one JSON array per tensor, calibration.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, values in centres.items():
        # float32 -> Python float is exact, and repr round-trips, so the file gives back the same float32 values
        (out / _tensor_file(name)).write_text(json.dumps([float(v) for v in values]) + "\n")
    mapping = {handler: {name: _tensor_file(name) for name in centres}}
    (out / MAPPING_FILE).write_text(json.dumps(mapping, indent=1) + "\n")
    (out / CALIBRATION_FILE).write_text(json.dumps(dict(about), indent=1) + "\n")


def import_mapping(features: str | Path, source: str | Path, handler: str, out: str | Path, task: str) -> None:
    """Check a user's mapping folder (`source`, key `handler`) against every tensor of the feature store
    `features` and write its centres as the task's calibration folder `out` (key `task`)."""
    from lamofc_lib.store import FeatureStore

    centres = read_mapping(source, handler, FeatureStore(features).tensors)
    write_mapping(out, task, centres, {"mapping": str(source), "handler": handler})


def read_mapping(mapping: str | Path, handler: str, tensors: Sequence[str]) -> dict[str, np.ndarray]:
    """The centres of each of `tensors` from a mapping folder (or its mapping.json), under key `handler`.
    Names match exactly; a tensor without a key, a missing file or malformed centres raise MappingError naming
    it."""
    path = Path(mapping)
    if path.is_dir() or path.suffix != ".json":
        path = path / MAPPING_FILE
    try:
        table = json.loads(path.read_text())
    except FileNotFoundError:
        raise MappingError(f"K-means mapping {path} does not exist") from None
    except ValueError as err:
        raise MappingError(f"K-means mapping {path} is not JSON: {err}") from None
    if not isinstance(table, dict) or not isinstance(table.get(handler), dict):
        keys = sorted(table) if isinstance(table, dict) else []
        raise MappingError(f"K-means mapping {path} has no handler '{handler}' (its handlers: {keys})")
    entries = table[handler]
    missing = [t for t in tensors if t not in entries]
    if missing:
        raise MappingError(
            f"K-means mapping {path} (handler '{handler}') has no centres for tensor(s) {missing}; names match "
            f"exactly (its keys: {sorted(entries)})"
        )
    out = {}
    for name in tensors:
        file = path.parent / entries[name]
        try:
            values = json.loads(file.read_text())
        except (OSError, ValueError) as err:
            raise MappingError(f"centres of tensor '{name}' ({file}) cannot be read: {err}") from None
        out[name] = check_centres(values, f"centres of tensor '{name}' ({file})")
    return out
