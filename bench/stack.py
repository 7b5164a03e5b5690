"""The stack the task benchmarks run through: redis-server, a Ray head (2 CPUs, token
auth, a temp dir of the run's own, no Ray Client server: the ray_head role's default) and
one Celery worker per queue, started by this process inside the run's own network and PID
namespace (bench.__main__ runs bench.task_bench in it) with the launcher the unit tests
use too (testbed.py), and stopped by PID.

Tasks go through real Celery workers, as users send them: the measured time is the
client's, from send_task to the result, with the worker's Ray connection already made
(the workers are warmed up before anything is timed).
"""

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.client import make_client

from bench.measure import process_tree
from testbed import Testbed, in_own_network_namespace, ray_token_env

RAY_CPUS = 2
RAY_OBJECT_STORE_BYTES = 2 * 1024**3
# (hostname prefix, queues, concurrency): one task at a time per queue, like the spec's ml
# worker; the Ray cluster gets both cores.
WORKERS = (("ml", "ml", 1), ("data", "data", 1))
RESULT_TIMEOUT_SECONDS = 3600


class Stack:
    """Use as a context manager; ``data_root`` is the one directory tasks may touch."""

    def __init__(self, data_root: Path):
        if not in_own_network_namespace():
            raise SystemExit("the benchmark starts Ray: run it through bench/run.sh "
                             "(its own loopback-only network and PID namespace)")
        self.data_root = data_root
        self.base = Path(tempfile.mkdtemp(prefix="bench-stack-"))
        config = self.base / "tasks.json"
        config.write_text(json.dumps({
            "models_dir": str(data_root / "models"), "inbox_dir": str(data_root / "new"),
            "processed_dir": str(data_root / "processed"),
        }))
        # RAY_worker_niceness: Ray starts its workers 15 nice levels below the raylet; on
        # a machine shared with other work that would starve the project's side of the
        # comparison against the alternative, which runs at the driver's own niceness.
        env = dict(os.environ, **ray_token_env(self.base), RAY_worker_niceness="0",
                   TASKS_DATA_ROOTS=str(data_root), TASKS_CONFIG_FILE=str(config))
        self.testbed = Testbed(self.base, env)

    def __enter__(self) -> "Stack":
        try:
            self._start()
        except BaseException:
            self.stop(keep_logs=True)
            raise
        return self

    def __exit__(self, exc_type, *exc_info) -> None:
        self.stop(keep_logs=exc_type is not None)

    def _start(self) -> None:
        self.testbed.start(num_cpus=RAY_CPUS, object_store_bytes=RAY_OBJECT_STORE_BYTES,
                           log_dir=str(self.base))
        self.client = make_client(self.testbed.broker_url, self.testbed.backend_url)
        self.testbed.start_workers(WORKERS, self.client)

    def processes_of(self, worker: str) -> Callable[[], list[int]]:
        """The processes a task run by `worker` goes through: that Celery worker (main
        process and pool), Redis, and the Ray head's daemons and workers (not the
        `ray start --block` process that waits on them). The other queues' workers and
        this driver are left out."""
        testbed = self.testbed

        def pids() -> list[int]:
            return [*process_tree(testbed.workers[worker].pid),
                    *process_tree(testbed.redis.process.pid),
                    *process_tree(testbed.ray_head.process.pid)[1:]]

        return pids

    def run(self, task: str, **kwargs: Any) -> tuple[float, dict]:
        """Send a task by name (routed to its queue) and wait: (seconds, result)."""
        start = time.perf_counter()
        result = self.client.send_task(task, kwargs=kwargs).get(timeout=RESULT_TIMEOUT_SECONDS)
        return time.perf_counter() - start, result

    def stop(self, keep_logs: bool = False) -> None:
        """Warm shutdown of the workers (SIGTERM), then Ray, then Redis."""
        self.testbed.stop()
        if keep_logs:
            print(f"the stack's logs are kept in {self.base}", file=sys.stderr)
        else:
            shutil.rmtree(self.base, ignore_errors=True)
