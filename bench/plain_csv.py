"""The plain alternatives to process_large_csv, each in a process of its own:

    python -m bench.plain_csv pandas|polars SOURCE OUTPUT MINIMUM

It loads its engine, prints ``ready`` and waits for a line on stdin (the caller measures
its idle memory meanwhile), does the work and prints the seconds the work took.
"""

import importlib
import sys
import time


def with_pandas(source: str, output: str, minimum: float) -> None:
    import pandas as pd  # noqa: PLC0415 (each process loads only the engine it measures)

    data = pd.read_csv(source)
    data[data["amount"] >= minimum].to_csv(output, index=False)


def with_polars(source: str, output: str, minimum: float) -> None:
    import polars as pl  # noqa: PLC0415 (each process loads only the engine it measures)

    pl.scan_csv(source).filter(pl.col("amount") >= minimum).sink_csv(output)


ENGINES = {"pandas": with_pandas, "polars": with_polars}


def main(engine: str, source: str, output: str, minimum: str) -> None:
    importlib.import_module(engine)
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    ENGINES[engine](source, output, float(minimum))
    print(time.perf_counter() - start, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
