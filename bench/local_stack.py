"""The local stack the stack benchmarks use: the container of Molecule's `local` scenario
(`make up`), driven from this controller with the project's own playbooks."""

import atexit
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]
SCENARIO = "local"
MOLECULE_FILE = PROJECT / f"molecule/{SCENARIO}/molecule.yml"
MOLECULE_CONFIG = yaml.safe_load(MOLECULE_FILE.read_text())
PLATFORM = MOLECULE_CONFIG["platforms"][0]
CONTAINER = PLATFORM["name"]
BIN = Path(sys.executable).parent
# Molecule and Ansible find their own commands (ansible-playbook, ...) on PATH.
ENV = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
           ANSIBLE_ROLES_PATH=str(PROJECT / "roles"), ANSIBLE_NOCOLOR="1")


def running() -> bool:
    state = subprocess.run(
        ["docker", "container", "inspect", "--format", "{{.State.Running}}", CONTAINER],
        capture_output=True, text=True, check=False)
    return state.stdout.strip() == "true"


def check(completed: subprocess.CompletedProcess) -> None:
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(completed.args)} failed:\n{completed.stdout[-4000:]}"
                         f"\n{completed.stderr[-2000:]}")


def molecule(step: str, scenario: str = SCENARIO) -> None:
    check(subprocess.run([str(BIN / "molecule"), step, "-s", scenario], cwd=PROJECT, env=ENV,
                         capture_output=True, text=True, check=False))


@functools.cache
def inventory(scenario: str = SCENARIO) -> Path:
    """The scenario's inventory as Molecule writes it: its container in its groups, reached
    with docker exec, beside the scenario's group_vars and host_vars. Written once per run,
    removed when it ends."""
    molecule_file = PROJECT / f"molecule/{scenario}/molecule.yml"
    config = yaml.safe_load(molecule_file.read_text())
    platform = config["platforms"][0]
    directory = Path(tempfile.mkdtemp(prefix="bench-inventory-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    host = {platform["name"]: {"ansible_connection": "community.docker.docker"}}
    groups = {group: {"hosts": host} for group in platform["groups"]}
    (directory / "inventory.yml").write_text(yaml.safe_dump(groups))
    for kind, link in config["provisioner"]["inventory"]["links"].items():
        (directory / kind).symlink_to((molecule_file.parent / link).resolve())
    return directory


def playbook(name: str, *args: str, scenario: str = SCENARIO) -> tuple[float, int]:
    """Run playbooks/NAME against the scenario's container (the local stack's unless named):
    (seconds, tasks reported changed)."""
    command = [str(BIN / "ansible-playbook"), "-i", str(inventory(scenario)),
               str(PROJECT / "playbooks" / name), *args]
    start = time.perf_counter()
    completed = subprocess.run(command, cwd=PROJECT, env=ENV, capture_output=True,
                               text=True, check=False)
    seconds = time.perf_counter() - start
    check(completed)
    recap = completed.stdout.rpartition("PLAY RECAP")[2]
    return seconds, sum(int(count) for count in re.findall(r"changed=(\d+)", recap))


def docker(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], check=True, **kwargs)
