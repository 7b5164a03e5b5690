"""playbooks/scale.yml, run from this controller: only the resized worker restarts."""

import pytest
from scenario import (
    CELERY_UNITS,
    DEADLINE_SECONDS,
    PROJECT,
    QUEUES,
    main_pid,
    pool_size,
    run_playbook,
    wait_for,
    wait_for_workers,
    worker_name,
)

ML_UNIT = "celery-worker@ml.service"
SCALED = 4


def ml_max_concurrency(client):
    """The ml worker's own answer: its pool's size."""
    stats = client.control.inspect(destination=[worker_name("ml")], timeout=10).stats() or {}
    return stats.get(worker_name("ml"), {}).get("pool", {}).get("max-concurrency")


@pytest.fixture(scope="module")
def scaled(container, client):
    """MainPIDs of the Celery units before `scale.yml -e ml_concurrency=4`; resets on exit."""
    before = {unit: main_pid(container, unit) for unit in CELERY_UNITS}
    run_playbook(PROJECT, "playbooks/scale.yml", "-e", f"ml_concurrency={SCALED}")
    yield before
    run_playbook(PROJECT, "playbooks/scale.yml", "-e", "ml_concurrency=reset")
    wait_for(lambda: pool_size(container, ML_UNIT) == QUEUES["ml"],
             f"the ml worker back at {QUEUES['ml']} processes")
    wait_for(lambda: ml_max_concurrency(client) == QUEUES["ml"],
             f"the ml worker reporting max-concurrency {QUEUES['ml']}")
    wait_for_workers(client)
    assert not container.file("/etc/celery-ray/scale/ml.env").exists


def test_the_ml_worker_runs_four_processes(scaled, container, client):
    wait_for(lambda: pool_size(container, ML_UNIT) == SCALED, f"{SCALED} ml pool processes")
    wait_for(lambda: ml_max_concurrency(client) == SCALED,
             f"the ml worker reporting max-concurrency {SCALED}")
    assert main_pid(container, ML_UNIT) != scaled[ML_UNIT]


def test_the_size_is_recorded_on_the_host(scaled, container):
    recorded = container.file("/etc/celery-ray/scale/ml.env").content_string
    assert f"CELERY_WORKER_CONCURRENCY={SCALED}" in recorded


@pytest.mark.parametrize("unit", [unit for unit in CELERY_UNITS if unit != ML_UNIT])
def test_the_other_services_kept_running(scaled, container, unit):
    assert main_pid(container, unit) == scaled[unit]


def test_the_scaled_worker_takes_ml_tasks(scaled, client):
    params = {"n_estimators": 10, "max_depth": 3}
    result = client.send_task("tasks.ml_tasks.hyperparameter_search", kwargs={
        "param_grid": [params], "dataset_path": "/datasets/training.csv",
    })
    assert result.get(timeout=DEADLINE_SECONDS)["best_params"] == params
    assert result.worker == worker_name("ml")
