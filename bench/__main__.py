"""The benchmarks: the stack and each of the project's tasks against the plain
alternative, on the same data, in the same run.

    make bench            # full sizes
    make bench QUICK=1    # smaller sizes, under 10 minutes once the local stack is up

Both run ``bash bench/run.sh [--quick] [--only NAME,...] [--set SIZE=VALUE ...]``
(--set overrides one of the sizes below, e.g. ``--set grid_multiples=1,2
--set repetitions=2``). The task benchmarks start Ray, Redis and Celery workers of their
own in a network and PID namespace of their own (bench/task_bench.py: they see only loopback
and end with the run). The stack benchmarks use the local stack's container (`make up`,
Molecule scenario `local`): operations recreates it to time a cold converge
and leaves it up for stack_overhead. Prints one table
per benchmark and writes bench/results/latest.json, latest.md (the run as a Markdown
table) and latest.png.
"""

import argparse
import ast
import dataclasses
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench import operations, stack_overhead
from bench.report import RESULTS_DIR, Benchmark, chart, table, timed, write_json, write_markdown
from bench.sizes import FULL, QUICK, Sizes
from bench.task_bench import BENCHMARKS as TASK_BENCHMARKS

STACK_BENCHMARKS = {
    "operations": lambda sizes: operations.run(sizes.operation_repetitions),
    "stack_overhead": lambda sizes: stack_overhead.run(sizes.ping_calls,
                                                       sizes.fire_and_forget_tasks,
                                                       sizes.repetitions,
                                                       sizes.overhead_events_off),
}
ALL = [*TASK_BENCHMARKS, *STACK_BENCHMARKS]

# bash stays PID 1 of the namespace (no exec): it reaps the daemons `ray start` leaves
# orphaned, which `ray stop` would otherwise wait for as zombies.
OWN_NAMESPACE = ["unshare", "--net", "--pid", "--fork", "--mount-proc",
                 "bash", "-c", 'ip link set lo up && "$@"; exit $?', "bench-tasks"]


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


def run_task_benchmarks(names: list[str], sizes: Sizes) -> list[Benchmark]:
    """bench.task_bench in a network and PID namespace of its own; its tables print as they end."""
    with tempfile.TemporaryDirectory(prefix="bench-request-") as exchange:
        request, result = Path(exchange, "request"), Path(exchange, "result")
        request.write_bytes(pickle.dumps((names, sizes)))
        completed = subprocess.run(
            [*OWN_NAMESPACE, sys.executable, "-m", "bench.task_bench", str(request), str(result)],
            check=False)
        if completed.returncode != 0:
            raise SystemExit(f"the task benchmarks failed (exit {completed.returncode})")
        return pickle.loads(result.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (< 10 minutes)")
    parser.add_argument("--only", help="comma-separated benchmarks to run: " + ", ".join(ALL))
    parser.add_argument("--set", action="append", default=[], metavar="SIZE=VALUE",
                        help="override one size, e.g. grid_rows=5000 or grid_multiples=1,2")
    args = parser.parse_args()
    selected = args.only.split(",") if args.only else ALL
    unknown = set(selected) - set(ALL)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; known: {ALL}")
    sizes = override(QUICK if args.quick else FULL, args.set)
    kind = "quick" if args.quick else "full"
    started = time.monotonic()
    print(f"machine: {machine()}; sizes: {kind} {sizes}", flush=True)
    task_names = [name for name in selected if name in TASK_BENCHMARKS]
    benchmarks = run_task_benchmarks(task_names, sizes) if task_names else []
    for name in selected:
        if name in STACK_BENCHMARKS:
            benchmarks.append(timed(STACK_BENCHMARKS[name], sizes))
            print(table(benchmarks[-1]), flush=True)
    RESULTS_DIR.mkdir(exist_ok=True)
    title = f"celery-ray-stack benchmarks ({kind}); {machine()}"
    write_json(benchmarks, RESULTS_DIR / "latest.json")
    write_markdown(benchmarks, RESULTS_DIR / "latest.md",
                   f"{title}; {time.monotonic() - started:.0f} s; `{' '.join(sys.argv[1:])}`")
    chart(benchmarks, RESULTS_DIR / "latest.png", title)
    print(f"done in {time.monotonic() - started:.0f} s; machine after: {machine()}; "
          f"wrote {RESULTS_DIR / 'latest.json'}, latest.md and latest.png")


if __name__ == "__main__":
    main()
