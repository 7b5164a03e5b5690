"""Stack overhead: the deployed `default` worker of the local stack against a bare
``celery worker`` with the same Celery, Redis and concurrency (bench/overhead_probe.py,
run inside the container with the deployed virtualenv, so both are measured on the
container's own network from the same client).

Measured as deployed (task events on, for Flower's task views), then (full sizes only)
redeployed with ``celery_ray_task_events=false`` and measured again, then deployed as
before.
"""

import json

from bench import local_stack
from bench.measure import Samples
from bench.report import Benchmark, Measure

PROBE = local_stack.PROJECT / "bench/overhead_probe.py"
PROBE_DIR = "/tmp/celery-ray-bench"
VENV_PYTHON = "/opt/celery-ray/venv/bin/python"
EVENTS_OFF = "celery_ray_task_events=false"


def probe(calls: int, tasks: int, repetitions: int) -> dict:
    container = local_stack.CONTAINER
    local_stack.docker("exec", container, "mkdir", "-p", PROBE_DIR)
    local_stack.docker("cp", str(PROBE), f"{container}:{PROBE_DIR}/overhead_probe.py")
    completed = local_stack.docker(
        "exec", "--workdir", PROBE_DIR, container, VENV_PYTHON, "overhead_probe.py",
        str(calls), str(tasks), str(repetitions), capture_output=True, text=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measures(measured: dict, suffix: str) -> list[Measure]:
    latency = {key: {side: Samples([value]) for side, value in measured[key].items()}
               for key in ("p50_ms", "p99_ms")}
    rates = {side: Samples(values) for side, values in measured["tasks_per_second"].items()}
    return [
        Measure("stack_overhead", f"ping round trip p50{suffix}", "ms",
                latency["p50_ms"]["deployed"], latency["p50_ms"]["bare"],
                "<= 1.10x bare Celery", 1.10),
        Measure("stack_overhead", f"ping round trip p99{suffix}", "ms",
                latency["p99_ms"]["deployed"], latency["p99_ms"]["bare"],
                "<= 1.25x bare Celery", 1.25),
        Measure("stack_overhead", f"fire-and-forget throughput{suffix}", "tasks/s",
                rates["deployed"], rates["bare"], ">= 0.90x bare Celery", 0.90,
                digits=0, at_least=True),
    ]


def run(calls: int, tasks: int, repetitions: int, with_events_off: bool) -> Benchmark:
    if not local_stack.running():
        raise SystemExit(f"the local stack ({local_stack.CONTAINER}) is not running: "
                         "make up (or run the operations benchmark first)")
    as_deployed = probe(calls, tasks, repetitions)
    benchmark = Benchmark(
        "stack_overhead",
        f"tasks.simple_tasks.ping through the deployed default worker (concurrency "
        f"{as_deployed['concurrency']}) against a bare celery worker, same Celery, Redis "
        f"and concurrency, client inside {local_stack.CONTAINER}; {calls:,} round trips, "
        f"{repetitions} x {tasks:,} fire-and-forget tasks; as deployed"
        + (f", then with -e {EVENTS_OFF}" if with_events_off else ""),
    )
    benchmark.measures += measures(as_deployed, "")
    if with_events_off:
        local_stack.playbook("site.yml", "-e", EVENTS_OFF)
        try:
            benchmark.measures += measures(probe(calls, tasks, repetitions),
                                           " (task events off)")
        finally:
            local_stack.playbook("site.yml")
    return benchmark
