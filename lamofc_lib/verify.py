"""Check every stored artifact of a results folder and name what changed: `python -m lamofc_lib.verify [results]`.

Snakemake does not notice a file altered inside a directory output (a bitstream corrupted in place leaves the next
run "Nothing to be done"), so this reads what the workflow wrote: every bitstream against the size and SHA-256
its sidecar recorded, and every sample of every tensor of every Zarr store (features, frames, reconstructions),
so that a chunk that no longer decodes or has the wrong shape is found. Exit status 1 when anything is wrong,
with one line per problem."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from lamofc_lib.bitstreams import Sidecar, bitstream_problem
from lamofc_lib.codecs.base import CodecError


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


def verify(results: Path) -> list[str]:
    if not results.is_dir():
        return [f"{results}: no such results folder"]
    return [*bitstream_problems(results), *store_problems(results)]


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
