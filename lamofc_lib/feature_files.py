"""Features from files: import a folder of pre-extracted features into the feature store, instead of running
the model: one `.npy` per sample named as the reference implementation names them (e.g. the paper's released
feature dataset); for a task with named tensors a folder per sample, `<stem>/<tensor name>.npy`; or one
LaMoFCBench `.zst` file per sample (see :mod:`lamofc_lib.lamofcbench_files`).

Each file is checked against the task's layout (`Task.layout`: the names, dtypes and shapes the task's extraction
would give for these samples, from the model's configuration and the source images, without loading weights) and
stored in its own dtype (float16 or float32, or bfloat16 where the task gives that; other floating types are
converted to float32 and the conversion recorded).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from lamofc_lib.dtypes import BFLOAT16, storage_dtype
from lamofc_lib.io import FeatureFileError
from lamofc_lib.store import FEATURE, TensorLayout, absent, write_store

STORED_DTYPES = ("float16", "float32")
ZST = ".zst"


def _fits(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    return len(shape) == len(expected) and all(e is None or e == s for s, e in zip(shape, expected, strict=True))


def import_features(task, folder: str | Path, manifest: pd.DataFrame, model: Mapping, split, out: str | Path) -> None:
    """Write the features in `folder` of every manifest sample to a new store at `out`: one `<stem>.npy` per
    sample for a one-tensor task, a folder `<stem>/` holding `<tensor name>.npy` per tensor for a task with named
    tensors (its `TensorsLayout`), or LaMoFCBench's `<sample id>.zst` files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FeatureFileError(f"feature folder {folder} does not exist (tasks.{task.name}.features_from)")
    layout = task.layout(manifest, model, split).named(task.packing)
    if any(folder.glob(f"*{ZST}")):
        _import_zst(task, folder, manifest, layout, out)
        return
    stems = [task.reference_stem(sid) for sid in manifest["sample_id"]]
    one = list(layout.tensors) == [FEATURE]
    tensors, found = {}, {}
    for name, expected in layout.tensors.items():
        paths = [folder / f"{stem}.npy" if one else folder / stem / f"{name}.npy" for stem in stems]
        shapes, found[name] = _check_npy(task, folder, paths, expected.shapes)
        dtype = expected.dtype if expected.dtype == BFLOAT16 else found[name]
        dtype = dtype if dtype in (*STORED_DTYPES, BFLOAT16) else "float32"
        tensors[name] = (paths, TensorLayout(shapes, dtype, dict(expected.attrs)))

    def samples():
        for i in range(len(stems)):
            sample = {}
            for name, (paths, tensor) in tensors.items():
                if absent(tensor.shapes[i]):
                    continue
                x = np.load(paths[i], allow_pickle=False)
                if not np.isfinite(x).all():
                    raise FeatureFileError(f"feature file {paths[i]} holds NaN or Inf values")
                sample[name] = x.astype(storage_dtype(tensor.dtype), copy=False)
            yield sample

    file_dtype = found[FEATURE] if one else found
    attrs = {**layout.attrs, "imported_from": str(folder), "file_dtype": file_dtype}
    write_store(out, list(manifest["sample_id"]), {n: t for n, (_, t) in tensors.items()}, samples(), attrs=attrs)


def _check_npy(task, folder: Path, paths: list[Path], expected: list) -> tuple[list[tuple[int, ...]], str]:
    """The shapes and the one dtype of a tensor's .npy files, checked (readable, floating point, the shapes the
    task's layout gives) without reading their values; a sample whose layout has the tensor absent has no file."""
    shapes, dtypes = [], set()
    for path, want in zip(paths, expected, strict=True):
        if absent(want) and not path.is_file():  # a slot the sample does not fill (store.absent): no file
            shapes.append(tuple(0 if e is None else e for e in want))
            continue
        if not path.is_file():
            raise FeatureFileError(f"feature file {path} does not exist (sample of the manifest)")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise FeatureFileError(f"feature file {path} is not a readable .npy array: {err}") from None
        if not np.issubdtype(array.dtype, np.floating):
            raise FeatureFileError(f"feature file {path} holds {array.dtype} values, expected floating point")
        if not _fits(array.shape, want):
            text = " x ".join("N" if e is None else str(e) for e in want)
            raise FeatureFileError(
                f"feature file {path} has shape {' x '.join(map(str, array.shape))}, task {task.name} expects {text}"
            )
        shapes.append(tuple(array.shape))
        dtypes.add(str(array.dtype))
    if len(dtypes) > 1:
        raise FeatureFileError(f"feature files in {folder} mix dtypes {sorted(dtypes)}; expected one")
    return shapes, dtypes.pop() if dtypes else "float32"


def _import_zst(task, folder: Path, manifest: pd.DataFrame, layout, out: str | Path) -> None:
    """LaMoFCBench's `.zst` files (`<stem>.zst`, the task's reference stem of each sample id), each tensor
    under its key path's name: they must hold exactly the tensors of the task's layout, each in its dtype and of
    its shapes (a one-tensor task: one tensor named `feature`), but those the layout has absent for a sample (an
    ADE20K image's unused crop slots)."""
    import shutil

    from lamofc_lib.lamofcbench_files import import_zst_features
    from lamofc_lib.store import FeatureStore

    import_zst_features(
        folder,
        list(manifest["sample_id"]),
        out,
        attrs=layout.attrs,
        rename=task.import_tensors,
        expected=layout.tensors,
        stems=[task.reference_stem(sid) for sid in manifest["sample_id"]],
    )
    store = FeatureStore(out)
    problem = None
    if sorted(store.tensors) != sorted(layout.tensors):
        takes = f"one tensor named '{FEATURE}'" if list(layout.tensors) == [FEATURE] else sorted(layout.tensors)
        problem = f"hold tensors {store.tensors}; task {task.name} takes {takes}"
    else:
        for name, expected in layout.tensors.items():
            given = store.layout(name)
            if given.dtype != expected.dtype and len(layout.tensors) > 1:
                problem = f"hold tensor '{name}' as {given.dtype}; task {task.name} gives it as {expected.dtype}"
                break
            bad = [
                (i, s) for i, (s, e) in enumerate(zip(given.shapes, expected.shapes, strict=True)) if not _fits(s, e)
            ]
            if bad:
                i, shape = bad[0]
                what = "" if name == FEATURE else f"'{name}' "
                problem = (
                    f"give sample {store.sample_ids[i]} {what}the shape {shape}, task {task.name} expects "
                    f"{expected.shapes[i]}"
                )
                break
    if problem:
        shutil.rmtree(out)
        raise FeatureFileError(f"the feature files in {folder} {problem}")


def feature_paths(folder: str | Path) -> list[Path]:
    """The .npy files (LaMoFC's, or those of a task's named tensors in a folder per sample) or .zst files
    (LaMoFCBench's) of a features_from folder, sorted (the import job's inputs)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.suffix in (".npy", ZST)]  # one per sample
    files += [p for sub in folder.iterdir() if sub.is_dir() for p in sub.glob("*.npy")]  # one folder per sample
    return sorted(files)


def file_signatures(folder: str | Path | None) -> list[str]:
    """Name, size and modification time of each feature file of a features_from folder (none without a folder):
    as a job param, a changed file reselects and reimports, and the between-workflow cache never serves a
    selection of other files."""
    if not folder:
        return []
    return [
        f"{p.relative_to(folder).as_posix()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in feature_paths(folder)
    ]
