"""What the default scenario's tests share: its settings, and helpers to wait and deploy."""

import csv
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis
from kombu.exceptions import OperationalError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from project_settings import (
    PROJECT,  # noqa: F401 (the tests import it from here)
    SETTINGS,
    read_secrets,
)

SECRETS = read_secrets()
QUEUES = {queue["name"]: queue["concurrency"] for queue in SETTINGS["celery_worker_queues"]}

# molecule.yml: the container's name (also its hostname) and fixed address.
CONTAINER = os.environ.get("CELERY_RAY_DEFAULT_CONTAINER", "celery-ray-default")
NODE_ADDRESS = os.environ.get("CELERY_RAY_DEFAULT_ADDRESS", "172.30.0.10")
# celery_ray_runtime of the scenario: the docker scenario sets it.
RUNTIME = os.environ.get("CELERY_RAY_RUNTIME", "systemd")
REDIS_PORT = SETTINGS["redis_port"]
# The stack's ACL user: Redis's default user, so the URL is the spec's own form.
REDIS_USER = SETTINGS["redis_user"]
assert REDIS_USER == "default", "the spec's client URL (redis://:PASSWORD@...) logs in as default"
REDIS_URL = f"redis://:{SECRETS['vault_redis_password']}@{NODE_ADDRESS}:{REDIS_PORT}"
BROKER_URL = f"{REDIS_URL}/0"
BACKEND_URL = f"{REDIS_URL}/1"
FLOWER_URL = f"http://{NODE_ADDRESS}:{SETTINGS['flower_port']}"
PROMETHEUS_URL = f"http://{NODE_ADDRESS}:{SETTINGS['monitoring_prometheus_port']}"
ALERTMANAGER_URL = f"http://{NODE_ADDRESS}:{SETTINGS['monitoring_alertmanager_port']}"
MONITORING_CREDENTIALS = (SETTINGS["monitoring_web_user"], SECRETS["vault_monitoring_web_password"])

WORKER_UNITS = [f"celery-worker@{name}.service" for name in QUEUES]
CELERY_UNITS = [*WORKER_UNITS, "celery-beat.service", "flower.service"]
REDIS_UNIT = "redis-server@celery.service"
STACK_UNITS = [REDIS_UNIT, "ray-head.service", *CELERY_UNITS]
MONITORING_UNITS = ["prometheus.service", "prometheus-alertmanager.service",
                    "prometheus-node-exporter.service", "prometheus-redis-exporter.service",
                    "celery-metrics.service"]

# The model the spec's batch prediction example reads (conftest.trained_model trains it).
TRAINED_MODEL = "/models/trained_model.pkl"

# Every wait below is for something to happen at all, not a speed requirement.
DEADLINE_SECONDS = 300


def worker_name(queue: str) -> str:
    return f"{queue}@{CONTAINER}"


def container_of(unit: str) -> str | None:
    """The docker runtime's running container of a unit, if any: the one its
    celery-ray-stack.unit label names (roles/celery_ray's container drop-in sets it)."""
    found = subprocess.run(
        ["docker", "ps", "--quiet", "--filter", f"label=celery-ray-stack.unit={unit}"],
        capture_output=True, text=True, check=True).stdout.split()
    assert len(found) <= 1, f"{unit}: {len(found)} running containers carry its label"
    return found[0] if found else None


def unit_of_cgroup(cgroup: str) -> str:
    """The unit a process belongs to, from its cgroup: on the docker runtime its container's
    (which the container's celery-ray-stack.unit label names)."""
    container_id = re.search(r"[0-9a-f]{64}", cgroup)
    if RUNTIME == "systemd" or container_id is None:
        return cgroup.rsplit("/", 1)[-1]
    return subprocess.run(
        ["docker", "inspect", "--format", '{{index .Config.Labels "celery-ray-stack.unit"}}',
         container_id.group()], capture_output=True, text=True, check=True).stdout.strip()


def main_pid(host, unit: str) -> int:
    """The service's main process: the unit's, or for a unit that runs its service in a
    container (the docker runtime's drop-in) the container's (the child of the container's
    init where it has one), as the host sees it; 0 while none runs."""
    shown = dict(line.split("=", 1) for line in host.check_output(
        f"systemctl show --property=MainPID,DropInPaths {unit}").splitlines())
    if "/container.conf" not in shown["DropInPaths"]:
        return int(shown["MainPID"])
    container = container_of(unit)
    if container is None:
        return 0  # between two containers, as MainPID is between two processes
    inspected = subprocess.run(["docker", "inspect", "--format", "{{.State.Pid}}", container],
                               capture_output=True, text=True, check=False).stdout.strip()
    if inspected in ("", "0"):
        return 0  # the container ended since, or has not started yet
    # The containers share the host container's PID namespace: NSpid's last entry is the
    # process's PID there.
    try:
        status = Path(f"/proc/{inspected}/status").read_text()
    except FileNotFoundError:
        return 0  # the container ended since
    pid = int(next(line for line in status.splitlines() if line.startswith("NSpid:")).split()[-1])
    if host.check_output(f"ps -o comm= -p {pid}") == "docker-init":
        return int(next(iter(host.run(f"pgrep -P {pid}").stdout.split()), 0))
    return pid


def main_pids(host, units=STACK_UNITS) -> dict[str, int]:
    return {unit: main_pid(host, unit) for unit in units}


def pool_size(host, unit: str) -> int:
    """Number of prefork pool processes: the children of the worker's main process."""
    return len(host.run(f"pgrep -P {main_pid(host, unit)}").stdout.split())


def wait_for(condition: Callable[[], bool], what: str,
             deadline_seconds: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {deadline_seconds} s")
        time.sleep(1)


def wait_for_workers(client) -> None:
    """Until every queue's worker answers a ping (after a deploy restarted them, or the
    broker: until it is back, the ping fails to connect)."""
    expected = {worker_name(queue) for queue in QUEUES}

    def answering() -> set[str]:
        try:
            return {name for reply in client.control.ping(timeout=5) for name in reply}
        except (OperationalError, redis.exceptions.ConnectionError):
            return set()

    wait_for(lambda: answering() >= expected, "every worker answering a ping")


def molecule_inventory() -> Path:
    """The inventory Molecule wrote for this scenario (with the linked group_vars/host_vars)."""
    inventory_file = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not inventory_file:
        raise RuntimeError("MOLECULE_INVENTORY_FILE is not set: run these tests with "
                           "`molecule verify -s default`")
    return Path(inventory_file).parent


def run_playbook(project: Path, playbook: str, *args: str, check: bool = True) -> str:
    """Run one of the project's playbooks against the scenario's container, never
    production; its output. check=False: a failing playbook is expected."""
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(project / "roles")}
    command = [str(Path(sys.executable).parent / "ansible-playbook"),
               "-i", str(molecule_inventory()), str(project / playbook), *args]
    completed = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True,
                               check=False)
    assert completed.returncode == 0 or not check, (
        f"{' '.join(command[2:])} failed:\n{completed.stdout[-4000:]}\n{completed.stderr[-2000:]}"
    )
    return completed.stdout


def csv_lines(container, path):
    return container.file(path).content_string.splitlines()


def rows_at_or_above(container, path, column, minimum):
    """The input's lines a filter {column: minimum} keeps, in their order."""
    header, *rows = csv_lines(container, path)
    index = next(csv.reader([header])).index(column)
    return [row for row in rows if float(next(csv.reader([row]))[index]) >= minimum]


def assert_model_file(container, path):
    model = container.file(path)
    assert model.exists
    assert model.user == "celery"
    assert model.size > 0


def completed(backend, task_ids) -> int:
    """How many of the tasks have a SUCCESS result stored in the result backend."""
    metas = backend.mget([f"celery-task-meta-{task_id}" for task_id in task_ids])
    return sum(1 for meta in metas if meta and json.loads(meta)["status"] == "SUCCESS")


def wait_until_completed(backend, task_ids, deadline_seconds: float = DEADLINE_SECONDS) -> int:
    """Wait for every task to succeed, or the deadline; the number that did."""
    deadline = time.monotonic() + deadline_seconds
    done = completed(backend, task_ids)
    while done < len(task_ids) and time.monotonic() < deadline:
        time.sleep(1)
        done = completed(backend, task_ids)
    return done
