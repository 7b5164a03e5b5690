"""The rest of the spec's tasks, sent from this controller by tasks.client.make_client.

The documented client routes each task to its module's queue without queue=.
"""

import uuid

from celery.result import AsyncResult
from scenario import (
    DEADLINE_SECONDS,
    NODE_ADDRESS,
    SETTINGS,
    TRAINED_MODEL,
    assert_model_file,
    csv_lines,
    rows_at_or_above,
    wait_for,
    worker_name,
)

INBOX = SETTINGS["celery_app_inbox_dir"]
PROCESSED = SETTINGS["celery_app_processed_dir"]
MODELS = SETTINGS["celery_app_models_dir"]


def as_celery(container, command):
    container.check_output("runuser -u celery -- sh -c %s", command)


def children_results(client, scheduled):
    return [AsyncResult(child["task_id"], app=client).get(timeout=DEADLINE_SECONDS)
            for child in scheduled]


def test_ping_is_routed_to_the_default_worker(client):
    result = client.send_task("tasks.simple_tasks.ping")
    assert result.get(timeout=DEADLINE_SECONDS)["status"] == "pong"
    assert (result.queue, result.worker) == ("default", worker_name("default"))


def test_distributed_training_is_routed_to_the_ml_worker(trained_model, container):
    result, training = trained_model
    assert training["model_path"] == TRAINED_MODEL
    assert 0 <= training["avg_score"] <= 1
    assert 0 <= training["score"] <= 1
    assert training["num_partitions"] == 4
    assert_model_file(container, TRAINED_MODEL)
    assert (result.queue, result.worker) == ("ml", worker_name("ml"))


def test_retrain_models_schedules_a_training_per_configured_model(client, container):
    result = client.send_task("tasks.ml_tasks.retrain_models")
    retrain = result.get(timeout=DEADLINE_SECONDS)
    configured = [model["name"] for model in SETTINGS["celery_app_retrain_models"]]
    assert retrain["status"] == "scheduled"
    assert [model["model"] for model in retrain["models"]] == configured
    trainings = children_results(client, retrain["models"])
    assert [training["model_path"] for training in trainings] == [
        f"{MODELS}/{name}.pkl" for name in configured
    ]
    for training in trainings:
        assert_model_file(container, training["model_path"])
    assert result.worker == worker_name("ml")


def test_process_new_data_filters_each_new_file(client, container):
    name = f"transactions-{uuid.uuid4().hex[:8]}.csv"
    as_celery(container, f"cp /datasets/raw.csv {INBOX}/{name}")
    result = client.send_task("tasks.data_tasks.process_new_data")
    scheduled = result.get(timeout=DEADLINE_SECONDS)
    assert scheduled["status"] == "scheduled"
    assert name in [entry["file"] for entry in scheduled["files"]]
    processed = dict(zip([entry["file"] for entry in scheduled["files"]],
                         children_results(client, scheduled["files"]), strict=True))
    kept = rows_at_or_above(container, "/datasets/raw.csv", "amount", 100)
    assert processed[name]["rows_written"] == len(kept)
    assert csv_lines(container, f"{PROCESSED}/{name}")[1:] == kept
    assert not container.file(f"{INBOX}/{name}").exists
    assert result.worker == worker_name("data")


def test_check_cluster_health_sees_the_ray_head(client):
    health = client.send_task("tasks.simple_tasks.check_cluster_health").get(
        timeout=DEADLINE_SECONDS)
    assert health["status"] == "healthy"
    assert health["ray_address"] == f"{NODE_ADDRESS}:{SETTINGS['celery_ray_head_port']}"
    assert health["alive_nodes"] == len(health["nodes"]) == 1
    assert health["total_cpus"] > 0


def test_send_notification_reaches_the_worker_log(client, container):
    message = f"end-to-end notification {uuid.uuid4()}"
    result = client.send_task("tasks.simple_tasks.send_notification",
                              kwargs={"message": message, "level": "warning"})
    assert result.get(timeout=DEADLINE_SECONDS) == {"status": "sent", "channel": "log",
                                                    "level": "warning"}
    wait_for(lambda: f"notification: {message}" in container.check_output(
        "journalctl --no-pager -o cat -u celery-worker@default.service"),
        "the notification in the default worker's journal")


def test_cleanup_old_results_removes_only_old_outputs(client, container):
    old = f"{PROCESSED}/old-{uuid.uuid4().hex[:8]}.csv"
    fresh = f"{PROCESSED}/fresh-{uuid.uuid4().hex[:8]}.csv"
    as_celery(container, f"cp /datasets/raw.csv {old}")
    as_celery(container, f"touch -d '10 days ago' {old}")
    as_celery(container, f"cp /datasets/raw.csv {fresh}")
    result = client.send_task("tasks.simple_tasks.cleanup_old_results")
    cleanup = result.get(timeout=DEADLINE_SECONDS)
    assert cleanup["status"] == "completed"
    assert old in cleanup["removed_files"]
    assert fresh not in cleanup["removed_files"]
    assert not container.file(old).exists
    assert container.file(fresh).exists
    assert result.worker == worker_name("default")
