"""process_large_csv against pandas and polars doing the same filter: time and peak memory.

Peak memory is the largest sampled sum of PSS over every process involved: for the
project, the processes the task goes through (Stack.processes_of("data"): the data-queue
Celery worker's main and pool processes, Redis, and every process of the Ray head, its
daemons and its workers, in use or idle); not the ml-queue worker, which the stack also
runs but this task never reaches, nor the benchmark driver. For pandas and polars, their
process.
"above idle" subtracts the sum just before the work (a warm stack, a process with its
engine loaded); "total" does not.
"""

import subprocess
import sys
from pathlib import Path

from bench.data import count_lines, transactions_csv
from bench.measure import PeakMemory, Samples, process_tree
from bench.report import Benchmark, Measure, Series
from bench.stack import Stack

TASK = "tasks.data_tasks.process_large_csv"
MINIMUM = 100
NUM_CHUNKS = 10  # the spec's example for process_large_csv
ENGINES = ("pandas", "polars")
TIME_BOUND = {"pandas": 1 / 6, "polars": 1.2}
TIME_TARGET = {"pandas": "<= 0.167x (>= 6x faster than pandas)", "polars": "<= 1.2x polars"}
MEMORY_BOUND = 0.5


def plain(engine: str, source: Path, output: Path) -> tuple[float, PeakMemory]:
    """(seconds of the work, its memory) for pandas or polars in a fresh process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.plain_csv", engine, str(source), str(output),
         str(MINIMUM)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    if process.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the {engine} process did not start")
    with PeakMemory(lambda: process_tree(process.pid)) as memory:
        process.stdin.write("go\n")
        process.stdin.flush()
        seconds = process.stdout.readline()
        process.wait()
    if process.returncode != 0 or not seconds:
        raise RuntimeError(f"the {engine} process failed ({process.returncode})")
    return float(seconds), memory


def project(stack: Stack, source: Path, output: Path) -> tuple[float, PeakMemory, int]:
    with PeakMemory(stack.processes_of("data")) as memory:
        seconds, result = stack.run(
            TASK, file_path=str(source), output_path=str(output),
            transformations={"filter": {"amount": MINIMUM}, "num_chunks": NUM_CHUNKS},
        )
    return seconds, memory, result["rows_written"]


def run(stack: Stack, data_root: Path, rows_list: tuple[int, ...],
        repetitions: int) -> Benchmark:
    benchmark = Benchmark(
        "process_large_csv",
        f"filter amount >= {MINIMUM}, num_chunks {NUM_CHUNKS}; alternatives: pandas "
        "read_csv + filter + to_csv, polars scan_csv + filter + sink_csv",
    )
    warm_up = transactions_csv(data_root / "warm-up.csv", 10_000)
    project(stack, warm_up, data_root / "warm-up.out.csv")
    times: dict[str, list[float]] = {"process_large_csv": [], **{e: [] for e in ENGINES}}
    memories: dict[str, list[float]] = {key: [] for key in times}
    for rows in rows_list:
        source = transactions_csv(data_root / f"transactions-{rows}.csv", rows)
        size_mb = source.stat().st_size / 1024**2
        seconds = {key: Samples() for key in times}
        above_idle = {key: Samples() for key in times}
        total = {key: Samples() for key in times}
        outputs = {key: data_root / f"out-{key}-{rows}.csv" for key in times}
        for _ in range(repetitions):
            took, memory, kept = project(stack, source, outputs["process_large_csv"])
            seconds["process_large_csv"].add(took)
            above_idle["process_large_csv"].add(memory.above_idle)
            total["process_large_csv"].add(memory.peak)
            for engine in ENGINES:
                took, memory = plain(engine, source, outputs[engine])
                seconds[engine].add(took)
                above_idle[engine].add(memory.above_idle)
                total[engine].add(memory.peak)
        written = {key: count_lines(output) - 1 for key, output in outputs.items()}
        if len(set(written.values())) != 1 or kept != written["process_large_csv"]:
            raise RuntimeError(f"the outputs disagree on the rows kept: {written}")
        label = f"{rows / 1e6:g}M rows ({size_mb:.0f} MB)"
        for engine in ENGINES:
            benchmark.measures.append(Measure(
                "process_large_csv", f"{label}: time vs {engine}", "s",
                seconds["process_large_csv"], seconds[engine], TIME_TARGET[engine],
                TIME_BOUND[engine]))
        for kind, samples in (("above idle", above_idle), ("total", total)):
            benchmark.measures.append(Measure(
                "process_large_csv", f"{label}: peak memory {kind} vs pandas", "MB",
                samples["process_large_csv"], samples["pandas"],
                f"<= {MEMORY_BOUND}x pandas", MEMORY_BOUND))
        benchmark.notes.append(
            f"{label}: peak memory above idle, polars {above_idle['polars'].describe(0)} MB; "
            f"total {total['polars'].describe(0)} MB; {kept:,} rows kept")
        for key, medians in times.items():
            medians.append(seconds[key].median)
            memories[key].append(above_idle[key].median)
        for path in (source, *outputs.values()):
            path.unlink()
    millions = [rows / 1e6 for rows in rows_list]
    benchmark.series += [
        Series("process_large_csv: time (median)", "rows (millions)", "seconds", millions,
               times),
        Series("process_large_csv: peak memory above idle (median)", "rows (millions)", "MB",
               millions, memories),
    ]
    return benchmark
