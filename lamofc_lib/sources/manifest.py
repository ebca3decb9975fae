"""The manifest table: its columns, reading one, and the error a source raises.

A manifest is the table of selected samples that the rest of the DAG depends on: `sample_id`, `source`
(where to read the sample), `label` (the reference answer, empty when the data set has none) and `text`
(the prompt of text tasks). Changing the selection changes the manifest and so reruns what depends on it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

COLUMNS = ["sample_id", "source", "label", "text"]


class SourceError(ValueError):
    """The source data cannot give the configured samples; the message names the file or folder."""


def read_manifest(path: str | Path) -> pd.DataFrame:
    """A manifest (or candidates) table; refuses one without the manifest's columns or with a sample id twice,
    naming the file."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise SourceError(f"manifest {path} lacks the columns {missing}; it has {list(table.columns)}")
    duplicated = table["sample_id"][table["sample_id"].duplicated()].tolist()
    if duplicated:
        raise SourceError(f"manifest {path} lists sample ids more than once: {duplicated[:5]}")
    return table
