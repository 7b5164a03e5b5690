"""A schedule edited in group_vars reaches Beat: deploy a copy of the project with one more
entry, see Beat send it and the task run, then redeploy the project as it is."""

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml
from scenario import PROJECT, run_playbook, wait_for, wait_for_workers

ENTRY = f"end-to-end-notification-{uuid.uuid4().hex[:8]}"
MESSAGE = f"scheduled by {ENTRY}"
INTERVAL_SECONDS = 10
# The schedule lives in tasks.json, rendered by the configure phase (with the preflight
# facts it needs); a full site.yml run gives the same result, only slower.
DEPLOY_TAGS = ("--tags", "preflight,configure")


def copy_working_tree(destination: Path) -> None:
    """The files of the project as a user sees them (tracked and new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source, target = PROJECT / name, destination / name
        if not source.is_symlink() and not source.exists():
            continue  # deleted in the working tree
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))  # keeps playbooks/group_vars relative
        else:
            shutil.copy2(source, target)


def journal(container, unit, since):
    return container.check_output(f"journalctl --no-pager -o cat -u {unit} --since @{since}")


@pytest.fixture(scope="module")
def edited_deploy(container, client, tmp_path_factory):
    """Deploy a copy whose group_vars schedule one more entry; redeploy the project after."""
    copy = tmp_path_factory.mktemp("project")
    copy_working_tree(copy)
    assert (copy / "playbooks/group_vars").resolve() == (copy / "group_vars").resolve()
    group_vars_file = copy / "group_vars/all/main.yml"
    group_vars = yaml.safe_load(group_vars_file.read_text())
    group_vars["celery_app_beat_schedule"][ENTRY] = {
        "task": "tasks.simple_tasks.send_notification",
        "schedule": INTERVAL_SECONDS,
        "kwargs": {"message": MESSAGE},
        "options": {"queue": "default"},
    }
    group_vars_file.write_text(yaml.safe_dump(group_vars, sort_keys=False))
    since = int(time.time())
    run_playbook(copy, "playbooks/site.yml", *DEPLOY_TAGS)
    yield since
    run_playbook(PROJECT, "playbooks/site.yml", *DEPLOY_TAGS)
    wait_for_workers(client)
    assert ENTRY not in container.file("/etc/celery-ray/tasks.json").content_string


def test_the_entry_is_rendered_for_beat(edited_deploy, container):
    schedule = json.loads(container.file("/etc/celery-ray/tasks.json").content_string)
    assert schedule["beat_schedule"][ENTRY]["kwargs"] == {"message": MESSAGE}


def test_beat_sends_the_new_entry(edited_deploy, container):
    wait_for(lambda: f"Scheduler: Sending due task {ENTRY}"
             in journal(container, "celery-beat.service", edited_deploy),
             f"Beat sending {ENTRY}")


def test_the_scheduled_task_runs_with_the_entry_arguments(edited_deploy, container):
    wait_for(lambda: f"notification: {MESSAGE}"
             in journal(container, "celery-worker@default.service", edited_deploy),
             f"the default worker running {ENTRY}")
