"""The stack-overhead measurement, run inside the local stack's container with the
deployed virtualenv (bench/stack_overhead.py copies it there): the deployed `default`
worker against a bare ``celery worker`` this script starts with the same Celery, the same
Redis server (databases 2 and 3 instead of 0 and 1) and the same concurrency.

    python overhead_probe.py CALLS TASKS REPETITIONS   # prints one JSON object

Both are driven by the same plain Celery client. Round trips alternate between the two
in blocks, so that a burst of other load on the machine hits both alike. Throughput is
TASKS fire-and-forget sends, timed until the worker's own count of processed tasks has
grown by TASKS. The same file is the bare worker's app (``celery -A overhead_probe``).
"""

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis
from celery import Celery

ENV_FILE = Path("/etc/celery-ray/celery.env")
DEPLOYED = {"task": "tasks.simple_tasks.ping", "queue": "default", "prefix": "default@"}
BARE = {"task": "bare.ping", "queue": "bare", "prefix": "bare@"}
BLOCKS = 8
WARM_UP_CALLS = 50
REPLY_TIMEOUT_SECONDS = 30
STATS_POLL_SECONDS = 0.05

app = Celery("bare", broker=os.environ.get("BARE_BROKER_URL"),
             backend=os.environ.get("BARE_RESULT_BACKEND"))


@app.task(name=BARE["task"], bind=True)
def ping(self):
    return {"status": "pong", "worker": self.request.hostname}


def deployed_settings() -> dict[str, str]:
    settings = {}
    for line in ENV_FILE.read_text().splitlines():
        name, separator, value = line.partition("=")
        if separator and not line.startswith("#"):
            settings[name.strip()] = value.strip().strip('"')
    return settings


def with_database(url: str, database: int) -> str:
    return f"{url.rsplit('/', 1)[0]}/{database}"


def worker_named(client: Celery, prefix: str) -> str:
    deadline = time.monotonic() + REPLY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        for reply in client.control.ping(timeout=1):
            for hostname in reply:
                if hostname.startswith(prefix):
                    return hostname
    raise SystemExit(f"no worker named {prefix}... answered a ping")


def processed(client: Celery, hostname: str, task: str) -> int:
    stats = client.control.inspect([hostname], timeout=REPLY_TIMEOUT_SECONDS).stats()
    return stats[hostname]["total"].get(task, 0)


def round_trips(client: Celery, side: dict, calls: int) -> list[float]:
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        result = client.send_task(side["task"], queue=side["queue"])
        result.get(timeout=REPLY_TIMEOUT_SECONDS)
        seconds.append(time.perf_counter() - start)
        result.forget()
    return seconds


def throughput(client: Celery, side: dict, hostname: str, tasks: int) -> float:
    before = processed(client, hostname, side["task"])
    start = time.perf_counter()
    for _ in range(tasks):
        client.send_task(side["task"], queue=side["queue"], ignore_result=True)
    while processed(client, hostname, side["task"]) < before + tasks:
        time.sleep(STATS_POLL_SECONDS)
    return tasks / (time.perf_counter() - start)


def percentile(values: list[float], fraction: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[round(fraction * 1000) - 1]


def forget_databases(url: str, databases: tuple[int, ...]) -> None:
    """Delete the bare worker's keys (FLUSHDB is one of the commands the stack's Redis user
    may not run)."""
    for database in databases:
        connection = redis.Redis.from_url(with_database(url, database))
        for key in connection.scan_iter(count=1000):
            connection.delete(key)


def main(calls: int, tasks: int, repetitions: int) -> None:
    settings = deployed_settings()
    broker, backend = settings["CELERY_BROKER_URL"], settings["CELERY_RESULT_BACKEND"]
    bare_env = dict(os.environ, BARE_BROKER_URL=with_database(broker, 2),
                    BARE_RESULT_BACKEND=with_database(backend, 3))
    clients = {"deployed": Celery(broker=broker, backend=backend),
               "bare": Celery(broker=bare_env["BARE_BROKER_URL"],
                              backend=bare_env["BARE_RESULT_BACKEND"])}
    sides = {"deployed": DEPLOYED, "bare": BARE}
    deployed_worker = worker_named(clients["deployed"], DEPLOYED["prefix"])
    concurrency = (clients["deployed"].control.inspect([deployed_worker]).stats()
                   [deployed_worker]["pool"]["max-concurrency"])
    bare_process = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", Path(__file__).stem, "worker",
         f"--queues={BARE['queue']}", f"--concurrency={concurrency}",
         f"--hostname={BARE['prefix']}{socket.gethostname()}", "--loglevel=WARNING"],
        cwd=Path(__file__).parent, env=bare_env, stdout=subprocess.DEVNULL,
    )
    try:
        workers = {"deployed": deployed_worker,
                   "bare": worker_named(clients["bare"], BARE["prefix"])}
        for name, side in sides.items():
            round_trips(clients[name], side, WARM_UP_CALLS)
        latencies = {name: [] for name in sides}
        for block in range(BLOCKS):
            order = list(sides) if block % 2 == 0 else list(sides)[::-1]
            for name in order:
                latencies[name] += round_trips(clients[name], sides[name], calls // BLOCKS)
        rates = {name: [] for name in sides}
        for repetition in range(repetitions):
            order = list(sides) if repetition % 2 == 0 else list(sides)[::-1]
            for name in order:
                rates[name].append(throughput(clients[name], sides[name], workers[name], tasks))
    finally:
        bare_process.send_signal(signal.SIGTERM)
        bare_process.wait(timeout=60)
        forget_databases(broker, (2, 3))
    print(json.dumps({
        "concurrency": concurrency,
        "p50_ms": {name: 1000 * percentile(values, 0.50) for name, values in latencies.items()},
        "p99_ms": {name: 1000 * percentile(values, 0.99) for name, values in latencies.items()},
        "tasks_per_second": rates,
    }))


if __name__ == "__main__":
    main(*(int(argument) for argument in sys.argv[1:4]))
