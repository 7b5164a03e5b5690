"""Fault drills against the converged container: each counts the tasks it submitted and
the tasks that completed (a SUCCESS result), prints both and asserts that none was lost.

conftest runs this module after every other test (the drills restart Redis, Ray, workers
and the container) and prints the counts again at the end of the run. Each drill leaves
the stack as it found it: the same units, sizes and settings, every worker answering.
The Ray drills run real ML and data tasks through the fault: a hyperparameter search that
keeps both of Ray's CPUs busy, and a CSV task whose Ray tasks wait behind it.
"""

import json
import shlex
import subprocess
import threading
import time
from contextlib import contextmanager

import pytest
import redis
from kombu.exceptions import OperationalError
from run_summary import report_drill
from scenario import (
    CELERY_UNITS,
    CONTAINER,
    DEADLINE_SECONDS,
    PROJECT,
    QUEUES,
    REDIS_UNIT,
    SETTINGS,
    STACK_UNITS,
    WORKER_UNITS,
    main_pid,
    main_pids,
    pool_size,
    run_playbook,
    wait_for,
    wait_for_workers,
    wait_until_completed,
    worker_name,
)

LOAD = 1000
PING = "tasks.simple_tasks.ping"
HEALTH = "tasks.simple_tasks.check_cluster_health"
# Enough trees that a training runs for seconds on the scenario's 60-row dataset.
TRAINING = {
    "model_config": {"n_estimators": 4000, "num_partitions": 2},
    "dataset_path": "/datasets/training_data.csv",
}
# While a playbook runs, the load trickles in at this rate; the rest follows at once when
# the playbook has finished, so that the load runs before, during and after its restarts.
TRICKLE_PER_SECOND = 10
SEARCH = "tasks.ml_tasks.hyperparameter_search"
CSV = "tasks.data_tasks.process_large_csv"
# Four forests of 4,000 trees, 3 folds each: 12 Ray tasks, tens of seconds on 2 CPUs.
SLOW_SEARCH = {
    "param_grid": [{"n_estimators": 4000, "max_depth": depth} for depth in (2, 3, 4, 5)],
    "dataset_path": "/datasets/training_data.csv",
}
QUICK_SEARCH = {"param_grid": [{"max_depth": 3}], "dataset_path": "/datasets/training_data.csv"}
DRILL_CSV = "/datasets/drill-transactions.csv"
DRILL_CSV_ROWS = 100_000
# The bound: a task sent once Ray is back after a fault completes within it.
NEXT_TASK_BOUND_SECONDS = 180


def restarts(container, unit: str) -> int:
    return int(container.check_output(f"systemctl show --property=NRestarts --value {unit}"))


def replaced(container, unit: str, main_pid_before: int) -> bool:
    """Whether the unit runs again with another main process."""
    return main_pid(container, unit) not in (main_pid_before, 0)


def journal(container, unit: str, since: int) -> str:
    return container.check_output(f"journalctl --no-pager -o cat -u {unit} --since @{since}")


def train(client, name: str, **model_config):
    return client.send_task("tasks.ml_tasks.distributed_training", kwargs={
        **TRAINING, "model_config": {**TRAINING["model_config"], "name": name, **model_config}})


def wait_for_states(results, reached, what: str) -> None:
    """Until reached(state) holds for every task; polled often, the runs are short."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not all(reached(result.state) for result in results):
        assert time.monotonic() < deadline, f"{what}: not seen within {DEADLINE_SECONDS} s"
        time.sleep(0.2)


def wait_until_running(results) -> None:
    """Until every task has started (task_track_started)."""
    wait_for_states(results, lambda state: state != "PENDING", "the tasks starting")


def running_pool_process(client, queue: str, task_id: str) -> int:
    """The pool process running the task, once its worker lists it as active in the same
    process twice, a second apart: a process whose Ray connection had died gives the task
    back at once (tasks.raycluster), and the next process takes it."""
    deadline, seen = time.monotonic() + DEADLINE_SECONDS, None
    while True:
        replies = client.control.inspect(destination=[worker_name(queue)], timeout=10).active()
        running = [task["worker_pid"] for task in (replies or {}).get(worker_name(queue), [])
                   if task["id"] == task_id]
        if running and running[0] == seen:
            return seen
        seen = running[0] if running else None
        assert time.monotonic() < deadline, f"{task_id} not running within {DEADLINE_SECONDS} s"
        time.sleep(1)


def renew_ray_connections(client, queue: str) -> None:
    """A Ray task for every pool process of the queue's worker: one that still holds a
    connection from before an earlier head restart (the alert drills stop the head) gives
    its task back and is replaced."""
    checks = [client.send_task(HEALTH, queue=queue) for _ in range(QUEUES[queue])]
    for check in checks:
        assert check.get(timeout=DEADLINE_SECONDS)["status"] == "healthy"


def pings(client, count: int, queue: str) -> list[str]:
    return [client.send_task(PING, queue=queue).id for _ in range(count)]


@pytest.fixture(scope="module")
def drill_csv(container):
    """A CSV for process_large_csv (amounts 0-200), written by the service user."""
    program = ('BEGIN { srand(1); print "id,customer,amount"; '
               f'for (i = 0; i < {DRILL_CSV_ROWS}; i++) '
               'printf "%d,c%d,%.2f\\n", i, i % 97, rand() * 200 }')
    container.check_output(
        f"sudo -u celery sh -c {shlex.quote(f'awk {shlex.quote(program)} > {DRILL_CSV}')}")
    return DRILL_CSV


def csv_task(client, drill_csv, name: str):
    return client.send_task(CSV, kwargs={
        "file_path": drill_csv, "output_path": f"/datasets/processed/{name}.csv",
        "transformations": {"filter": {"amount": 100}, "num_chunks": 8}})


def ray_fault_drill(client, backend, drill_csv, record_property, *, drill: str, fault) -> None:
    """A search running on Ray and a CSV task waiting for Ray's CPUs behind it when the
    fault strikes; once Ray is back, a new search and CSV task. Every one completes; the
    new ones within NEXT_TASK_BOUND_SECONDS."""
    search = client.send_task(SEARCH, kwargs=SLOW_SEARCH)
    wait_for_states([search], lambda state: state == "PROGRESS", "the search's first folds")
    csv = csv_task(client, drill_csv, "drill-ray-fault")
    wait_until_running([csv])
    struck = time.monotonic()
    fault()
    back = time.monotonic()
    later = [client.send_task(SEARCH, kwargs=QUICK_SEARCH),
             csv_task(client, drill_csv, "drill-ray-fault-after")]
    later_done = wait_until_completed(backend, [result.id for result in later])
    later_seconds = time.monotonic() - back
    done = later_done + wait_until_completed(backend, [search.id, csv.id])
    report_drill(record_property, drill, 4, done,
                 retries_of_the_running_tasks=[search.retries, csv.retries],
                 seconds_until_ray_was_back=round(back - struck),
                 seconds_for_the_tasks_sent_after=round(later_seconds))
    assert done == 4
    assert search.result["best_params"] in SLOW_SEARCH["param_grid"]
    assert csv.result["rows_read"] == DRILL_CSV_ROWS
    assert later_seconds <= NEXT_TASK_BOUND_SECONDS


@contextmanager
def consumer_held(client, queue: str):
    """The queue's worker stops taking messages from it, so that they stay queued."""
    worker = worker_name(queue)

    def consumed() -> set[str]:
        replies = client.control.inspect(destination=[worker], timeout=5).active_queues() or {}
        return {entry["name"] for entry in replies.get(worker, [])}

    def taking(yes: bool) -> bool:
        # Asked again on every try: a request sent while the worker is reconnecting to a
        # restarted broker is not seen.
        command = client.control.add_consumer if yes else client.control.cancel_consumer
        try:
            command(queue, destination=[worker], reply=True, timeout=5)
            return (queue in consumed()) == yes
        except (OperationalError, redis.exceptions.ConnectionError):
            return False  # the broker is not back yet

    wait_for(lambda: taking(False), f"{worker} leaving queue {queue}")
    try:
        yield
    finally:
        wait_for(lambda: taking(True), f"{worker} consuming queue {queue} again")


def load_during(client, queues: list[str], playbook_done: threading.Event, sent: list[str],
                before: list[int]) -> None:
    """Send LOAD pings round-robin over the queues: a trickle until the playbook is done,
    then the rest; before[0] counts those sent while it ran."""
    while len(sent) < LOAD:
        sent.append(client.send_task(PING, queue=queues[len(sent) % len(queues)]).id)
        if not playbook_done.is_set():
            before[0] = len(sent)
            time.sleep(1 / TRICKLE_PER_SECOND)


def playbook_under_load(client, queues: list[str], playbook: str, *args: str) -> tuple:
    """Run the playbook while LOAD pings go to the queues; (task ids, sent during the run)."""
    sent, before, done = [], [0], threading.Event()
    publisher = threading.Thread(target=load_during, args=(client, queues, done, sent, before))
    publisher.start()
    try:
        run_playbook(PROJECT, playbook, *args)
    finally:
        done.set()
        publisher.join()
    return sent, before[0]


def test_drill_1_sigkill_of_the_ml_pool_child(client, container, record_property):
    """A pool process killed mid-training: the message is requeued and the training runs
    again to the end (acks_late + reject_on_worker_lost)."""
    unit = "celery-worker@ml.service"
    renew_ray_connections(client, "ml")
    main_before, since = main_pid(container, unit), int(time.time())
    # Twice the other drills' training (the task allows up to 10,000 trees): it must outlast
    # finding its pool process.
    trees = 2 * TRAINING["model_config"]["n_estimators"]
    result = train(client, "drill-sigkill", n_estimators=trees)
    child = running_pool_process(client, "ml", result.id)
    assert result.state != "SUCCESS", "the training ended before the kill: make it longer"
    received = f"[{result.id}] received"
    received_before_kill = journal(container, unit, since).count(received)
    container.check_output(f"kill -KILL {child}")

    outcome = result.get(timeout=DEADLINE_SECONDS)
    log = journal(container, unit, since)
    redeliveries = log.count(received) - received_before_kill
    report_drill(record_property, "drill 1 (SIGKILL of the ml pool child)", 1,
                 int(result.state == "SUCCESS"), redeliveries=redeliveries)
    assert outcome["model_path"] == "/models/drill-sigkill.pkl"
    assert f"pid:{child} exited with 'signal 9 (SIGKILL)'" in log
    assert redeliveries == 1
    assert main_pid(container, unit) == main_before


def test_drill_2_redis_restart_with_tasks_queued(client, container, backend, broker,
                                                  record_property):
    """Redis restarts with LOAD pings queued and two trainings running: every task
    completes, no worker restarts, and no message is left unacknowledged (which would run
    it again after the visibility timeout)."""
    before = main_pids(container, CELERY_UNITS)
    restarts_before = {unit: restarts(container, unit) for unit in WORKER_UNITS}
    with consumer_held(client, "default"):
        ids = pings(client, LOAD, "default")
        queued = broker.llen("default")
        trainings = [train(client, f"drill-redis-{index}") for index in range(2)]
        wait_until_running(trainings)
        running = sum(result.state != "SUCCESS" for result in trainings)
        container.check_output(f"systemctl restart {REDIS_UNIT}")
        wait_for_workers(client)
    submitted = [*ids, *(result.id for result in trainings)]
    done = wait_until_completed(backend, submitted)
    report_drill(record_property, "drill 2 (Redis restart)", len(submitted), done,
                 queued_at_restart=queued, trainings_running_at_restart=running)
    assert done == len(submitted)
    assert queued >= LOAD  # other tasks may be queued too
    assert main_pids(container, CELERY_UNITS) == before
    assert {unit: restarts(container, unit) for unit in WORKER_UNITS} == restarts_before
    wait_for(lambda: broker.hlen("unacked") == 0, "no unacknowledged message left")


def test_drill_3_scale_data_during_load(client, container, backend, record_property):
    """scale.yml resizes the data worker while pings stream to it; the others keep running."""
    data = "celery-worker@data.service"
    before = main_pids(container)
    try:
        ids, during = playbook_under_load(client, ["data"], "playbooks/scale.yml",
                                          "-e", "data_concurrency=2")
        done = wait_until_completed(backend, ids)
        report_drill(record_property, "drill 3 (scale.yml data_concurrency=2 under load)",
                     len(ids), done, sent_while_scaling=during)
        assert done == len(ids)
        assert pool_size(container, data) == 2
        after = main_pids(container)
        assert after[data] != before[data]
        assert {u: p for u, p in after.items() if u != data} == \
            {u: p for u, p in before.items() if u != data}
    finally:
        run_playbook(PROJECT, "playbooks/scale.yml", "-e", "data_concurrency=reset")
        wait_for(lambda: pool_size(container, data) == QUEUES["data"],
                 f"the data worker back at {QUEUES['data']} processes")
        wait_for_workers(client)


def test_drill_4_site_rerun_during_load(client, container, backend, record_property):
    """Rerunning site.yml under load restarts nothing and loses nothing."""
    before = main_pids(container)
    ids, during = playbook_under_load(client, list(QUEUES), "playbooks/site.yml")
    done = wait_until_completed(backend, ids)
    report_drill(record_property, "drill 4 (site.yml rerun under load)", len(ids), done,
                 sent_while_deploying=during)
    assert done == len(ids)
    assert main_pids(container) == before


def test_drill_5_restart_of_the_ray_head_under_ml_and_data_tasks(client, container, backend,
                                                                 drill_csv, record_property):
    """`systemctl restart ray-head` under a search and a CSV task."""
    ray_fault_drill(client, backend, drill_csv, record_property,
                    drill="drill 5 (systemctl restart ray-head)",
                    fault=lambda: container.check_output("systemctl restart ray-head"))


def test_drill_6_sigkill_of_the_raylet_under_ml_and_data_tasks(client, container, backend,
                                                                drill_csv, record_property):
    """The head's raylet killed (a crash, no clean stop): `ray start --block` exits, systemd
    starts the head again, the tasks complete."""
    restarts_before = restarts(container, "ray-head.service")

    def crash():
        raylet = container.check_output("pgrep -x raylet")
        container.check_output(f"kill -KILL {raylet}")
        wait_for(lambda: restarts(container, "ray-head.service") > restarts_before,
                 "systemd restarting ray-head")
        wait_for(lambda: container.service("ray-head.service").is_running, "ray-head active")

    ray_fault_drill(client, backend, drill_csv, record_property,
                    drill="drill 6 (SIGKILL of the raylet)", fault=crash)


def test_drill_7_a_worker_that_stops_consuming_is_restarted(client, container, backend,
                                                            drill_csv, record_property):
    """The data worker's main process stopped (SIGSTOP) with CSV tasks queued: the watchdog
    finds it stalled and restarts it, and the tasks run."""
    unit = "celery-worker@data.service"
    stopped = main_pid(container, unit)
    container.check_output(f"kill -STOP {stopped}")
    started = time.monotonic()
    try:
        tasks = [csv_task(client, drill_csv, f"drill-watchdog-{index}") for index in range(6)]
        wait_for(lambda: replaced(container, unit, stopped),
                 "the watchdog restarting the data worker")
        restarted_after = time.monotonic() - started
    finally:
        container.run(f"kill -CONT {stopped}")
    done = wait_until_completed(backend, [task.id for task in tasks])
    report_drill(record_property, "drill 7 (data worker stopped consuming: SIGSTOP)",
                 len(tasks), done, seconds_until_the_watchdog_restarted_it=round(restarted_after))
    assert done == len(tasks)
    assert f"restarting {unit}" in journal(container, "celery-worker-watchdog.service",
                                           int(time.time() - restarted_after - 60))


def test_drill_8_playbooks_that_restart_the_ray_units_under_ml_tasks(client, container, backend,
                                                                     record_property):
    """deploy-code.yml with a changed Ray environment, then site.yml putting it back, each
    under a search and a training: each restarts Ray and the workers (the workers stop
    first, warm, and Ray after them), and every task completes."""
    changed = {"celery_ray_ray_environment": {**SETTINGS["celery_ray_ray_environment"],
                                              "CELERY_RAY_DRILL": "8"}}
    submitted = []
    for playbook, args in (("playbooks/deploy-code.yml", ["-e", json.dumps(changed)]),
                           ("playbooks/site.yml", [])):
        ray_before = main_pid(container, "ray-head.service")
        running = [client.send_task(SEARCH, kwargs=SLOW_SEARCH), train(client, "drill-deploy")]
        wait_until_running(running)
        run_playbook(PROJECT, playbook, *args)
        # The playbook is done once the restart is queued: Ray's waits for the workers' stop.
        wait_for(lambda before=ray_before: replaced(container, "ray-head.service", before),
                 f"{playbook} restarting ray-head")
        wait_for_workers(client)
        submitted += [result.id for result in running]
    done = wait_until_completed(backend, submitted)
    report_drill(record_property, "drill 8 (deploy-code.yml and site.yml restarting Ray)",
                 len(submitted), done)
    assert done == len(submitted)


def reboot(name: str) -> None:
    """A clean reboot of the systemd container: SIGRTMIN+3 makes systemd stop every unit
    and halt (a plain `docker restart` sends SIGTERM, which systemd ignores, and kills it
    after the timeout: a power cut); then start it again and wait for systemd."""
    subprocess.run(["docker", "kill", "--signal=SIGRTMIN+3", name], check=True,
                   capture_output=True)
    wait_for(lambda: subprocess.run(
        ["docker", "inspect", "--format={{.State.Running}}", name],
        capture_output=True, text=True, check=True).stdout.strip() == "false",
        f"{name} halted")
    subprocess.run(["docker", "start", name], check=True, capture_output=True)
    wait_for(lambda: subprocess.run(
        ["docker", "exec", name, "systemctl", "is-system-running", "--wait"],
        capture_output=True, text=True, check=False).stdout.strip() in ("running", "degraded"),
        f"systemd in {name} up")


def test_drill_9_container_reboot_with_ml_tasks_running_and_queued(client, container, backend,
                                                                   broker, record_property):
    """The host reboots with LOAD pings queued and ML tasks running and queued: the workers
    finish the running ones before they stop (warm shutdown, before Ray and Redis stop);
    every unit comes back enabled and active, and the queued tasks run."""
    with consumer_held(client, "default"):
        ids = pings(client, LOAD, "default")
        queued = broker.llen("default")
        ml = [client.send_task(SEARCH, kwargs=SLOW_SEARCH),
              *(train(client, f"drill-reboot-{index}") for index in range(3))]
        wait_until_running(ml[:QUEUES["ml"]])
        # Redis writes its append-only file every second; a clean shutdown flushes it.
        reboot(CONTAINER)
    for unit in [*STACK_UNITS, "celery-ray.target", "celery-ray-app.target",
                 "celery-worker-watchdog.timer"]:
        assert container.service(unit).is_enabled, unit
        wait_for(lambda unit=unit: container.service(unit).is_running, f"{unit} active")
    wait_for_workers(client)
    submitted = [*ids, *(result.id for result in ml)]
    done = wait_until_completed(backend, submitted)
    report_drill(record_property, "drill 9 (container reboot)", len(submitted), done,
                 queued_at_reboot=queued, ml_tasks=len(ml))
    assert queued >= LOAD  # other tasks may be queued too
    assert done == len(submitted)
