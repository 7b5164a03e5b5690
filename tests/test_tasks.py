"""Every task through the real broker, the real workers (one per queue) and the real Ray."""

import json
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from celery import Celery
from conftest import RESULT_TIMEOUT_SECONDS, classification_frame, transactions_frame
from tasks.base import enqueue_once
from tasks.errors import TransientError

from testbed import PACKAGE_PARENT, free_port, wait_for


def run(stack, name, **kwargs):
    """Send through the package's client (routed by module) and wait for the outcome."""
    return stack.client.send_task(name, kwargs=kwargs)


def outcome(result):
    return result.get(timeout=RESULT_TIMEOUT_SECONDS)


@pytest.fixture(scope="module")
def training_csv(stack):
    path = stack.datasets / "tasks-train.csv"
    classification_frame(600, seed=5).to_csv(path, index=False)
    return path


def test_ping_answers_from_the_default_worker(stack):
    result = run(stack, "tasks.simple_tasks.ping")
    assert outcome(result) == {"status": "pong", "worker": result.worker}
    assert result.worker.startswith("default@")


def test_the_specs_bare_client_works_as_written(stack):
    app = Celery(broker=stack.broker_url, backend=stack.backend_url)
    result = app.send_task("tasks.simple_tasks.ping")
    assert outcome(result)["status"] == "pong"
    assert result.worker.startswith("default@")


@pytest.mark.parametrize(("name", "kwargs", "queue"), [
    ("tasks.simple_tasks.send_notification", {"message": "routing"}, "default"),
    ("tasks.data_tasks.process_large_csv", {"file_path": "/etc/passwd"}, "data"),
    ("tasks.ml_tasks.hyperparameter_search", {"param_grid": []}, "ml"),
])
def test_each_module_is_routed_to_its_queue(stack, name, kwargs, queue):
    result = run(stack, name, **kwargs)
    result.get(timeout=RESULT_TIMEOUT_SECONDS, propagate=False)
    assert result.queue == queue
    assert result.worker.startswith(f"{queue}@")


def test_distributed_training_then_batch_predictions(stack, training_csv):
    trained = outcome(run(stack, "tasks.ml_tasks.distributed_training", dataset_path=str(
        training_csv), model_config={"n_estimators": 12, "num_partitions": 3, "max_depth": 6,
                                     "name": "tasks-clf"}))
    assert 0.5 < trained["avg_score"] <= 1
    assert trained["model_path"] == str(stack.models / "tasks-clf.pkl")
    assert trained["n_estimators"] == 12 and trained["num_partitions"] == 3

    batches = []
    for index in range(3):
        batch = stack.datasets / f"tasks-batch-{index}.csv"
        classification_frame(20 + index, seed=20 + index).drop(columns="target").to_csv(
            batch, index=False)
        batches.append(str(batch))
    predicted = outcome(run(stack, "tasks.ml_tasks.batch_predictions",
                            model_path=trained["model_path"], data_batches=batches,
                            output_dir=str(stack.datasets / "predictions")))
    assert predicted["total_predictions"] == 20 + 21 + 22
    for entry in predicted["batches"]:
        assert entry["output_path"].startswith(str(stack.datasets / "predictions"))
        assert len(pd.read_csv(entry["output_path"])) == entry["predictions"]


def test_hyperparameter_search(stack, training_csv):
    grid = [{"n_estimators": n, "max_depth": d} for n in (4, 8) for d in (2, 6)]
    result = outcome(run(stack, "tasks.ml_tasks.hyperparameter_search", param_grid=grid,
                         dataset_path=str(training_csv)))
    # One Ray task per fold of each max_depth: its n_estimators share one forest.
    assert len(result["results"]) == 4 and result["ray_tasks"] == 2 * 3
    assert result["best_score"] == max(entry["mean_score"] for entry in result["results"])
    assert result["best_params"] in grid


def test_process_large_csv_filters_at_or_above_the_threshold(stack):
    source = stack.datasets / "tasks-transactions.csv"
    transactions_frame(3000, seed=9).to_csv(source, index=False)
    output = stack.datasets / "tasks-out" / "filtered.csv"
    result = outcome(run(stack, "tasks.data_tasks.process_large_csv", file_path=str(source),
                         output_path=str(output),
                         transformations={"filter": {"amount": 100}, "num_chunks": 5}))
    frame = pd.read_csv(source)
    expected = frame[frame["amount"] >= 100].reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.read_csv(output), expected)
    assert (result["rows_read"], result["rows_written"], result["chunks"]) == (
        3000, len(expected), 5)


def test_aggregate_data(stack):
    sources = []
    for index in range(3):
        path = stack.datasets / f"tasks-source-{index}.csv"
        transactions_frame(100 + index, seed=index).to_csv(path, index=False)
        sources.append(str(path))
    output = stack.datasets / "tasks-aggregated.csv"
    result = outcome(run(stack, "tasks.data_tasks.aggregate_data", data_sources=sources,
                         output_path=str(output)))
    assert result["rows"] == len(pd.read_csv(output)) == 303


def test_process_new_data_takes_each_file_once(stack):
    for name in ("a.csv", "b.csv"):
        transactions_frame(200).to_csv(stack.inbox / name, index=False)
    (stack.inbox / "notes.txt").write_text("not a csv")
    (stack.inbox / ".partial.csv").write_text("still being copied")
    first = outcome(run(stack, "tasks.data_tasks.process_new_data"))
    assert first["status"] == "scheduled"
    assert sorted(entry["file"] for entry in first["files"]) == ["a.csv", "b.csv"]
    for entry in first["files"]:
        child = outcome(stack.client.AsyncResult(entry["task_id"]))
        assert child["output_path"] == str(stack.processed / entry["file"])
        assert child["filter"] == {"amount": {">=": 100}}
    assert sorted(path.name for path in stack.inbox.iterdir()) == [
        ".claimed", ".partial.csv", "notes.txt"]
    assert outcome(run(stack, "tasks.data_tasks.process_new_data"))["files"] == []


def test_a_redelivered_fan_out_sends_nothing_twice(stack):
    ml_worker = f"ml@{socket.gethostname()}"
    inspect = stack.client.control.inspect(destination=[ml_worker], timeout=5)

    def runs(task: str) -> int:
        return inspect.stats()[ml_worker]["total"].get(f"tasks.ml_tasks.{task}", 0)

    first = outcome(stack.client.send_task("tasks.ml_tasks.retrain_models",
                                           task_id="retrain-run-1"))
    assert first["status"] == "scheduled"
    assert [entry["model"] for entry in first["models"]] == ["stocks", "sentiment"]
    for entry in first["models"]:
        trained = outcome(stack.client.AsyncResult(entry["task_id"]))
        assert trained["model_path"] == str(stack.models / f"{entry['model']}.pkl")
    trained_before, retrained_before = runs("distributed_training"), runs("retrain_models")

    # The same message again, as after a worker crash: same task id, same fan-out.
    stack.client.send_task("tasks.ml_tasks.retrain_models", task_id="retrain-run-1")
    wait_for(lambda: runs("retrain_models") == retrained_before + 1,
             "the redelivered retrain_models", RESULT_TIMEOUT_SECONDS)
    # Anything it had sent would now be queued, reserved, running or counted as run.
    assert [key for key in stack.broker_redis().keys("ml*")] == []
    assert inspect.active()[ml_worker] == [] and inspect.reserved()[ml_worker] == []
    assert runs("distributed_training") == trained_before


def test_enqueue_once_sends_one_message_per_parent_and_item(stack):
    class Recorder:
        sent: list = []  # noqa: RUF012

        def apply_async(self, task_id, kwargs):
            self.sent.append(task_id)

    recorder = Recorder()
    ids = {enqueue_once(recorder, "parent-x", "item-1", a=1) for _ in range(3)}
    other = enqueue_once(recorder, "parent-y", "item-1", a=1)
    assert len(ids) == 1 and other not in ids
    assert recorder.sent == [*ids, other]


def test_cluster_health_reports_nodes_and_cpus(stack):
    health = outcome(run(stack, "tasks.simple_tasks.check_cluster_health"))
    assert health["status"] == "healthy"
    assert (health["alive_nodes"], health["total_cpus"]) == (1, 2)
    assert health["nodes"][0]["address"] == "127.0.0.1"


def test_unreachable_ray_is_an_unhealthy_result_not_a_crash(stack):
    probe = ("import json; from tasks.simple_tasks import check_cluster_health; "
             "print(json.dumps(check_cluster_health()))")
    env = {**stack.env, "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}
    result = subprocess.run([sys.executable, "-c", probe], cwd=PACKAGE_PARENT, env=env,
                            capture_output=True, text=True, check=True)
    health = json.loads(result.stdout.strip().splitlines()[-1])
    assert health["status"] == "unhealthy"
    assert "unreachable" in health["error"]


def test_log_notification(stack):
    assert outcome(run(stack, "tasks.simple_tasks.send_notification", message="disk at 91%",
                       level="warning", channel="log")) == {
        "status": "sent", "channel": "log", "level": "warning"}


def test_webhook_notification_is_retried_until_it_goes_through(stack, webhook):
    webhook.script(503, 503, 200)
    result = run(stack, "tasks.simple_tasks.send_notification", message="model retrained",
                 level="info", channel="webhook")
    assert outcome(result)["http_status"] == 200
    assert [request["message"] for request in webhook.requests] == ["model retrained"] * 3
    assert result.retries == 2


def test_a_transient_failure_gives_up_after_three_retries(stack, webhook):
    webhook.script(503, 503, 503, 503, 503)
    result = run(stack, "tasks.simple_tasks.send_notification", message="x", channel="webhook")
    with pytest.raises(TransientError, match="HTTP 503"):
        outcome(result)
    assert len(webhook.requests) == 4
    assert result.retries == 3


def test_cleanup_removes_old_outputs_and_unexpiring_results(stack):
    old, recent = stack.processed / "old-output.csv", stack.processed / "recent-output.csv"
    old.write_text("a\n1\n")
    recent.write_text("a\n1\n")
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old, (ten_days_ago, ten_days_ago))
    backend = stack.backend_redis()
    for key, age in (("celery-task-meta-ancient", 10), ("celery-task-meta-young", 1)):
        done = (datetime.now(UTC) - timedelta(days=age)).isoformat()
        backend.set(key, json.dumps({"status": "SUCCESS", "date_done": done}))
    report = outcome(run(stack, "tasks.simple_tasks.cleanup_old_results", older_than_days=7))
    assert str(old) in report["removed_files"] and str(recent) not in report["removed_files"]
    assert report["removed_results"] == 1
    assert not old.exists() and recent.exists()
    assert (backend.exists("celery-task-meta-ancient"),
            backend.exists("celery-task-meta-young")) == (0, 1)


def test_ray_lives_in_the_pool_children_never_in_the_prefork_parent(stack, training_csv):
    outcome(run(stack, "tasks.ml_tasks.hyperparameter_search", param_grid=[{"max_depth": 2}],
                dataset_path=str(training_csv)))
    parent = stack.workers["ml"].pid

    def loads_ray(pid: int) -> bool:
        return "_raylet" in (Path(f"/proc/{pid}/maps")).read_text()

    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    assert not loads_ray(parent)
    assert any(loads_ray(int(child)) for child in children)
