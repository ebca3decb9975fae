"""Features from files: import a folder of pre-extracted features (one `.npy` per sample, named as the
reference implementation names them, e.g. the paper's released feature dataset; or one LaMoFCBench `.zst` file
per sample, see :mod:`lamofc_lib.lamofcbench_files`) into the feature store, instead of running the model.

Each file is checked against the task's layout (`Task.layout`: the shapes the task's extraction would give for
these samples, from the model's configuration and the source images, without loading weights) and stored in
its own dtype (float16 or float32; other floating types are converted to float32 and the conversion recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.io import FeatureFileError
from lamofc_lib.store import write_store

STORED_DTYPES = ("float16", "float32")
ZST = ".zst"


def _fits(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    return len(shape) == len(expected) and all(e is None or e == s for s, e in zip(shape, expected, strict=True))


def import_features(task, folder: str | Path, manifest: pd.DataFrame, model: Mapping, split, out: str | Path) -> None:
    """Write the features in `folder` of every manifest sample to a new store at `out`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FeatureFileError(f"feature folder {folder} does not exist (tasks.{task.name}.features_from)")
    layout = task.layout(manifest, model, split)
    if any(folder.glob(f"*{ZST}")):
        _import_zst(task, folder, manifest, layout, out)
        return
    paths = [folder / f"{task.reference_stem(sid)}.npy" for sid in manifest["sample_id"]]
    shapes, dtypes = [], set()
    for path, expected in zip(paths, layout.shapes, strict=True):
        if not path.is_file():
            raise FeatureFileError(f"feature file {path} does not exist (sample of the manifest)")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise FeatureFileError(f"feature file {path} is not a readable .npy array: {err}") from None
        if not np.issubdtype(array.dtype, np.floating):
            raise FeatureFileError(f"feature file {path} holds {array.dtype} values, expected floating point")
        if not _fits(array.shape, expected):
            want = " x ".join("N" if e is None else str(e) for e in expected)
            raise FeatureFileError(
                f"feature file {path} has shape {' x '.join(map(str, array.shape))}, task {task.name} expects {want}"
            )
        shapes.append(tuple(array.shape))
        dtypes.add(str(array.dtype))
    if len(dtypes) > 1:
        raise FeatureFileError(f"feature files in {folder} mix dtypes {sorted(dtypes)}; expected one")
    (found,) = dtypes
    dtype = found if found in STORED_DTYPES else "float32"

    def samples():
        for path in paths:
            x = np.load(path, allow_pickle=False)
            if not np.isfinite(x).all():
                raise FeatureFileError(f"feature file {path} holds NaN or Inf values")
            yield x.astype(dtype, copy=False)

    attrs = {**layout.attrs, "imported_from": str(folder), "file_dtype": found}
    from lamofc_lib.tasks.base import Extraction  # only the import job needs it

    extraction = Extraction(shapes, samples(), attrs, dtype).named(task.packing)
    write_store(out, list(manifest["sample_id"]), extraction.tensors, extraction.samples, attrs=extraction.attrs)


def _import_zst(task, folder: Path, manifest: pd.DataFrame, layout, out: str | Path) -> None:
    """LaMoFCBench's `.zst` files (`<sample id>.zst`), each tensor under its key path's name; a one-tensor task
    takes files holding one tensor named `feature` of the shapes its layout gives."""
    import shutil

    from lamofc_lib.lamofcbench_files import import_zst_features
    from lamofc_lib.store import FEATURE, FeatureStore

    import_zst_features(folder, list(manifest["sample_id"]), out, attrs=layout.attrs)
    store = FeatureStore(out)
    problem = None
    if store.tensors != [FEATURE]:
        problem = f"hold tensors {store.tensors}; task {task.name} takes one tensor named '{FEATURE}'"
    else:
        bad = [(i, s) for i, (s, e) in enumerate(zip(store.shapes, layout.shapes, strict=True)) if not _fits(s, e)]
        if bad:
            i, shape = bad[0]
            problem = (
                f"give sample {store.sample_ids[i]} the shape {shape}, task {task.name} expects {layout.shapes[i]}"
            )
    if problem:
        shutil.rmtree(out)
        raise FeatureFileError(f"the feature files in {folder} {problem}")


def feature_paths(folder: str | Path) -> list[Path]:
    """The .npy (LaMoFC) or .zst (LaMoFCBench) files of a features_from folder, sorted (the import job's
    inputs)."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix in (".npy", ZST)) if Path(folder).is_dir() else []


def file_signatures(folder: str | Path | None) -> list[str]:
    """Name, size and modification time of each feature file of a features_from folder (none without a folder):
    as a job param, a changed file reselects and reimports, and the between-workflow cache never serves a
    selection of other files."""
    if not folder:
        return []
    return [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in feature_paths(folder)]
