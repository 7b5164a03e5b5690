"""Data tasks (queue ``data``): thin Celery wrappers around tasks.csvwork, run on Ray."""

import os

from tasks import paths
from tasks.base import DURABLE, enqueue_once, task
from tasks.errors import InvalidInput
from tasks.raycluster import ensure_ray
from tasks.settings import settings

# What the spec's hourly run does to each new file: keep rows with amount >= 100.
NEW_DATA_TRANSFORMATIONS = {"filter": {"amount": 100}, "num_chunks": 5}


@task(soft_time_limit=1700, time_limit=1800, **DURABLE)
def process_large_csv(self, file_path=None, output_path=None, transformations=None):
    """Filter a CSV in parallel byte ranges on Ray and stream the rows to output_path.

    transformations: {"filter": {column: minimum}, "num_chunks": n (default 4)}; a filter
    keeps the rows whose value is >= the minimum. Returns rows_read, rows_written,
    chunks, input_path, output_path.
    """
    source = paths.guarded_path(file_path, must_exist=True, what="file_path")
    if not source.is_file():
        raise InvalidInput(f"file_path {file_path!r} is not a file")
    target = paths.output_path(output_path)
    from tasks import csvwork

    csvwork.parse_transformations(transformations, csvwork.CsvHead(source).columns)
    ensure_ray()
    return csvwork.process_csv(source, target, transformations, self.report_progress)


@task(soft_time_limit=1700, time_limit=1800, **DURABLE)
def aggregate_data(self, data_sources=None, output_path=None):
    """Concatenate CSVs with the same columns into output_path (one Ray task per source).

    Returns rows, columns, sources [{path, rows}], output_path. Different columns, or a
    column holding numbers in one source and text in another, is a schema mismatch.
    """
    if not isinstance(data_sources, list) or not data_sources:
        raise InvalidInput(f"data_sources must be a non-empty list of CSV paths, "
                           f"got {data_sources!r}")
    sources = [paths.guarded_path(source, must_exist=True, what="data source")
               for source in data_sources]
    target = paths.output_path(output_path)
    from tasks import csvwork

    ensure_ray()
    return csvwork.aggregate_csvs(sources, target, self.report_progress)


def claim_new_files(inbox, claimed):
    """Move every visible *.csv of the inbox into `claimed`; a concurrent run that moved a
    file first keeps it (rename is atomic), so no file is taken twice."""
    for entry in sorted(inbox.iterdir()):
        if entry.name.startswith(".") or entry.suffix != ".csv" or not entry.is_file():
            continue
        claimed.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(entry, claimed / entry.name)
        except FileNotFoundError:
            continue
    return sorted(claimed.glob("*.csv")) if claimed.is_dir() else []


@task(soft_time_limit=60, time_limit=120, **DURABLE)
def process_new_data(self, transformations=None):
    """Fan out process_large_csv for every new CSV of inbox_dir into processed_dir.

    Each file is first moved to <inbox_dir>/.claimed/<this task's id>/, so the next run
    does not see it again. Returns {'status': 'scheduled', 'files': [{file, task_id}]}.
    """
    inbox = paths.output_dir(settings().inbox_dir, what="inbox_dir")
    processed = paths.output_dir(settings().processed_dir, what="processed_dir")
    files = []
    for claimed in claim_new_files(inbox, inbox / paths.CLAIMED_DIR / self.request.id):
        child_id = enqueue_once(
            process_large_csv, self.request.id, claimed.name,
            file_path=str(claimed),
            output_path=str(processed / claimed.name),
            transformations=transformations or NEW_DATA_TRANSFORMATIONS,
        )
        files.append({"file": claimed.name, "task_id": child_id})
    return {"status": "scheduled", "files": files}
