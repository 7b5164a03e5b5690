"""The processes the unit tests (tests/conftest.py) and the task benchmarks (bench/stack.py)
start, started and stopped the same way: redis-server, a Ray head with token auth, and
Celery workers of the task package.

Both callers run inside a network and PID namespace of their own (tests/run-in-netns.sh,
bench/__main__.py): everything here listens on 127.0.0.1 only, and is stopped by PID.
"""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import redis

ROOT = Path(__file__).resolve().parent
PACKAGE_PARENT = ROOT / "files"
BIN = Path(sys.executable).parent
# The ray_head role's `ray start`: without the Ray Client server, as deployed by default.
RAY_START_WITHOUT_CLIENT = ROOT / "roles" / "ray_node" / "files" / "ray_start_without_client.py"
STARTUP_DEADLINE_SECONDS = 180
RAY_START_ATTEMPTS = 3
# systemd's stop: SIGTERM, then SIGKILL to what is still up after this long.
STOP_DEADLINE_SECONDS = 60


def in_own_network_namespace() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition: Callable[[], Any], what: str,
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


def log_file(directory: Path | str, name: str) -> BinaryIO:
    """``<directory>/<name>.log``, appended to (a restarted process adds to its log)."""
    return open(Path(directory) / f"{name}.log", "ab")


def ray_token_env(directory: Path) -> dict[str, str]:
    """Write a Ray auth token of the run's own into directory; the environment that makes
    the Ray head, the workers and the drivers use it."""
    token = directory / "ray-token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_USAGE_STATS_ENABLED": "0"}


@dataclass
class RedisServer:
    """redis-server on 127.0.0.1 with a password, saving nothing to disk; logs in directory."""

    directory: Path
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        with log_file(self.directory, "redis") as log:
            self.process = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--requirepass", self.password, "--save", "", "--appendonly", "no",
                 "--dir", str(self.directory)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        wait_for(redis.Redis(port=self.port, password=self.password).ping, "redis-server")
        return self

    def url(self, db: int) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.process:
            self.process.terminate()
            self.process.wait()


@dataclass
class RayHead:
    """A Ray head started as the ray_head role's unit starts it: its
    ray_start_without_client.py, ``start --head --block``, without draining on SIGTERM. It
    runs in a process group of its own, so that it stops like the unit (SIGTERM to every
    process, SIGKILL at the deadline) and a test can restart it or kill its raylet.

    On a loaded machine the raylet can miss `ray start`'s fixed 30 s registration
    deadline: a start that fails is cleaned up and tried again, RAY_START_ATTEMPTS times.
    """

    env: dict[str, str]
    num_cpus: int = 2
    object_store_bytes: int = 400 * 1024**2
    # Unix socket paths under Ray's temp dir must stay short: keep it directly in /tmp.
    temp_dir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    # Where head.log (`ray start`'s output) goes: the temp dir unless named.
    log_dir: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return Path(self.log_dir or self.temp_dir) / "head.log"

    def start(self) -> None:
        for attempt in range(1, RAY_START_ATTEMPTS + 1):
            if self._started():
                return
            self.stop()
            print(f"ray start failed (attempt {attempt} of {RAY_START_ATTEMPTS}); "
                  f"see {self.log}", file=sys.stderr)
        raise RuntimeError(f"the Ray head did not start; see {self.log}")

    def _started(self) -> bool:
        """Run `ray start`; True once it reports the head up, False if it gave up."""
        # `ray start` writes the head's address there once the head is up.
        address_file = Path(self.temp_dir) / "ray_current_cluster"
        address_file.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(RAY_START_WITHOUT_CLIENT), "start", "--head", "--block",
                 f"--port={self.port}", f"--num-cpus={self.num_cpus}",
                 "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp_dir}",
                 "--include-dashboard=false", "--disable-usage-stats",
                 f"--object-store-memory={self.object_store_bytes}"],
                # As the ray_head role starts it: no drain on SIGTERM (ray_head_drain_seconds).
                env={**self.env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"},
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_for(lambda: address_file.exists() or self.process.poll() is not None,
                 "the Ray head")
        return self.process.poll() is None

    def processes(self) -> list[int]:
        """The processes of the head's process group: `ray start` and Ray's daemons."""
        # `ray start` exits as a zombie, still in its group, until it is reaped here.
        self.process.poll()
        found = subprocess.run(["pgrep", "-g", str(self.process.pid)], capture_output=True,
                               text=True, check=False)
        return [int(pid) for pid in found.stdout.split()]

    def stop(self) -> None:
        """SIGTERM to every process of the head, SIGKILL to what is left at the deadline."""
        if self.process is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_DEADLINE_SECONDS
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

    def remove(self) -> None:
        """Stop the head and remove its temp dir."""
        self.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_worker(name: str, queues: str, concurrency: int, *, env: dict[str, str],
                 log_dir: Path, client) -> subprocess.Popen:
    """``celery -A tasks worker`` on the queues (comma-separated), as NAME@<host>, logging
    to log_dir; returns once it answers a ping through the broker of client (a Celery
    app)."""
    with log_file(log_dir, f"worker-{name}") as log:
        process = subprocess.Popen(
            [str(BIN / "celery"), "-A", "tasks", "worker", f"--queues={queues}",
             f"--concurrency={concurrency}", f"--hostname={name}@%h", "--loglevel=INFO"],
            cwd=PACKAGE_PARENT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    hostname = f"{name}@{socket.gethostname()}"
    wait_for(lambda: client.control.ping(destination=[hostname], timeout=1),
             f"Celery worker {hostname}")
    return process


def stop_workers(*processes: subprocess.Popen) -> None:
    """Warm shutdown (SIGTERM), all at once; kill what is still up after the deadline."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=STOP_DEADLINE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Testbed:
    """Redis and a Ray head for one run, and the Celery workers started on them, all
    stopped together. env is the workers' environment: start() adds the broker (Redis
    database 0), the result backend (1) and the Ray head's address to it. Logs go to base.
    """

    base: Path
    env: dict[str, str]
    redis: RedisServer | None = None
    ray_head: RayHead | None = None
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def broker_url(self) -> str:
        return self.redis.url(0)

    @property
    def backend_url(self) -> str:
        return self.redis.url(1)

    def start(self, **ray_head_options: Any) -> None:
        """Redis, then the Ray head (options: those of RayHead)."""
        self.redis = RedisServer(self.base).start()
        self.ray_head = RayHead(self.env, **ray_head_options)
        self.ray_head.start()
        self.env.update(CELERY_BROKER_URL=self.broker_url,
                        CELERY_RESULT_BACKEND=self.backend_url,
                        RAY_ADDRESS=self.ray_head.address)

    def start_workers(self, workers: Iterable[tuple[str, str, int]], client) -> None:
        """One worker per (name, queues, concurrency), each up before the next starts."""
        for name, queues, concurrency in workers:
            self.workers[name] = start_worker(name, queues, concurrency, env=self.env,
                                              log_dir=self.base, client=client)

    def stop(self) -> None:
        """The workers first (their running tasks finish), then the Ray head (its temp
        dir removed), then Redis."""
        stop_workers(*self.workers.values())
        if self.ray_head:
            self.ray_head.remove()
        if self.redis:
            self.redis.stop()
