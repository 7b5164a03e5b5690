"""The README's bad-input table (Reliability and security > Bad input), row by row, through
the real broker and workers: each bad input fails at once (FAILURE, no retry) with a
message that says what to fix, and the worker that refused it still answers."""

import json
import socket

import joblib
import pytest
from celery import Celery
from celery.exceptions import NotRegistered
from conftest import RESULT_TIMEOUT_SECONDS, classification_frame, transactions_frame
from tasks.errors import InvalidInput

ML, DATA, SIMPLE = "tasks.ml_tasks", "tasks.data_tasks", "tasks.simple_tasks"
HUGE = 10**9
TRAIN = "{datasets}/bad-train.csv"
FIFTY_MB = 50 * 1000 * 1000


def csv_task(transformations, file="bad-transactions.csv"):
    """process_large_csv of a file under {datasets}."""
    return (f"{DATA}.process_large_csv",
            {"file_path": f"{{datasets}}/{file}", "output_path": "{datasets}/bad-out/o.csv",
             "transformations": transformations})


def train_on(dataset_path, **model_config):
    return (f"{ML}.distributed_training",
            {"dataset_path": dataset_path, "model_config": model_config})


def predictions(model_path):
    return (f"{ML}.batch_predictions",
            {"model_path": model_path, "data_batches": ["{datasets}/bad-batch.csv"]})


def search(param_grid):
    return (f"{ML}.hyperparameter_search",
            {"param_grid": param_grid, "dataset_path": TRAIN})


ROWS = {
    # Paths: every path argument must resolve (.. collapsed, symlinks followed) under the
    # data roots; a model must resolve under models_dir.
    "path-absolute": (train_on("/etc/hostname"),
                      "'/etc/hostname' resolves to /etc/hostname, outside the data roots"),
    "path-dotdot": (predictions("{datasets}/../../../../etc/passwd"),
                    "outside the data roots"),
    "path-symlink": (csv_task({}, file="bad-escape.csv"), "outside the data roots"),
    "path-symlinked-dir": ((f"{DATA}.aggregate_data",
                            {"data_sources": ["{datasets}/bad-escape-dir/hostname"],
                             "output_path": "{datasets}/bad-out/a.csv"}),
                           "outside the data roots"),
    "path-output-outside": ((f"{DATA}.process_large_csv",
                             {"file_path": "{datasets}/bad-transactions.csv",
                              "output_path": "/tmp/stolen.csv"}),
                            "output_path '/tmp/stolen.csv' resolves to .*outside the data roots"),
    "missing-file": (train_on("{datasets}/bad-nope.csv"),
                     "dataset_path '.*nope.csv' does not exist"),
    "missing-file-csv": (csv_task({}, file="bad-nope.csv"),
                         "file_path '.*nope.csv' does not exist"),
    "empty-csv": (csv_task({}, file="bad-empty.csv"),
                  "bad-empty.csv is empty: it needs a header line"),
    "empty-dataset": (train_on("{datasets}/bad-empty.csv"),
                      r"bad-empty.csv is empty \(no header, no rows\)"),
    "header-only-csv": (csv_task({}, file="bad-header-only.csv"), "has a header but no data rows"),
    "garbled-line-csv": (csv_task({"filter": {"amount": 100}}, file="bad-garbled.csv"),
                         "CSV parse error: Expected 3 columns, got 5: 2,120,b,extra,junk"),
    "garbled-line-dataset": (train_on("{datasets}/bad-garbled.csv"),
                             "not a readable CSV: .*Expected 3 fields in line 3, saw 5"),
    "non-numeric-amount": (csv_task({"filter": {"amount": 100}}, file="bad-amount-text.csv"),
                           "column 'amount': CSV conversion error to double: "
                           "invalid value 'twelve'"),
    "non-numeric-minimum": (csv_task({"filter": {"amount": "100"}}),
                            "filter minimum for 'amount' must be a number, got '100'"),
    "unknown-filter-column": (csv_task({"filter": {"price": 100}}),
                              r"filter column 'price' is not in the CSV \(columns: \['id'"),
    "unknown-target-column": (train_on(TRAIN, target="price"),
                              "target column 'price' not in the dataset"),
    "schema-mismatch": ((f"{DATA}.aggregate_data",
                         {"data_sources": [TRAIN, "{datasets}/bad-other.csv"],
                          "output_path": "{datasets}/bad-out/a.csv"}),
                        "schema mismatch: .*other.csv lacks"),
    "grid-empty": (search([]), r"param_grid must be a non-empty list of parameter dicts, got \[\]"),
    "grid-not-a-list": (search("max_depth=3"), "param_grid must be a non-empty list"),
    "grid-empty-dict": (search([{"max_depth": 3}, {}]),
                        r"param_grid\[1\] must be a non-empty dict"),
    "grid-unknown-parameter": (search([{"depth": 3}]),
                               r"param_grid\[0\] has unknown parameters \['depth'\]; allowed:"),
    "grid-bad-value": (search([{"max_depth": -4}]),
                       "The 'max_depth' parameter of RandomForestClassifier must be an int "
                       r"in the range \[1, inf\) or None. Got -4"),
    "grid-huge-forest": (search([{"n_estimators": HUGE}]),
                         rf"param_grid\[0\]\['n_estimators'\] is {HUGE}; at most 10000"),
    "num-partitions-0": (train_on(TRAIN, num_partitions=0),
                         r"model_config\['num_partitions'\] must be an integer from 1 to 1024, "
                         "got 0"),
    "num-partitions-negative": (train_on(TRAIN, num_partitions=-3), "from 1 to 1024, got -3"),
    "num-partitions-huge": (train_on(TRAIN, num_partitions=HUGE), f"from 1 to 1024, got {HUGE}"),
    "n-estimators-huge": (train_on(TRAIN, n_estimators=HUGE),
                          rf"model_config\['n_estimators'\] must be an integer from 1 to "
                          rf"10000, got {HUGE}"),
    "num-chunks-0": (csv_task({"num_chunks": 0}),
                     "num_chunks must be an integer from 1 to 1024, got 0"),
    "num-chunks-negative": (csv_task({"num_chunks": -2}), "from 1 to 1024, got -2"),
    "num-chunks-huge": (csv_task({"num_chunks": HUGE}), f"from 1 to 1024, got {HUGE}"),
    "num-chunks-not-a-number": (csv_task({"num_chunks": "10"}), "from 1 to 1024, got '10'"),
    "model-not-a-pickle": (predictions("{models}/bad-not-a-model.pkl"),
                           "bad-not-a-model.pkl cannot be loaded .*use a model file saved by "
                           "distributed_training"),
    "model-pickle-of-no-model": (predictions("{models}/bad-a-dict.pkl"),
                                 r"bad-a-dict.pkl is not a model trained on named features"),
    "model-outside-models-dir": (predictions("{datasets}/bad-model.pkl"),
                                 "outside the models dir .*models_dir.*unpickled only from"),
    "model-symlink-out-of-models-dir": (predictions("{models}/bad-link.pkl"),
                                        "outside the models dir"),
    "no-batches": ((f"{ML}.batch_predictions",
                    {"model_path": "{models}/bad-a-dict.pkl", "data_batches": []}),
                   r"data_batches must be a non-empty list of CSV paths, got \[\]"),
    "notification-level": ((f"{SIMPLE}.send_notification", {"message": "x", "level": "loud"}),
                           r"level 'loud' is not one of \['debug'"),
    "notification-channel": ((f"{SIMPLE}.send_notification", {"message": "x", "channel": "sms"}),
                             r"channel 'sms' is not one of \['log', 'webhook'\]"),
    "cleanup-age": ((f"{SIMPLE}.cleanup_old_results", {"older_than_days": -1}),
                    "older_than_days must be a number > 0, got -1"),
}


def worker_of(queue: str) -> str:
    return {"celery": "default"}.get(queue, queue)


def assert_worker_answers(stack, worker: str) -> None:
    """The worker's main process is up and answers a control ping."""
    assert stack.workers[worker].poll() is None
    hostname = f"{worker}@{socket.gethostname()}"
    assert stack.client.control.ping(destination=[hostname], timeout=10) == [
        {hostname: {"ok": "pong"}}]


@pytest.fixture(scope="module")
def bad_files(stack):
    datasets, models = stack.datasets, stack.models
    classification_frame(200, seed=4).to_csv(datasets / "bad-train.csv", index=False)
    classification_frame(10, seed=5).drop(columns="target").to_csv(
        datasets / "bad-batch.csv", index=False)
    transactions_frame(50).to_csv(datasets / "bad-transactions.csv", index=False)
    (datasets / "bad-empty.csv").write_text("")
    (datasets / "bad-header-only.csv").write_text("id,amount,note\n")
    (datasets / "bad-garbled.csv").write_text("id,amount,note\n1,150,a\n2,120,b,extra,junk\n")
    (datasets / "bad-amount-text.csv").write_text("id,amount\n1,150\n2,twelve\n")
    (datasets / "bad-other.csv").write_text("a,b\n1,2\n")
    (datasets / "bad-escape.csv").symlink_to("/etc/hostname")
    (datasets / "bad-escape-dir").symlink_to("/etc")
    (models / "bad-not-a-model.pkl").write_text("id,amount\n1,2\n")
    joblib.dump({"weights": [1, 2, 3]}, models / "bad-a-dict.pkl")
    joblib.dump({"weights": [1, 2, 3]}, datasets / "bad-model.pkl")
    (models / "bad-link.pkl").symlink_to(datasets / "bad-model.pkl")
    return stack


def with_paths(stack, kwargs: dict) -> dict:
    text = json.dumps(kwargs)
    for name, path in (("{datasets}", stack.datasets), ("{models}", stack.models)):
        text = text.replace(name, str(path))
    return json.loads(text)


@pytest.mark.parametrize("row", ROWS)
def test_bad_input_fails_at_once_with_what_to_fix(bad_files, row):
    (name, kwargs), message = ROWS[row]
    result = bad_files.client.send_task(name, kwargs=with_paths(bad_files, kwargs))
    with pytest.raises(InvalidInput, match=message):
        result.get(timeout=RESULT_TIMEOUT_SECONDS)
    assert (result.state, result.retries) == ("FAILURE", 0)
    assert_worker_answers(bad_files, worker_of(result.queue))


@pytest.mark.parametrize(("name", "queue"), [
    ("tasks.ml_tasks.train", "ml"),
    ("tasks.simple_tasks.pong", "celery"),
])
def test_an_unknown_task_name_fails_at_once_as_not_registered(stack, name, queue):
    with pytest.raises(InvalidInput, match=rf"unknown task '{name}'; known: \['tasks"):
        stack.client.send_task(name)
    bare = Celery(broker=stack.broker_url, backend=stack.backend_url)
    result = bare.send_task(name, queue=queue)
    with pytest.raises(NotRegistered, match=name):
        result.get(timeout=RESULT_TIMEOUT_SECONDS)
    assert result.state == "FAILURE"
    # Rejected, not requeued: it never comes back.
    assert stack.broker_redis().llen(queue) == 0
    assert_worker_answers(stack, worker_of(queue))


@pytest.mark.parametrize(("name", "argument", "queue"), [
    ("tasks.simple_tasks.send_notification", "message", "celery"),
    ("tasks.ml_tasks.hyperparameter_search", "param_grid", "ml"),
])
def test_fifty_megabytes_of_arguments_are_refused_and_everything_survives(stack, name,
                                                                          argument, queue):
    kwargs = {argument: "x" * FIFTY_MB}
    limit = "task arguments are 50.0 MB of JSON, above the limit of 1 MB"
    with pytest.raises(InvalidInput, match=limit):
        stack.client.send_task(name, kwargs=kwargs)
    bare = Celery(broker=stack.broker_url, backend=stack.backend_url)
    result = bare.send_task(name, kwargs=kwargs, queue=queue)
    with pytest.raises(InvalidInput, match=f"{limit}: write the data to a file"):
        result.get(timeout=RESULT_TIMEOUT_SECONDS)
    assert (result.state, result.retries) == ("FAILURE", 0)
    # The stored failure does not carry the 50 MB back into the result backend.
    assert len(stack.backend_redis().get(f"celery-task-meta-{result.id}")) < 10_000
    assert stack.broker_redis().ping() and stack.broker_redis().llen(queue) == 0
    assert_worker_answers(stack, worker_of(queue))
