"""Fixtures of the end-to-end tests: clients on this controller, the container, a model."""

import os
import sys
from pathlib import Path

import pytest
import redis
import testinfra
from celery import Celery
from scenario import (
    BACKEND_URL,
    BROKER_URL,
    CONTAINER,
    DEADLINE_SECONDS,
    PROJECT,
    TRAINED_MODEL,
)

sys.path.insert(0, str(PROJECT / "files"))

from run_summary import write_summary
from tasks.client import make_client

# The drills stop and restart Redis, Ray, the workers and the whole container: they run
# after every other test (pytest would otherwise go by file name), the alert drills first.
LAST_MODULES = ("test_alert_drills.py", "test_drills.py")


# CELERY_RAY_DRILLS=0 leaves them out: the Debian 13 run of the scenario (make
# molecule-default-trixie) checks the deployment on that release; the drills test Celery's
# and Ray's behaviour under faults, which the Debian 12 run covers, and would double the
# time of make test.
RUN_DRILLS = os.environ.get("CELERY_RAY_DRILLS", "1") != "0"


def pytest_collection_modifyitems(session, config, items):
    if not RUN_DRILLS:
        drills = [item for item in items if item.path.name in LAST_MODULES]
        config.hook.pytest_deselected(items=drills)
        items[:] = [item for item in items if item.path.name not in LAST_MODULES]
    items.sort(key=lambda item: LAST_MODULES.index(item.path.name) + 1
               if item.path.name in LAST_MODULES else 0)


def pytest_terminal_summary(terminalreporter):
    write_summary(terminalreporter)


def _redis_client(url: str):
    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def broker():
    """The broker (Redis db 0), read directly for queue lengths and unacked messages."""
    yield from _redis_client(BROKER_URL)


@pytest.fixture(scope="session")
def backend():
    """The result backend (Redis db 1), read directly to count finished tasks."""
    yield from _redis_client(BACKEND_URL)


@pytest.fixture(scope="session")
def container():
    """The converged container through `docker exec` (quicker than Ansible per command)."""
    return testinfra.get_host(f"docker://{CONTAINER}")


@pytest.fixture(scope="session")
def bare_client():
    """The spec's own client: no routes, no queues, Celery's defaults."""
    app = Celery(broker=BROKER_URL, backend=BACKEND_URL)
    yield app
    app.close()


@pytest.fixture(scope="session")
def client():
    """The documented client, tasks.client.make_client."""
    app = make_client(BROKER_URL, BACKEND_URL)
    yield app
    app.close()


@pytest.fixture(scope="session")
def trained_model(client):
    """The model the spec's batch prediction example reads, trained by distributed_training."""
    result = client.send_task("tasks.ml_tasks.distributed_training", kwargs={
        "model_config": {"n_estimators": 100, "max_depth": 20, "num_partitions": 4,
                         "name": Path(TRAINED_MODEL).stem},
        "dataset_path": "/datasets/training_data.csv",
    })
    return result, result.get(timeout=DEADLINE_SECONDS)
