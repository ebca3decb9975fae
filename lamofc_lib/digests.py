"""The digests of a run's numbers, to compare two runs (two hosts, two code paths, before and after a change):
`python -m lamofc_lib.digests [results] --write FILE` records them, `--check FILE` names every file that differs.

What is digested is what a run computes, not when or how fast: each Zarr store's values (features, frames,
reconstructions: every sample of every named tensor, with its dtype and shape, so that a store's metadata layout
does not count), every bitstream, every trained model and K-means calibration, and the tables but the complexity
table (its columns are seconds). config/demo.digests.json holds the demo's (README command 1), made with
`run.reproducible` on: a change that moves a number shows there as a differing file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from lamofc_lib.io import file_sha256, write_json

TIMED_TABLES = {"complexity.csv"}  # seconds, which no two runs share
FILES = ("**/bitstreams/*/*.bin", "models/**/*.pt", "**/calibration/*/*.json", "tables/*.csv")


def store_digest(path: Path) -> str:
    """SHA-256 over every sample of every tensor of a Zarr store: name, dtype, shape and C-order bytes."""
    from lamofc_lib.store import FeatureStore

    store = FeatureStore(path)
    h = hashlib.sha256()
    for name in sorted(store.tensors):
        for i in range(len(store)):
            x = store.read(i, name)
            h.update(f"{name} {i} {x.dtype.str} {tuple(x.shape)}\n".encode())
            h.update(x.tobytes(order="C"))
    return h.hexdigest()


def digests(results: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of everything a run computed under `results` (see the module docstring)."""
    found = {}
    for pattern in FILES:
        for path in results.glob(pattern):
            if path.is_file() and path.name not in TIMED_TABLES:
                found[path.relative_to(results).as_posix()] = file_sha256(path)
    for path in results.glob("**/*.zarr"):
        if path.is_dir():
            found[path.relative_to(results).as_posix()] = store_digest(path)
    return dict(sorted(found.items()))


def differences(recorded: dict[str, str], now: dict[str, str]) -> list[str]:
    """One line per file that differs, is missing or is new."""
    lines = []
    for name in sorted(recorded.keys() | now.keys()):
        if name not in now:
            lines.append(f"{name}: recorded, not in this run")
        elif name not in recorded:
            lines.append(f"{name}: in this run, not recorded")
        elif recorded[name] != now[name]:
            lines.append(f"{name}: differs")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lamofc_lib.digests", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default="results", type=Path, help="the results folder (results)")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", type=Path, metavar="FILE", help="record the run's digests in FILE (JSON)")
    action.add_argument("--check", type=Path, metavar="FILE", help="compare the run with the digests in FILE")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        parser.error(f"{args.results}: no such results folder")
    now = digests(args.results)
    if args.write:
        write_json(args.write, now)
        print(f"{len(now)} digests written to {args.write}", file=sys.stderr)
        return 0
    try:
        recorded = json.loads(args.check.read_text())
    except (OSError, ValueError) as err:
        parser.error(f"{args.check}: cannot read its digests ({err})")
    lines = differences(recorded, now)
    for line in lines:
        print(line)
    same = sum(1 for name, digest in now.items() if recorded.get(name) == digest)
    print(f"{same} of {len(recorded)} recorded files identical, {len(lines)} differences", file=sys.stderr)
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
