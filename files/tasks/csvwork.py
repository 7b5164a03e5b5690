"""The CSV work behind tasks.data_tasks, as plain functions over Ray (no Celery here).

process_csv splits a file into byte ranges; one Ray task per range parses the filter
columns of its range with pyarrow (columnar, multithreaded C++) and copies the lines that
pass, byte for byte, to a part file; the parts are then streamed, in order, into the
output. No process ever holds the whole file, and kept rows are exactly the input's.
Ranges are cut on line boundaries, so quoted fields must not contain newlines.

Filter semantics: ``{"filter": {"amount": 100}}`` keeps the rows whose ``amount`` is
**greater than or equal to** 100 (a minimum). Several columns must all hold (AND). A row
whose value is empty is dropped; a value that is not a number is an error.

Every input CSV needs a header line and at least one data row.
"""

import csv
import itertools
import math
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import ray

from tasks.errors import InvalidInput
from tasks.paths import atomic_write
from tasks.raycluster import gather

Progress = Callable[[int, int], None] | None

TRANSFORMATION_KEYS = {"filter", "num_chunks"}
DEFAULT_NUM_CHUNKS = 4
# More ranges than this only queue up behind the cluster's CPUs (and a huge count would
# build a range list as long as the file); big files still get MAX_RANGE_BYTES ranges.
MAX_NUM_CHUNKS = 1024
# Larger files get more ranges than asked for, so that no Ray task parses more than this.
MAX_RANGE_BYTES = 128 * 1024 * 1024
COPY_BUFFER_BYTES = 1024 * 1024
# A Ray task filters its range this many bytes (rounded up to whole lines) at a time:
# larger blocks cost memory (a few times the block size per Ray task), not speed.
BLOCK_BYTES = 2 * 1024 * 1024
NEWLINE, CARRIAGE_RETURN = ord("\n"), ord("\r")


class CsvHead:
    """The header of a CSV file and where its data starts."""

    def __init__(self, path: Path):
        with open(path, "rb") as handle:
            self.line = handle.readline()
            self.data_start = handle.tell()
            has_rows = bool(handle.readline().strip())
        if not self.line.strip():
            raise InvalidInput(f"CSV {path} is empty: it needs a header line and data rows")
        if not has_rows:
            raise InvalidInput(f"CSV {path} has a header but no data rows")
        if not self.line.endswith(b"\n"):
            self.line += b"\n"
        self.path = path
        self.size = path.stat().st_size
        try:
            self.columns = next(csv.reader([self.line.decode("utf-8")]))
        except UnicodeDecodeError:
            raise InvalidInput(f"CSV {path} header is not UTF-8 text") from None


def parse_transformations(transformations: Any, columns: list[str]) -> tuple[dict, int]:
    """Return (filters {column: minimum}, num_chunks) or raise InvalidInput."""
    transformations = transformations or {}
    if not isinstance(transformations, dict):
        raise InvalidInput(f"transformations must be a dict, got {transformations!r}")
    unknown = set(transformations) - TRANSFORMATION_KEYS
    if unknown:
        raise InvalidInput(f"unknown transformations {sorted(unknown)}; "
                           f"supported: {sorted(TRANSFORMATION_KEYS)}")
    filters = transformations.get("filter", {})
    if not isinstance(filters, dict):
        raise InvalidInput(f"filter must be a dict {{column: minimum}}, got {filters!r}")
    for column, minimum in filters.items():
        if column not in columns:
            raise InvalidInput(f"filter column {column!r} is not in the CSV (columns: {columns})")
        if isinstance(minimum, bool) or not isinstance(minimum, int | float):
            raise InvalidInput(f"filter minimum for {column!r} must be a number, got {minimum!r}")
    num_chunks = transformations.get("num_chunks", DEFAULT_NUM_CHUNKS)
    if isinstance(num_chunks, bool) or not isinstance(num_chunks, int) \
            or not 1 <= num_chunks <= MAX_NUM_CHUNKS:
        raise InvalidInput(f"num_chunks must be an integer from 1 to {MAX_NUM_CHUNKS}, "
                           f"got {num_chunks!r}")
    return filters, num_chunks


def byte_ranges(head: CsvHead, num_chunks: int) -> list[tuple[int, int]]:
    """Split the data bytes into num_chunks (or more, for big files) contiguous ranges."""
    data_bytes = head.size - head.data_start
    count = min(max(num_chunks, math.ceil(data_bytes / MAX_RANGE_BYTES)), data_bytes)
    bounds = [head.data_start + data_bytes * index // count for index in range(count + 1)]
    return list(itertools.pairwise(bounds))


def _line_start_at_or_after(handle, position: int) -> int:
    # The byte before `position` is a newline exactly when a line starts at `position`;
    # the data always starts right after the header's newline.
    handle.seek(position - 1)
    handle.readline()
    return handle.tell()


def _read_table(path: str, buffer, *, columns: list[str] | None = None,
                column_types: dict | None = None, include: list[str] | None = None) -> pa.Table:
    try:
        return pacsv.read_csv(
            pa.BufferReader(buffer),
            read_options=pacsv.ReadOptions(column_names=columns or []),
            convert_options=pacsv.ConvertOptions(column_types=column_types or {},
                                                 include_columns=include or []),
        )
    except pa.ArrowInvalid as exc:
        def name_the_column(found: re.Match) -> str:
            return f"column {columns[int(found[1])]!r}" if columns else found[0]

        message = re.sub(r"CSV column #(\d+)", name_the_column, str(exc))
        raise InvalidInput(f"CSV {path}: {message}") from None


def _at_least(column: pa.ChunkedArray, minimum: float) -> np.ndarray:
    """Which float64 values are >= minimum; a null is not. Read straight from the Arrow
    buffers: pyarrow.compute, or to_numpy on a column with nulls (which imports pandas),
    would cost every Ray worker that ran a filter about 30 MB for as long as it lives."""
    array = column.combine_chunks()
    validity, values = array.buffers()
    passes = np.frombuffer(values, np.float64, len(array), array.offset * 8) >= minimum
    if validity is not None:
        bits = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little",
                             count=array.offset + len(array))
        passes &= bits[array.offset:].view(bool)
    return passes


def _row_mask(path: str, buffer, columns: list[str], filters: dict) -> np.ndarray | None:
    """Which rows pass every filter (None: no filter). Only the filter columns are
    converted (to float64); a row with an empty value does not pass."""
    if not filters:
        return None
    table = _read_table(path, buffer, columns=columns, include=list(filters),
                        column_types={column: pa.float64() for column in filters})
    return np.logical_and.reduce([_at_least(table[column], minimum)
                                  for column, minimum in filters.items()])


def _kept_lines(path: str, block: bytes, block_start: int, columns: list[str],
                filters: dict) -> tuple[int, int, np.ndarray]:
    """(rows read, rows kept, the kept rows' bytes) of `block`, whole lines starting at
    byte `block_start` of the file. pyarrow parses only the filter columns; the kept lines
    are cut out of the original bytes, so values are never re-formatted."""
    data = np.frombuffer(block, dtype=np.uint8)
    line_ends = np.flatnonzero(data == NEWLINE) + 1
    if line_ends.size == 0 or line_ends[-1] != data.size:
        line_ends = np.append(line_ends, data.size)
    line_starts = np.concatenate(([0], line_ends[:-1]))
    lengths = line_ends - line_starts
    # pyarrow skips empty lines ("\n" or "\r\n"); so do we.
    is_row = ~((lengths == 1) | ((lengths == 2) & (data[line_starts] == CARRIAGE_RETURN)))
    rows = int(is_row.sum())
    mask = _row_mask(path, pa.py_buffer(block), columns, filters)
    if mask is not None and mask.size != rows:
        raise InvalidInput(f"CSV {path}: a quoted field spans lines near byte {block_start}; "
                           "process_large_csv needs one record per line")
    keep = is_row.copy()
    if mask is not None:
        keep[is_row] = mask
    return rows, int(keep.sum()), data[np.repeat(keep, lengths)]


@ray.remote(num_cpus=1)
def _filter_range(path: str, *, columns: list[str], start: int, end: int, filters: dict,
                  part: str, block_bytes: int = BLOCK_BYTES) -> tuple[int, int]:
    """Copy the lines that start in [start, end) and pass the filters, byte for byte,
    into `part`: (rows read, rows kept). The range is read in blocks of whole lines of
    about `block_bytes`, so a worker's memory does not grow with its range."""
    rows = kept_rows = 0
    with open(path, "rb") as source, open(part, "wb") as target:
        position = _line_start_at_or_after(source, start)
        last = _line_start_at_or_after(source, end)
        while position < last:
            block_end = min(_line_start_at_or_after(source, position + block_bytes), last)
            source.seek(position)
            block_rows, block_kept, kept = _kept_lines(
                path, source.read(block_end - position), position, columns, filters)
            rows += block_rows
            kept_rows += block_kept
            target.write(kept)
            if kept.size and kept[-1] != NEWLINE:
                target.write(b"\n")
            position = block_end
    return rows, kept_rows


@contextmanager
def _parts_dir(output: Path) -> Iterator[Path]:
    directory = output.with_name(f".{output.name}.parts-{uuid.uuid4().hex[:8]}")
    directory.mkdir()
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _concatenate(header: bytes, parts: list[Path], output: Path) -> None:
    with atomic_write(output) as tmp, open(tmp, "wb") as target:
        target.write(header)
        for part in parts:
            with open(part, "rb") as source:
                shutil.copyfileobj(source, target, COPY_BUFFER_BYTES)


def process_csv(source: Path, output: Path, transformations: Any,
                progress: Progress = None) -> dict[str, Any]:
    head = CsvHead(source)
    filters, num_chunks = parse_transformations(transformations, head.columns)
    ranges = byte_ranges(head, num_chunks)
    with _parts_dir(output) as parts_dir:
        parts = [parts_dir / f"part-{index:05d}.csv" for index in range(len(ranges))]
        refs = [
            _filter_range.remote(str(source), columns=head.columns, start=start, end=end,
                                 filters=filters, part=str(part))
            for (start, end), part in zip(ranges, parts, strict=True)
        ]
        counts = gather(refs, progress)
        _concatenate(head.line, parts, output)
    return {
        "status": "completed",
        "input_path": str(source),
        "output_path": str(output),
        "rows_read": sum(read for read, _ in counts),
        "rows_written": sum(kept for _, kept in counts),
        "chunks": len(ranges),
        "filter": {column: {">=": minimum} for column, minimum in filters.items()},
    }


def _kind(data_type: pa.DataType) -> str:
    if pa.types.is_null(data_type):
        return "empty"
    if pa.types.is_integer(data_type) or pa.types.is_floating(data_type) \
            or pa.types.is_decimal(data_type):
        return "number"
    if pa.types.is_boolean(data_type):
        return "boolean"
    if pa.types.is_temporal(data_type):
        return "date/time"
    return "text"


@ray.remote(num_cpus=1)
def _source_to_part(path: str, columns: list[str], part: str) -> tuple[int, dict[str, str]]:
    """Write a source's rows, in the output's column order, to `part`."""
    with pa.memory_map(path) as mapped:
        table = _read_table(path, mapped.read_buffer())
    table = table.select(columns)
    pacsv.write_csv(table, part, pacsv.WriteOptions(include_header=False))
    return table.num_rows, {name: _kind(table[name].type) for name in columns}


def _schema_errors(heads: list[CsvHead]) -> list[str]:
    reference = heads[0]
    errors = []
    for head in heads[1:]:
        missing = [c for c in reference.columns if c not in head.columns]
        extra = [c for c in head.columns if c not in reference.columns]
        if missing or extra:
            errors.append(f"{head.path} lacks {missing} and has extra {extra} "
                          f"compared with {reference.path}")
    return errors


def _type_errors(heads: list[CsvHead], kinds: list[dict[str, str]]) -> list[str]:
    errors = []
    for column in heads[0].columns:
        seen = {head.path: kind[column] for head, kind in zip(heads, kinds, strict=True)
                if kind[column] != "empty"}
        if len(set(seen.values())) > 1:
            detail = ", ".join(f"{path}: {kind}" for path, kind in seen.items())
            errors.append(f"column {column!r} holds different types ({detail})")
    return errors


def aggregate_csvs(sources: list[Path], output: Path,
                   progress: Progress = None) -> dict[str, Any]:
    """Concatenate CSVs with the same columns (any order) into one, in source order.

    Column order is the first source's; a column must hold the same kind of value
    (number, text, boolean, date/time) in every source.
    """
    heads = [CsvHead(source) for source in sources]
    errors = _schema_errors(heads)
    if errors:
        raise InvalidInput("schema mismatch: " + "; ".join(errors))
    columns = heads[0].columns
    with _parts_dir(output) as parts_dir:
        parts = [parts_dir / f"part-{index:05d}.csv" for index in range(len(sources))]
        refs = [_source_to_part.remote(str(source), columns, str(part))
                for source, part in zip(sources, parts, strict=True)]
        results = gather(refs, progress)
        errors = _type_errors(heads, [kinds for _, kinds in results])
        if errors:
            raise InvalidInput("schema mismatch: " + "; ".join(errors))
        _concatenate(heads[0].line, parts, output)
    return {
        "status": "completed",
        "output_path": str(output),
        "rows": sum(rows for rows, _ in results),
        "columns": columns,
        "sources": [{"path": str(source), "rows": rows}
                    for source, (rows, _) in zip(sources, results, strict=True)],
    }
