"""Operations: how long the project's playbooks take on the local stack's container.

A cold site.yml converge on a fresh container, then idempotent reruns (and what they
report changed), scale.yml up and back, and code-only updates (deploy-code.yml after a
change in the task code: a copy of files/tasks with one line added, deployed with
celery_app_source_dir, then the original again). Each is compared with the cold converge.
"""

import shutil
import tempfile
from pathlib import Path

from bench import local_stack
from bench.measure import Samples
from bench.report import Benchmark, Measure

RERUN_BOUND_SECONDS = 60
SCALE_BOUND_SECONDS = 30
TASK_CODE = local_stack.PROJECT / "files/tasks"


def cold_converge() -> float:
    """Recreate the container (not timed), then time site.yml on it."""
    local_stack.molecule("destroy")
    local_stack.molecule("create")
    local_stack.molecule("prepare")
    seconds, _ = local_stack.playbook("site.yml")
    return seconds


def code_updates(repetitions: int) -> Samples:
    samples = Samples()
    with tempfile.TemporaryDirectory(prefix="bench-code-") as scratch:
        changed_code = Path(scratch) / "tasks"
        shutil.copytree(TASK_CODE, changed_code, ignore=shutil.ignore_patterns("__pycache__"))
        for repetition in range(repetitions):
            with open(changed_code / "simple_tasks.py", "a") as module:
                module.write(f"# code-only update {repetition} (bench/operations.py)\n")
            seconds, _ = local_stack.playbook("deploy-code.yml",
                                              "-e", f"celery_app_source_dir={changed_code}")
            samples.add(seconds)
            seconds, _ = local_stack.playbook("deploy-code.yml")
            samples.add(seconds)
    return samples


def run(repetitions: int) -> Benchmark:
    cold = Samples([cold_converge()])
    reruns, changed = Samples(), []
    for _ in range(repetitions):
        seconds, count = local_stack.playbook("site.yml")
        reruns.add(seconds)
        changed.append(count)
    scaling = Samples()
    for _ in range(repetitions):
        for size in ("4", "reset"):
            seconds, _ = local_stack.playbook("scale.yml", "-e", f"ml_concurrency={size}")
            scaling.add(seconds)
    updates = code_updates(repetitions)
    benchmark = Benchmark(
        "operations",
        f"playbooks on the local stack's container ({local_stack.CONTAINER}); alternative: "
        "a cold site.yml converge of a fresh container",
    )
    benchmark.measures += [
        Measure("operations", "idempotent site.yml rerun", "s", reruns, cold,
                f"changed=0 and <= {RERUN_BOUND_SECONDS} s",
                condition=set(changed) == {0} and reruns.median <= RERUN_BOUND_SECONDS),
        Measure("operations", "scale.yml -e ml_concurrency=4 (and =reset)", "s", scaling,
                cold, f"<= {SCALE_BOUND_SECONDS} s",
                condition=scaling.median <= SCALE_BOUND_SECONDS),
        Measure("operations", "code-only update (deploy-code.yml after a code change)", "s",
                updates, cold, "none: reported"),
    ]
    benchmark.notes.append(f"cold converge {cold.describe(0)} s; idempotent reruns reported "
                           f"changed={changed}")
    return benchmark
