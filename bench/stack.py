"""The stack the task benchmarks run through: redis-server, a Ray head (2 CPUs, token
auth, a temp dir of the run's own, no Ray Client server: the ray_head role's default) and
one Celery worker per queue, started by this process inside the run's own network and PID
namespace (bench.__main__ runs bench.tasks in it) and stopped by PID.

Tasks go through real Celery workers, as users send them: the measured time is the
client's, from send_task to the result, with the worker's Ray connection already made
(the workers are warmed up before anything is timed).
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
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from tasks.client import make_client

from bench.measure import not_started_by_me, process_tree

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_PARENT = ROOT / "files"
BIN = Path(sys.executable).parent
RAY_CPUS = 2
# The ray_head role's `ray start`: without the Ray Client server, as deployed by default.
RAY_START_WITHOUT_CLIENT = ROOT / "roles" / "ray_head" / "files" / "ray_start_without_client.py"
# (hostname prefix, queues, concurrency): one task at a time per queue, like the spec's ml
# worker; the Ray cluster gets both cores.
WORKERS = (("ml", "ml", 1), ("data", "data", 1))
STARTUP_DEADLINE_SECONDS = 180
RAY_START_ATTEMPTS = 3
RESULT_TIMEOUT_SECONDS = 3600


def in_own_network_namespace() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception:  # not up yet: refused connections, no reply
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not come up within {STARTUP_DEADLINE_SECONDS} s")


class Stack:
    """Use as a context manager; ``data_root`` is the one directory tasks may touch."""

    def __init__(self, data_root: Path):
        if not in_own_network_namespace():
            raise SystemExit("the benchmark starts Ray: run it through bench/run.sh "
                             "(its own loopback-only network and PID namespace)")
        self.data_root = data_root
        self.base = Path(tempfile.mkdtemp(prefix="bench-stack-"))
        # Unix socket paths under Ray's temp dir must stay short: keep it directly in /tmp.
        self.ray_temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        self.redis: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.ray_started = False
        token = self.base / "ray-token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        config = self.base / "tasks.json"
        config.write_text(json.dumps({
            "models_dir": str(data_root / "models"), "inbox_dir": str(data_root / "new"),
            "processed_dir": str(data_root / "processed"),
        }))
        # RAY_worker_niceness: Ray starts its workers 15 nice levels below the raylet; on
        # a machine shared with other work that would starve the project's side of the
        # comparison against the alternative, which runs at the driver's own niceness.
        self.env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
                        RAY_USAGE_STATS_ENABLED="0", RAY_worker_niceness="0",
                        TASKS_DATA_ROOTS=str(data_root), TASKS_CONFIG_FILE=str(config))

    def __enter__(self) -> "Stack":
        try:
            self._start()
        except BaseException:
            self.stop(keep_logs=True)
            raise
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        self.stop(keep_logs=exc_type is not None)

    def _log(self, name: str):
        return open(self.base / f"{name}.log", "ab")

    def _start(self) -> None:
        password = secrets.token_hex(16)
        redis_port = free_port()
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
             "--requirepass", password, "--save", "", "--appendonly", "no",
             "--dir", str(self.base)],
            stdout=self._log("redis"), stderr=subprocess.STDOUT,
        )
        wait_for(redis.Redis(port=redis_port, password=password).ping, "redis-server")
        ray_port = self._start_ray()
        url = f"redis://:{password}@127.0.0.1:{redis_port}"
        self.env.update(CELERY_BROKER_URL=f"{url}/0", CELERY_RESULT_BACKEND=f"{url}/1",
                        RAY_ADDRESS=f"127.0.0.1:{ray_port}")
        self.client = make_client(f"{url}/0", f"{url}/1")
        for name, queues, concurrency in WORKERS:
            self.workers[name] = subprocess.Popen(
                [str(BIN / "celery"), "-A", "tasks", "worker", f"--queues={queues}",
                 f"--concurrency={concurrency}", f"--hostname={name}@%h", "--loglevel=INFO"],
                cwd=PACKAGE_PARENT, env=self.env, stdout=self._log(f"worker-{name}"),
                stderr=subprocess.STDOUT,
            )
            hostname = f"{name}@{socket.gethostname()}"
            wait_for(lambda host=hostname: self.client.control.ping([host], timeout=1),
                     f"Celery worker {hostname}")

    def _start_ray(self) -> int:
        """Start the Ray head; on a loaded machine its raylet can miss `ray start`'s fixed
        30 s registration deadline, so a failed start is cleaned up and tried again."""
        self.ray_started = True
        for attempt in range(1, RAY_START_ATTEMPTS + 1):
            port = free_port()
            started = subprocess.run(
                [sys.executable, str(RAY_START_WITHOUT_CLIENT), "start", "--head",
                 f"--port={port}", f"--num-cpus={RAY_CPUS}", "--node-ip-address=127.0.0.1",
                 f"--temp-dir={self.ray_temp}", "--include-dashboard=false",
                 "--disable-usage-stats", f"--object-store-memory={2 * 1024**3}"],
                env=self.env, check=False, stdout=self._log("ray"), stderr=subprocess.STDOUT,
            )
            if started.returncode == 0:
                return port
            self._stop_ray()
            print(f"ray start failed (attempt {attempt} of {RAY_START_ATTEMPTS}); "
                  f"see {self.base / 'ray.log'}", file=sys.stderr)
        raise RuntimeError(f"the Ray head did not start; see {self.base / 'ray.log'}")

    def _stop_ray(self) -> None:
        # Only this PID namespace's Ray is visible to `ray stop`.
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=self.env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def processes_of(self, worker: str) -> Callable[[], list[int]]:
        """The processes a task run by `worker` goes through: that Celery worker (main
        process and pool), Redis, and the Ray head's daemons and workers. The other
        queues' workers and this driver are left out."""
        def pids() -> list[int]:
            return [*process_tree(self.workers[worker].pid), *process_tree(self.redis.pid),
                    *not_started_by_me()]

        return pids

    def run(self, task: str, **kwargs: Any) -> tuple[float, dict]:
        """Send a task by name (routed to its queue) and wait: (seconds, result)."""
        start = time.perf_counter()
        result = self.client.send_task(task, kwargs=kwargs).get(timeout=RESULT_TIMEOUT_SECONDS)
        return time.perf_counter() - start, result

    def stop(self, keep_logs: bool = False) -> None:
        """Warm shutdown of the workers (SIGTERM), then Ray, then Redis."""
        for process in self.workers.values():
            process.send_signal(signal.SIGTERM)
        for process in self.workers.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.ray_started:
            self._stop_ray()
        if self.redis:
            self.redis.terminate()
            self.redis.wait()
        shutil.rmtree(self.ray_temp, ignore_errors=True)
        if keep_logs:
            print(f"the stack's logs are kept in {self.base}", file=sys.stderr)
        else:
            shutil.rmtree(self.base, ignore_errors=True)
