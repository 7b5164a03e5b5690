"""Task-level benchmarks: each of the project's tasks against the plain alternative, on
the same data, in the same run.

    make bench            # full sizes (about an hour on 2 cores)
    make bench QUICK=1    # smaller sizes, under 10 minutes

Both run ``bash bench/run.sh [--quick] [--only NAME,...] [--set SIZE=VALUE ...]``
(--set overrides one of the sizes below, e.g. ``--set grid_multiples=1,2
--set repetitions=2``), which starts this module in
a network and PID namespace of its own (Ray, Redis and the Celery workers see only
loopback and end with the run). Prints one table per benchmark and writes
bench/results/latest.json and bench/results/latest.png.
"""

import argparse
import ast
import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench import large_csv, ml
from bench.report import RESULTS_DIR, chart, table, write_json
from bench.stack import Stack


@dataclass(frozen=True)
class Sizes:
    repetitions: int
    grid_rows: int
    grid_multiples: tuple[int, ...]
    training_rows: int
    csv_rows: tuple[int, ...]
    batch_rows: int


FULL = Sizes(repetitions=3, grid_rows=5_000, grid_multiples=(1, 2, 4),
             training_rows=100_000, csv_rows=(1_000_000, 5_000_000, 10_000_000),
             batch_rows=1_000_000)
QUICK = Sizes(repetitions=3, grid_rows=500, grid_multiples=(1, 2),
              training_rows=20_000, csv_rows=(200_000, 1_000_000, 2_000_000),
              batch_rows=200_000)

BENCHMARKS = {
    "hyperparameter_search": lambda stack, root, sizes: ml.hyperparameter_search(
        stack, root, sizes.grid_rows, sizes.grid_multiples, sizes.repetitions),
    "distributed_training": lambda stack, root, sizes: ml.distributed_training(
        stack, root, sizes.training_rows, sizes.repetitions),
    "process_large_csv": lambda stack, root, sizes: large_csv.run(
        stack, root, sizes.csv_rows, sizes.repetitions),
    "batch_predictions": lambda stack, root, sizes: ml.batch_predictions(
        stack, root, sizes.batch_rows, sizes.repetitions),
}


def machine() -> str:
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 1024**3:.0f} GB RAM, "
            f"load average {load}")


def override(sizes: Sizes, assignments: list[str]) -> Sizes:
    """Sizes with each ``NAME=VALUE`` of --set applied (VALUE a Python literal)."""
    changes = {}
    for assignment in assignments:
        name, _, value = assignment.partition("=")
        current = getattr(sizes, name, None)
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = None
        if isinstance(current, tuple) and isinstance(parsed, int):
            parsed = (parsed,)
        if current is None or type(parsed) is not type(current):
            raise SystemExit(f"--set {assignment}: expected NAME=VALUE with NAME one of "
                             f"{[field.name for field in dataclasses.fields(Sizes)]} and "
                             f"VALUE like {current!r}")
        changes[name] = parsed
    return dataclasses.replace(sizes, **changes)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (< 10 minutes)")
    parser.add_argument("--only", help="comma-separated benchmarks to run: "
                        + ", ".join(BENCHMARKS))
    parser.add_argument("--set", action="append", default=[], metavar="SIZE=VALUE",
                        help="override one size, e.g. grid_rows=5000 or grid_multiples=1,2")
    args = parser.parse_args()
    selected = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = set(selected) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; known: {list(BENCHMARKS)}")
    sizes = override(QUICK if args.quick else FULL, args.set)
    started = time.monotonic()
    print(f"machine: {machine()}; sizes: {'quick' if args.quick else 'full'} {sizes}",
          flush=True)
    data_root = Path(tempfile.mkdtemp(prefix="bench-data-"))
    benchmarks = []
    try:
        with Stack(data_root) as stack:
            for name in selected:
                benchmarks.append(BENCHMARKS[name](stack, data_root, sizes))
                print(table(benchmarks[-1]), flush=True)
    finally:
        shutil.rmtree(data_root, ignore_errors=True)
    RESULTS_DIR.mkdir(exist_ok=True)
    write_json(benchmarks, RESULTS_DIR / "latest.json")
    chart(benchmarks, RESULTS_DIR / "latest.png",
          f"celery-ray-stack task benchmarks ({'quick' if args.quick else 'full'}); "
          f"{machine()}")
    print(f"done in {time.monotonic() - started:.0f} s; machine after: {machine()}; "
          f"wrote {RESULTS_DIR / 'latest.json'} and latest.png")


if __name__ == "__main__":
    main()
