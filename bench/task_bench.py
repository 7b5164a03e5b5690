"""The task benchmarks' side that starts Ray: run by ``python -m bench`` inside a network
and PID namespace of its own (see bench/__main__.py), never on the host's network.

    python -m bench.task_bench REQUEST RESULT

REQUEST is a pickle of (benchmark names, Sizes); each benchmark's table is printed as it
ends and the list of Benchmarks is pickled to RESULT.
"""

import pickle
import shutil
import sys
import tempfile
from pathlib import Path

from bench import large_csv, ml_bench
from bench.report import table, timed
from bench.stack import Stack

BENCHMARKS = {
    "hyperparameter_search": lambda stack, root, sizes: ml_bench.hyperparameter_search(
        stack, root, sizes.grid_rows, sizes.grid_multiples, sizes.repetitions),
    "distributed_training": lambda stack, root, sizes: ml_bench.distributed_training(
        stack, root, sizes.training_rows, sizes.repetitions),
    "process_large_csv": lambda stack, root, sizes: large_csv.run(
        stack, root, sizes.csv_rows, sizes.repetitions),
    "batch_predictions": lambda stack, root, sizes: ml_bench.batch_predictions(
        stack, root, sizes.batch_rows, sizes.repetitions),
}


def main(request: Path, result: Path) -> None:
    names, sizes = pickle.loads(request.read_bytes())
    data_root = Path(tempfile.mkdtemp(prefix="bench-data-"))
    benchmarks = []
    try:
        with Stack(data_root) as stack:
            for name in names:
                benchmarks.append(timed(BENCHMARKS[name], stack, data_root, sizes))
                print(table(benchmarks[-1]), flush=True)
    finally:
        shutil.rmtree(data_root, ignore_errors=True)
        result.write_bytes(pickle.dumps(benchmarks))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
