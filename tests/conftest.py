"""A real stack for the task tests: redis-server, a Ray head (2 CPUs, token auth) and one
Celery worker per queue, all started once per session inside the run's own network and
PID namespace (tests/run-in-netns.sh), and all stopped at the end of the session.

Tests that need no Redis or Ray (config, paths) run anywhere; the others skip with a
hint when pytest was not started through tests/run-in-netns.sh.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import redis
from celery import Celery
from sklearn.datasets import make_classification

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testbed import (  # noqa: E402
    PACKAGE_PARENT,
    Testbed,
    in_own_network_namespace,
    ray_token_env,
    start_worker,
)

sys.path.insert(0, str(PACKAGE_PARENT))

from tasks.client import make_client  # noqa: E402
from tasks.raycluster import ensure_ray  # noqa: E402
from tasks.settings import settings  # noqa: E402

WORKERS = (("ml", "ml", 1), ("data", "data", 2), ("default", "default,celery", 2))
RESULT_TIMEOUT_SECONDS = 300


def classification_frame(rows: int, seed: int = 0, features: int = 8) -> pd.DataFrame:
    values, labels = make_classification(
        n_samples=rows, n_features=features, n_informative=5, random_state=seed
    )
    frame = pd.DataFrame(values, columns=[f"f{index}" for index in range(features)])
    frame["target"] = labels
    return frame


def transactions_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """Rows with an `amount` around the spec's threshold of 100, exactly 100 included."""
    rng = np.random.default_rng(seed)
    amount = np.round(rng.uniform(0, 200, rows), 2)
    amount[::7] = 100.0
    amount[1::11] = 99.99
    return pd.DataFrame({
        "id": np.arange(rows),
        "customer": [f"c{index % 97}" for index in range(rows)],
        "amount": amount,
        "quantity": rng.integers(1, 10, rows),
    })


class Webhook:
    """A tiny HTTP server on 127.0.0.1 that answers with scripted status codes."""

    def __init__(self):
        self.requests: list[dict] = []
        self.statuses: deque[int] = deque()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.requests.append(json.loads(body))
                self.send_response(hook.statuses.popleft() if hook.statuses else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def script(self, *statuses: int) -> None:
        self.requests.clear()
        self.statuses = deque(statuses)


@dataclass
class Stack:
    base: Path
    env: dict[str, str]
    broker_url: str
    backend_url: str
    datasets: Path
    models: Path
    inbox: Path
    processed: Path
    webhook: Webhook
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    client: Celery = field(init=False)

    def __post_init__(self):
        self.client = make_client(self.broker_url, self.backend_url)

    def start_worker(self, name: str, queues: str, concurrency: int) -> subprocess.Popen:
        return start_worker(name, queues, concurrency, env=self.env, log_dir=self.base,
                            client=self.client)

    def broker_redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.broker_url)

    def backend_redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.backend_url)


@pytest.fixture(scope="session")
def webhook():
    hook = Webhook()
    yield hook
    hook.server.shutdown()


def pytest_configure(config):
    """Ray reads its auth settings once, when first imported (test modules import it at
    collection): give this process the run's own token before that."""
    token_dir = Path(tempfile.mkdtemp(prefix="tasks-tests-"))
    config.ray_token_dir = token_dir
    os.environ.update(ray_token_env(token_dir))


def pytest_unconfigure(config):
    shutil.rmtree(config.ray_token_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(tmp_path_factory, webhook):
    if not in_own_network_namespace():
        pytest.skip("needs the run's own network namespace: run tests/run-in-netns.sh")
    base = tmp_path_factory.mktemp("stack")
    datasets, models = base / "datasets", base / "models"
    inbox, processed = datasets / "new", datasets / "processed"
    for directory in (datasets, models, inbox, processed):
        directory.mkdir(parents=True)
    for name, rows, seed in (("stocks_latest", 400, 1), ("sentiment_latest", 400, 2)):
        classification_frame(rows, seed).to_csv(datasets / f"{name}.csv", index=False)
    config = {
        "inbox_dir": str(inbox), "processed_dir": str(processed), "models_dir": str(models),
        "webhook_url": webhook.url, "retry_backoff_seconds": 1,
        "retrain_models": [
            {"name": name, "dataset": str(datasets / f"{name}_latest.csv"),
             "model_config": {"n_estimators": 10, "max_depth": 5}}
            for name in ("stocks", "sentiment")
        ],
    }
    (base / "tasks.json").write_text(json.dumps(config))
    env = dict(os.environ, TASKS_DATA_ROOTS=f"{datasets}:{models}",
               TASKS_CONFIG_FILE=str(base / "tasks.json"))
    testbed = Testbed(base, env)
    try:
        testbed.start()
        os.environ.update(env)
        settings.cache_clear()
        running = Stack(base=base, env=env, broker_url=testbed.broker_url,
                        backend_url=testbed.backend_url, datasets=datasets, models=models,
                        inbox=inbox, processed=processed, webhook=webhook,
                        workers=testbed.workers)
        testbed.start_workers(WORKERS, running.client)
        yield running
    finally:
        testbed.stop()


@pytest.fixture(scope="session")
def ray_cluster(stack):
    """This test process connected to the stack's Ray, for the pure ML/data functions."""
    ray = ensure_ray()
    yield ray
    ray.shutdown()


@pytest.fixture
def fresh_settings():
    """Settings re-read from the (monkeypatched) environment, and restored afterwards."""
    settings.cache_clear()
    yield settings
    settings.cache_clear()
