"""Source samples: the candidates a configured source offers (build_candidates) and their manifests
(lamofc_lib.sources.manifest). A source kind is read by one module here: images (skimage, imagenet, voc2012,
nyu_depth_v2), arc (arc, arc_demo), captions (coco_captions, captions_demo), each listing its kinds in READERS.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from lamofc_lib.sources import arc, captions, images
from lamofc_lib.sources.manifest import COLUMNS, SourceError, read_manifest

# Source kinds (tasks.<task>.source.kind; each task lists those it takes in Task.source_kinds) and the keys of
# a source naming files or folders, which lamofc_lib.config checks exist before anything runs.
PATH_KEYS = {
    "imagenet": ("root",),
    "arc": ("path",),
    "skimage": (),
    "arc_demo": (),
    "voc2012": ("root",),
    "nyu_depth_v2": ("root", "labels"),
    "coco_captions": ("path",),
    "captions_demo": (),
}
# Source kind -> the function that lists its candidates.
READERS = {**images.READERS, **arc.READERS, **captions.READERS}


def build_candidates(source: Mapping) -> pd.DataFrame:
    """Every sample the configured source offers, in the source's order (the pool that selection picks from)."""
    kind = source["kind"]
    if kind not in READERS:
        raise SourceError(f"source kind '{kind}' is unknown; expected one of {', '.join(READERS)}")
    table = READERS[kind](source)
    where = next((f" ({source[k]})" for k in ("labels", "path", "root") if source.get(k)), "")
    if not len(table):
        raise SourceError(f"source {kind}{where} gives no samples")
    duplicated = table["sample_id"][table["sample_id"].duplicated()].tolist()
    if duplicated:
        raise SourceError(f"source {kind}{where} gives duplicate sample ids {duplicated[:5]}")
    return table.reset_index(drop=True)[COLUMNS]


__all__ = ["PATH_KEYS", "SourceError", "build_candidates", "read_manifest"]
