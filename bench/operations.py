"""Operations: how long the project's playbooks take on the local stack's container.

A cold site.yml converge on a fresh container, then idempotent reruns (and what they
report changed), scale.yml up and back, and code-only updates (deploy-code.yml after a
change in the task code: a copy of files/tasks with one line added, deployed with
celery_app_source_dir, then the original again). Each is compared with the cold converge.
Then the same cold converge and reruns on the docker runtime (Molecule's docker scenario),
each compared with the systemd runtime's.
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


DOCKER_SCENARIO = "docker"
DOCKER_IMAGES = "celery-ray-stack/runtime"


def cold_converge(scenario: str = local_stack.SCENARIO) -> float:
    """Recreate the scenario's container (not timed), then time site.yml on it."""
    local_stack.molecule("destroy", scenario)
    local_stack.molecule("create", scenario)
    local_stack.molecule("prepare", scenario)
    seconds, _ = local_stack.playbook("site.yml", scenario=scenario)
    return seconds


def docker_runtime(repetitions: int) -> tuple[Samples, Samples]:
    """The docker runtime (Molecule's docker scenario): a cold converge that builds the stack
    image (the images of earlier runs removed first), then idempotent reruns. The scenario's
    containers are removed at the end."""
    images = local_stack.docker("images", "--quiet", DOCKER_IMAGES, capture_output=True,
                                text=True).stdout.split()
    local_stack.molecule("destroy", DOCKER_SCENARIO)
    if images:
        local_stack.docker("rmi", "--force", *images, capture_output=True)
    cold = Samples([cold_converge(DOCKER_SCENARIO)])
    reruns = Samples()
    for _ in range(repetitions):
        seconds, _ = local_stack.playbook("site.yml", scenario=DOCKER_SCENARIO)
        reruns.add(seconds)
    local_stack.molecule("destroy", DOCKER_SCENARIO)
    return cold, reruns


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
    docker_cold, docker_reruns = docker_runtime(repetitions)
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
        Measure("operations", "docker runtime: cold converge (image built) vs systemd's", "s",
                docker_cold, cold, "none: reported"),
        Measure("operations", "docker runtime: idempotent rerun vs systemd's", "s",
                docker_reruns, reruns, "none: reported"),
    ]
    benchmark.notes.append(f"cold converge {cold.describe(0)} s; idempotent reruns reported "
                           f"changed={changed}")
    return benchmark
