"""A real stack for the task tests: redis-server, a Ray head (2 CPUs, token auth) and one
Celery worker per queue, all started once per session inside the run's own network and
PID namespace (tests/run-in-netns.sh), and all stopped at the end of the session.

Tests that need no Redis or Ray (config, paths) run anywhere; the others skip with a
hint when pytest was not started through tests/run-in-netns.sh.
"""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
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
PACKAGE_PARENT = ROOT / "files"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(PACKAGE_PARENT))

from tasks.client import make_client  # noqa: E402
from tasks.raycluster import ensure_ray  # noqa: E402
from tasks.settings import settings  # noqa: E402

WORKERS = (("ml", "ml", 1), ("data", "data", 2), ("default", "default,celery", 2))
STARTUP_DEADLINE_SECONDS = 180
RESULT_TIMEOUT_SECONDS = 300


def in_own_network_namespace() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition: Callable[[], bool], what: str,
             deadline_seconds: float = STARTUP_DEADLINE_SECONDS) -> None:
    """Poll until condition() holds; a startup that never happens fails the run."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # not up yet: refused connections, no reply
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not come up within {deadline_seconds} s")


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
        log = open(self.base / f"worker-{name}.log", "ab")  # noqa: SIM115 (lives with the worker)
        process = subprocess.Popen(
            [str(BIN / "celery"), "-A", "tasks", "worker", f"--queues={queues}",
             f"--concurrency={concurrency}", f"--hostname={name}@%h", "--loglevel=INFO"],
            cwd=PACKAGE_PARENT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        hostname = f"{name}@{socket.gethostname()}"
        wait_for(lambda: self.client.control.ping(destination=[hostname], timeout=1),
                 f"Celery worker {hostname}")
        return process

    @staticmethod
    def stop_workers(*processes: subprocess.Popen) -> None:
        """Warm shutdown (SIGTERM), all at once; kill what is still up after a minute."""
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def broker_redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.broker_url)

    def backend_redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.backend_url)


@pytest.fixture(scope="session")
def webhook():
    hook = Webhook()
    yield hook
    hook.server.shutdown()


def _start_redis(base: Path, password: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--requirepass", password, "--save", "", "--appendonly", "no", "--dir", str(base)],
        stdout=open(base / "redis.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )
    client = redis.Redis(port=port, password=password)
    wait_for(client.ping, "redis-server")
    return process, port


def pytest_configure(config):
    """Ray reads its auth settings once, when first imported (test modules import it at
    collection): give this process the run's own token before that."""
    token_dir = Path(tempfile.mkdtemp(prefix="tasks-tests-"))
    token = token_dir / "ray-token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    config.ray_token_dir = token_dir
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                       "RAY_USAGE_STATS_ENABLED": "0"})


def pytest_unconfigure(config):
    shutil.rmtree(config.ray_token_dir, ignore_errors=True)


@dataclass
class RayHead:
    """A Ray head started as its systemd unit starts it (``ray start --head --block``), in a
    process group of its own: a test can restart it, or kill its raylet, like a fault."""

    env: dict[str, str]
    # Unix socket paths under Ray's temp dir must stay short: keep it directly in /tmp.
    temp_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(Path(self.temp_dir) / "head.log", "ab")  # noqa: SIM115 (lives with the head)
        self.process = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", f"--port={self.port}",
             "--num-cpus=2", "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp_dir}",
             "--include-dashboard=false", "--disable-usage-stats",
             f"--object-store-memory={400 * 1024 * 1024}"],
            # As the ray_head role starts it: no drain on SIGTERM (ray_head_drain_seconds).
            env={**self.env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        raylet = Path(self.temp_dir) / "session_latest" / "sockets" / "raylet"
        wait_for(lambda: accepts(raylet), "the Ray head's raylet")

    def processes(self) -> list[int]:
        found = subprocess.run(["pgrep", "-g", str(self.process.pid)], capture_output=True,
                               text=True, check=False)
        return [int(pid) for pid in found.stdout.split()]

    def stop(self, deadline_seconds: float = 60) -> None:
        """SIGTERM to every process of the head, SIGKILL to what is left at the deadline
        (systemd's stop)."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + deadline_seconds
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.5)
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill_raylet(self) -> None:
        """SIGKILL to the raylet alone: a crash, no clean stop."""
        found = subprocess.run(["pgrep", "-g", str(self.process.pid), "-f", "raylet/raylet"],
                               capture_output=True, text=True, check=True)
        os.kill(int(found.stdout.split()[0]), signal.SIGKILL)


def accepts(unix_socket: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(unix_socket))
    return True


@pytest.fixture(scope="session")
def stack(tmp_path_factory, webhook):
    if not in_own_network_namespace():
        pytest.skip("needs the run's own network namespace: run tests/run-in-netns.sh")
    base = tmp_path_factory.mktemp("stack")
    datasets, models = base / "datasets", base / "models"
    inbox, processed = datasets / "new", datasets / "processed"
    for directory in (datasets, models, inbox, processed):
        directory.mkdir(parents=True)
    password = secrets.token_hex(16)
    redis_process, redis_port = _start_redis(base, password)
    env = dict(os.environ)
    ray_head = RayHead(env)
    workers = {}
    try:
        ray_head.start()
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
        redis_url = f"redis://:{password}@127.0.0.1:{redis_port}"
        env.update({
            "CELERY_BROKER_URL": f"{redis_url}/0", "CELERY_RESULT_BACKEND": f"{redis_url}/1",
            "RAY_ADDRESS": f"127.0.0.1:{ray_head.port}",
            "TASKS_DATA_ROOTS": f"{datasets}:{models}",
            "TASKS_CONFIG_FILE": str(base / "tasks.json"),
        })
        os.environ.update(env)
        settings.cache_clear()
        running = Stack(base=base, env=env, broker_url=f"{redis_url}/0",
                        backend_url=f"{redis_url}/1", datasets=datasets, models=models,
                        inbox=inbox, processed=processed, webhook=webhook, workers=workers)
        for name, queues, concurrency in WORKERS:
            workers[name] = running.start_worker(name, queues, concurrency)
        yield running
    finally:
        Stack.stop_workers(*workers.values())
        if ray_head.process:
            ray_head.stop()
        redis_process.terminate()
        redis_process.wait()
        shutil.rmtree(ray_head.temp_dir, ignore_errors=True)


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
