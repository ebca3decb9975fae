"""Source samples: the candidates a configured source offers (build_candidates) and their manifests
(lamofc_lib.sources.manifest). A source kind is a `Source` class (lamofc_lib.sources.base); the tasks name the
kinds they take (`Task.sources`), so the registered kinds are those of the registered tasks (`source_kinds`).
The kinds several tasks share live here: images (skimage, imagenet, voc2012, nyu_depth_v2), arc (arc, arc_demo),
captions (coco_captions, captions_demo); a scenario's own kind lives in its module."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from lamofc_lib.sources.base import Source
from lamofc_lib.sources.manifest import COLUMNS, SourceError, read_manifest


def source_kinds(tasks: Mapping | None = None) -> dict[str, type[Source]]:
    """Kind -> its Source class, over the `sources` of `tasks` (default: every registered task); two classes of
    one kind stop it."""
    from lamofc_lib.registry import RegistryError

    if tasks is None:
        from lamofc_lib.tasks import REGISTRY as tasks

    found: dict[str, type[Source]] = {}
    for task in tasks.values():
        for cls in task.sources:
            other = found.setdefault(cls.kind, cls)
            if other is not cls:
                raise RegistryError(
                    f"source kind '{cls.kind}' is defined twice: {other.__module__}.{other.__name__} and "
                    f"{cls.__module__}.{cls.__name__} (task {task.name})"
                )
    return found


def build_candidates(source: Mapping) -> pd.DataFrame:
    """Every sample the configured source offers, in the source's order (the pool that selection picks from)."""
    kind, kinds = source["kind"], source_kinds()
    if kind not in kinds:
        raise SourceError(f"source kind '{kind}' is unknown; expected one of {', '.join(kinds)}")
    table = kinds[kind].read(source)
    where = next((f" ({source[k]})" for k in ("labels", "path", "root") if source.get(k)), "")
    if not len(table):
        raise SourceError(f"source {kind}{where} gives no samples")
    duplicated = table["sample_id"][table["sample_id"].duplicated()].tolist()
    if duplicated:
        raise SourceError(f"source {kind}{where} gives duplicate sample ids {duplicated[:5]}")
    return table.reset_index(drop=True)[COLUMNS]


__all__ = ["Source", "SourceError", "build_candidates", "read_manifest", "source_kinds"]
