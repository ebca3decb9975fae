"""Check every stored artifact of a results folder and name what changed: `python -m lamofc_lib.verify [results]`.

Snakemake does not notice a file altered inside a directory output (a bitstream corrupted in place leaves the next
run "Nothing to be done"), so this reads what the workflow wrote: every bitstream against the size and SHA-256
its sidecar recorded, and every sample of every tensor of every Zarr store (features, frames, reconstructions),
so that a chunk that no longer decodes or has the wrong shape is found, and the models the numbers came from: each
trained codec model against the SHA-256 its bitstreams' sidecars recorded when it coded them, and each task's
head against the SHA-256 in provenance.json. Exit status 1 when anything is wrong, with one line per problem."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from lamofc_lib.bitstreams import Sidecar, bitstream_problem
from lamofc_lib.codecs.base import CodecError
from lamofc_lib.io import file_sha256

MODEL_DIGEST = re.compile(r"model sha256 ([0-9a-f]{16})")


def bitstream_problems(results: Path) -> Iterator[str]:
    for sidecar in sorted(results.glob("**/bitstreams/*/*.json")):
        try:
            record = Sidecar.load(sidecar)
        except (CodecError, ValueError) as err:
            yield f"{sidecar}: {err}"
            continue
        for tensor in record.tensors:
            problem = bitstream_problem(sidecar.parent, tensor)
            if problem:
                yield problem


def store_problems(results: Path) -> Iterator[str]:
    from lamofc_lib.store import FeatureStore

    for path in sorted(p for p in results.glob("**/*.zarr") if p.is_dir()):
        try:
            store = FeatureStore(path)
            for name in store.tensors:
                shapes = store.layout(name).shapes
                for i in range(len(store)):
                    x = store.read(i, name)
                    if tuple(x.shape) != tuple(shapes[i]):
                        yield f"{path}: sample {i} of tensor '{name}' has shape {x.shape}, the store says {shapes[i]}"
        except Exception as err:  # a store that cannot be opened or read: its message names the chunk
            yield f"{path}: {type(err).__name__}: {err}"


def _model_of(results: Path, sidecar: Path) -> Path:
    """The model that coded a sidecar's bitstreams, from the layout <task>/<codec>[@<trained_on>]/<point>/bitstreams/
    <shard>/<id>.json and models/<codec>/<trained_on or task>/<point>/model.pt (results/README.md)."""
    task, label, point = sidecar.relative_to(results).parts[:3]
    codec, _, trained_on = label.partition("@")
    return results / "models" / codec / (trained_on or task) / point / "model.pt"


def model_problems(results: Path) -> Iterator[str]:
    """Trained models whose SHA-256 no longer begins as their bitstreams' sidecars recorded, and heads whose
    SHA-256 differs from provenance.json's."""
    recorded: dict[Path, dict[str, Path]] = {}
    for sidecar in sorted(results.glob("*/*/*/bitstreams/*/*.json")):
        try:
            match = MODEL_DIGEST.search(Sidecar.load(sidecar).codec_version)
        except (CodecError, ValueError):
            continue  # bitstream_problems names the sidecar
        if match:
            recorded.setdefault(_model_of(results, sidecar), {}).setdefault(match.group(1), sidecar.parent.parent)
    for model, digests in sorted(recorded.items()):
        now = file_sha256(model)[:16] if model.is_file() else None
        for digest, bitstreams in sorted(digests.items()):
            if now is None:
                yield f"model {model} is missing; the bitstreams in {bitstreams} were coded with it"
            elif now != digest:
                yield (
                    f"model {model} changed after coding: its SHA-256 begins {now}, the bitstreams in {bitstreams} "
                    f"were coded by one beginning {digest}"
                )
    provenance = results / "provenance.json"
    if provenance.is_file():
        for task, record in sorted(json.loads(provenance.read_text()).get("models", {}).items()):
            head = results / task / "head.pt"
            if not head.is_file():
                yield f"head {head} is missing; provenance.json records its SHA-256"
            elif file_sha256(head) != record.get("head_sha256"):
                yield f"head {head} does not match the SHA-256 in {provenance}: it changed after the tables were made"


def verify(results: Path) -> list[str]:
    if not results.is_dir():
        return [f"{results}: no such results folder"]
    return [*bitstream_problems(results), *store_problems(results), *model_problems(results)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lamofc_lib.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default="results", type=Path, help="the results folder (results)")
    args = parser.parse_args(argv)
    problems = verify(args.results)
    for line in problems:
        print(line)
    bitstreams = len(list(args.results.glob("**/bitstreams/*/*.json")))
    stores = len([p for p in args.results.glob("**/*.zarr") if p.is_dir()])
    print(f"{len(problems)} problems in {bitstreams} sidecars' bitstreams and {stores} stores", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
