"""The benchmarks' synthetic data, seeded: nothing is downloaded or committed."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sklearn.datasets import make_classification

START_OF_2026 = 1_767_225_600  # seconds since the epoch
SECONDS_PER_YEAR = 365 * 24 * 3600


CSV_OPTIONS = pacsv.WriteOptions(quoting_style="none")


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), path, CSV_OPTIONS)
    return path


def classification_frame(rows: int, features: int, seed: int,
                         with_target: bool = True) -> pd.DataFrame:
    values, labels = make_classification(n_samples=rows, n_features=features,
                                         n_informative=max(2, features // 2),
                                         random_state=seed)
    frame = pd.DataFrame(values, columns=[f"f{index}" for index in range(features)])
    if with_target:
        frame["target"] = labels
    return frame


def transactions_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """~46 bytes a row (5M rows: ~230 MB): id, created, customer, amount, quantity,
    currency; ``amount`` is uniform in [0, 200), so the spec's filter keeps about half."""
    rng = np.random.default_rng(seed)
    customers = pa.array([f"cust{index:04d}" for index in range(1000)])
    currencies = pa.array(["EUR", "USD", "GBP"])
    table = pa.table({
        "id": pa.array(np.arange(rows)),
        "created": pa.array(START_OF_2026 + rng.integers(0, SECONDS_PER_YEAR, rows),
                            pa.timestamp("s")),
        "customer": pc.take(customers, rng.integers(0, len(customers), rows)),
        "amount": pa.array(np.round(rng.uniform(0, 200, rows), 2)),
        "quantity": pa.array(rng.integers(1, 10, rows)),
        "currency": pc.take(currencies, rng.integers(0, len(currencies), rows)),
    })
    pacsv.write_csv(table, path, CSV_OPTIONS)
    return path


def count_lines(path: Path) -> int:
    count = 0
    with open(path, "rb") as handle:
        while block := handle.read(16 * 1024 * 1024):
            count += block.count(b"\n")
    return count
