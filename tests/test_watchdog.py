"""The watchdog against a real worker: a stopped main process is found stalled, a healthy
worker and one an operator took off its queue are left alone."""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import RESULT_TIMEOUT_SECONDS
from tasks.watchdog import Seen, host_workers, is_strike, watch

from testbed import PACKAGE_PARENT, stop_workers, wait_for

QUEUE = "watched"
PING = "tasks.simple_tasks.ping"
REPLY_TIMEOUT_SECONDS = 2


@pytest.mark.parametrize(("seen", "taken_before", "strike"), [
    (Seen(waiting=0, answered=False), None, False),  # nothing waits: nothing to judge
    (Seen(waiting=3, answered=False), 7, True),  # does not answer
    (Seen(waiting=3, answered=True, free_processes=1, taken=7), 7, True),  # takes none
    (Seen(waiting=3, answered=True, free_processes=1, taken=8), 7, False),  # took one
    (Seen(waiting=3, answered=True, free_processes=0, taken=7), 7, False),  # all busy
    (Seen(waiting=3, answered=True, free_processes=1, taken=7), None, False),  # first look
])
def test_a_strike_is_messages_waiting_for_a_worker_that_takes_none(seen, taken_before,
                                                                   strike):
    assert is_strike(seen, taken_before) is strike


def test_the_workers_of_a_host_come_from_their_units_settings(tmp_path):
    (tmp_path / "default.env").write_text("# x\nCELERY_WORKER_QUEUES=default,celery\n"
                                          "CELERY_WORKER_CONCURRENCY=4\n")
    (tmp_path / "ml.env").write_text("CELERY_WORKER_QUEUES=ml\n")
    assert host_workers(tmp_path, "node1") == {"default@node1": ["default", "celery"],
                                               "ml@node1": ["ml"]}


@pytest.fixture(scope="module")
def watched(stack):
    """A worker of its own on a queue of its own: name, process."""
    worker = stack.start_worker(QUEUE, QUEUE, 1)
    try:
        yield f"{QUEUE}@{os.uname().nodename}", worker
    finally:
        stop_workers(worker)


def pings(stack, count: int):
    return [stack.client.send_task(PING, queue=QUEUE) for _ in range(count)]


def looks(stack, worker: str, count: int) -> list[list[str]]:
    """The stalled workers found by each of `count` looks in a row."""
    from tasks import app  # noqa: PLC0415 (made from the stack's environment, set by now)

    state, found = {}, []
    broker = stack.broker_redis()
    for _ in range(count):
        state, stalled = watch(app, broker, {worker: [QUEUE]}, state, strikes_to_stall=2,
                               reply_timeout=REPLY_TIMEOUT_SECONDS)
        found.append(stalled)
    return found


def test_a_consuming_worker_is_left_alone(stack, watched):
    name, _ = watched
    results = pings(stack, 200)
    assert looks(stack, name, 3) == [[], [], []]
    for result in results:
        result.get(timeout=RESULT_TIMEOUT_SECONDS)


def test_a_worker_taken_off_its_queue_is_left_alone(stack, watched):
    name, _ = watched
    stack.client.control.cancel_consumer(QUEUE, destination=[name], reply=True)
    try:
        results = pings(stack, 5)
        assert looks(stack, name, 3) == [[], [], []]
    finally:
        stack.client.control.add_consumer(QUEUE, destination=[name], reply=True)
    for result in results:
        result.get(timeout=RESULT_TIMEOUT_SECONDS)


def test_a_stopped_worker_is_named_by_the_command_after_two_looks(stack, watched, tmp_path):
    name, worker = watched
    settings_dir = tmp_path / "workers"
    settings_dir.mkdir()
    (settings_dir / f"{QUEUE}.env").write_text(f"CELERY_WORKER_QUEUES={QUEUE}\n")
    state, stalled = tmp_path / "state.json", tmp_path / "stalled"
    command = [sys.executable, "-m", "tasks.watchdog", f"--workers={settings_dir}",
               f"--state={state}", f"--stalled={stalled}",
               f"--reply-timeout={REPLY_TIMEOUT_SECONDS}"]
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        results = pings(stack, 5)
        for expected in ("", f"{QUEUE}\n"):
            subprocess.run(command, cwd=PACKAGE_PARENT, env=stack.env, check=True,
                           capture_output=True)
            assert stalled.read_text() == expected
        assert json.loads(state.read_text()) == {name: {"strikes": 0, "taken": None}}
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    for result in results:
        result.get(timeout=RESULT_TIMEOUT_SECONDS)
    wait_for(lambda: stack.client.control.ping(destination=[name], timeout=1), name)
