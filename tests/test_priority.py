"""priority=9 is served before priority=0 on Redis, for the spec's bare client (default
kombu settings, queue `celery`) and for the package's client (tasks.client)."""

import socket

from celery import Celery
from conftest import RESULT_TIMEOUT_SECONDS

from testbed import stop_workers, wait_for

PRIORITY_QUEUE = "priority-test"


def consumed_queues(control, worker: str) -> set[str]:
    return {queue["name"] for queue in control.inspect(destination=[worker]).active_queues()[
        worker]}


def test_higher_priorities_are_served_first(stack):
    control = stack.client.control
    default_worker = f"default@{socket.gethostname()}"
    # Hold the `celery` queue still while the messages pile up.
    control.cancel_consumer("celery", destination=[default_worker], reply=True)
    try:
        wait_for(lambda: "celery" not in consumed_queues(control, default_worker),
                 "default worker leaving the celery queue")
        bare = Celery(broker=stack.broker_url, backend=stack.backend_url)
        documented = stack.client
        sent = {}
        # Low priorities go in first: first-in-first-out alone would serve them first.
        for priority in (0, 0, 0, 9, 9, 9):
            sent[bare.send_task("tasks.simple_tasks.ping", priority=priority).id] = priority
        for priority in (1, 4, 7, 2, 8):
            result = documented.send_task("tasks.simple_tasks.ping", queue=PRIORITY_QUEUE,
                                          priority=priority)
            sent[result.id] = priority
        # One process: execution order is exactly the order the broker hands messages out.
        worker = stack.start_worker("priority", f"celery,{PRIORITY_QUEUE}", 1)
        try:
            results = [documented.AsyncResult(task_id) for task_id in sent]
            for result in results:
                result.get(timeout=RESULT_TIMEOUT_SECONDS)
        finally:
            stop_workers(worker)
        served = [sent[result.id] for result in sorted(results, key=lambda r: r.date_done)]
        assert served == [9, 9, 9, 8, 7, 4, 2, 1, 0, 0, 0]
        assert {result.worker.split("@")[0] for result in results} == {"priority"}
    finally:
        control.add_consumer("celery", destination=[default_worker], reply=True)
