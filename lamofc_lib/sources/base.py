"""What a source kind implements: the reader of a data set's candidate samples, and what its config block holds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import pandas as pd


class Source:
    """A source kind (`tasks.<task>.source.kind`, `tasks.<task>.train.source.kind`): lists the candidate samples
    of a data set as a manifest table (lamofc_lib.sources.manifest.COLUMNS), in the data set's order.

    A task names the kinds it takes in `Task.sources` (the classes themselves), so a scenario's own reader lives
    in its module and is found through the task registry; kinds several tasks share live in lamofc_lib/sources/.
    The class attributes are read by config validation without reading any data."""

    # The kind's name in source.kind (unique across every registered task's sources).
    kind: ClassVar[str] = ""
    # One line for the schema's description of source.kind.
    description: ClassVar[str] = ""
    # JSON-schema properties of the keys its block holds besides `kind` (merged into the schema's $defs.source:
    # a key several kinds share must have the same type there).
    properties: ClassVar[Mapping[str, dict]] = {}
    # Keys that must be set; of them, those naming files or folders that must exist (checked before anything runs).
    required: ClassVar[tuple[str, ...]] = ()
    path_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def read(cls, source: Mapping) -> pd.DataFrame:
        """Every candidate the configured source offers (the manifest's columns), in the source's order."""
        raise NotImplementedError(f"source kind {cls.kind} has no reader")
