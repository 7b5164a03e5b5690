"""The spec's snippets, sent from this controller by the spec's bare client as written.

The bare client knows no routes: without queue= a task goes to Celery's default queue
`celery`, which the default worker consumes as well.
"""

import pytest
from scenario import (
    DEADLINE_SECONDS,
    TRAINED_MODEL,
    assert_model_file,
    csv_lines,
    rows_at_or_above,
    worker_name,
)

SPEC_MODEL_CONFIG = {"n_estimators": 100, "max_depth": 20, "num_partitions": 4}
SPEC_PARAM_GRID = [
    {"n_estimators": n, "max_depth": d, "min_samples_split": s}
    for n in [50, 100, 200]
    for d in [10, 20, 30]
    for s in [2, 5, 10]
]


def test_quick_start_ping(bare_client):
    result = bare_client.send_task("tasks.simple_tasks.ping")
    assert result.get(timeout=DEADLINE_SECONDS) == {"status": "pong",
                                                    "worker": worker_name("default")}


def test_quick_start_training_on_a_dataset_directory(bare_client, container):
    result = bare_client.send_task("tasks.ml_tasks.distributed_training", kwargs={
        "model_config": SPEC_MODEL_CONFIG,
        "dataset_path": "/datasets/training_data",
    })
    training = result.get(timeout=DEADLINE_SECONDS)
    assert 0 <= training["avg_score"] <= 1
    assert len(training["partition_scores"]) == 4
    assert training["n_estimators"] == 100
    # Two files of 60 rows each; a fifth of them is held out.
    assert training["train_rows"] + training["holdout_rows"] == 120
    assert training["model_path"].startswith("/models/model-")
    assert_model_file(container, training["model_path"])
    assert (result.queue, result.worker) == ("celery", worker_name("default"))


def test_hyperparameter_search_example(bare_client):
    result = bare_client.send_task("tasks.ml_tasks.hyperparameter_search", kwargs={
        "param_grid": SPEC_PARAM_GRID,
        "dataset_path": "/datasets/training_data.csv",
    })
    search = result.get(timeout=DEADLINE_SECONDS)
    assert [entry["params"] for entry in search["results"]] == SPEC_PARAM_GRID
    assert all(len(entry["fold_scores"]) == search["cv"] for entry in search["results"])
    # One Ray task per fold of each group of combinations that differ only in n_estimators
    # (one forest per group and fold scores every size): 3 max_depth x 3 min_samples_split.
    assert search["ray_tasks"] == 3 * 3 * search["cv"]
    assert search["best_score"] == max(entry["mean_score"] for entry in search["results"])
    assert search["best_params"] in SPEC_PARAM_GRID
    assert 0 <= search["best_score"] <= 1


def test_batch_predictions_example(bare_client, container, trained_model):
    batches = ["/datasets/batch_1.csv", "/datasets/batch_2.csv", "/datasets/batch_3.csv"]
    result = bare_client.send_task("tasks.ml_tasks.batch_predictions", kwargs={
        "model_path": TRAINED_MODEL,
        "data_batches": batches,
    })
    predictions = result.get(timeout=DEADLINE_SECONDS)
    rows = {batch: len(csv_lines(container, batch)) - 1 for batch in batches}
    assert predictions["total_predictions"] == sum(rows.values())
    for batch in predictions["batches"]:
        assert batch["predictions"] == rows[batch["batch"]]
        output = csv_lines(container, batch["output_path"])
        assert output[0] == "prediction"
        assert len(output) - 1 == rows[batch["batch"]]


def test_priority_example_training_on_the_ml_queue(bare_client, container):
    result = bare_client.send_task(
        "tasks.ml_tasks.distributed_training",
        kwargs={"model_config": SPEC_MODEL_CONFIG, "dataset_path": "/datasets/training.csv"},
        queue="ml",
        priority=9,
    )
    training = result.get(timeout=DEADLINE_SECONDS)
    assert 0 <= training["avg_score"] <= 1
    assert_model_file(container, training["model_path"])
    assert result.worker == worker_name("ml")


@pytest.mark.parametrize(
    ("route", "output_path", "worker"),
    [
        ({"queue": "data"}, "/datasets/processed.csv", worker_name("data")),
        # No queue=: Celery's default queue, consumed by the default worker.
        ({}, "/datasets/processed-urgent.csv", worker_name("default")),
    ],
    ids=["queue-data", "no-queue"],
)
def test_priority_example_csv_processing(bare_client, container, route, output_path, worker):
    result = bare_client.send_task(
        "tasks.data_tasks.process_large_csv",
        kwargs={
            "file_path": "/datasets/raw.csv",
            "output_path": output_path,
            "transformations": {"filter": {"amount": 100}, "num_chunks": 10},
        },
        priority=5,
        **route,
    )
    processed = result.get(timeout=DEADLINE_SECONDS)
    kept = rows_at_or_above(container, "/datasets/raw.csv", "amount", 100)
    assert processed["rows_read"] == len(csv_lines(container, "/datasets/raw.csv")) - 1
    assert processed["rows_written"] == len(kept)
    assert 0 < len(kept) < processed["rows_read"]
    output = csv_lines(container, output_path)
    assert output == [csv_lines(container, "/datasets/raw.csv")[0], *kept]
    assert result.worker == worker


def test_aggregate_data_example(bare_client, container):
    sources = ["/datasets/source1.csv", "/datasets/source2.csv"]
    result = bare_client.send_task("tasks.data_tasks.aggregate_data", kwargs={
        "data_sources": sources,
        "output_path": "/datasets/aggregated.csv",
    })
    aggregated = result.get(timeout=DEADLINE_SECONDS)
    inputs = [csv_lines(container, source) for source in sources]
    assert aggregated["rows"] == sum(len(lines) - 1 for lines in inputs)
    assert aggregated["columns"] == inputs[0][0].split(",")
    output = csv_lines(container, "/datasets/aggregated.csv")
    assert output == [inputs[0][0], *inputs[0][1:], *inputs[1][1:]]
    assert result.worker == worker_name("default")


def test_health_check_on_the_default_queue(bare_client):
    result = bare_client.send_task("tasks.simple_tasks.check_cluster_health", queue="default")
    health = result.get(timeout=DEADLINE_SECONDS)
    assert health["status"] == "healthy"
    assert health["alive_nodes"] == 1
    assert health["total_cpus"] > 0
    assert result.worker == worker_name("default")
