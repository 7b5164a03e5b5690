"""Celery settings shared by workers, Beat, Flower and the package's client.

Broker and backend come from the environment, the Beat schedule from TASKS_CONFIG_FILE
(see tasks.settings). Per-task time limits and retry policy sit on the tasks themselves.
"""

from celery.schedules import crontab
from kombu import Queue

from tasks.broker import PRIORITY_STEPS
from tasks.settings import settings

# Longest hard time limit of any task (ml: 3600 s) plus the longest retry countdown
# (60 * 2**2 = 240 s), with room to spare: a message unacknowledged for longer than this
# is redelivered to another worker, so it must outlast any task still legitimately running.
VISIBILITY_TIMEOUT = 2 * 3600

broker_url = settings().broker_url
result_backend = settings().result_backend
broker_connection_retry_on_startup = True
# When the broker connection drops (Redis restarts, a network cut), tasks already running
# go on and are acknowledged over the new connection when they finish (tasks.broker makes
# that ack reconnect). Cancelling them instead (True, Celery 6's future default) would
# throw away up to an hour of training, and a cancelled acks_late message that could not
# be put back while Redis was down would wait in Redis' unacked set for the whole
# VISIBILITY_TIMEOUT (2 h) before running again. The price of False: if the broker is
# reachable again by the time the worker gives up the old connection, kombu puts the
# running task's message back at once and another process runs it a second time, which
# the tasks allow (tasks.base: written by rename, fan-out sent once).
worker_cancel_long_running_tasks_on_connection_loss = False
broker_transport_options = {
    "priority_steps": PRIORITY_STEPS,
    "visibility_timeout": VISIBILITY_TIMEOUT,
}
result_backend_transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT}

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_expires = 24 * 3600
result_extended = True
task_track_started = True
# Task events feed Flower's task views. They are most of the stack's per-task overhead
# (bench/stack_overhead.py): task_events false in TASKS_CONFIG_FILE turns them off here and
# in Flower, which would otherwise switch them back on.
task_send_sent_event = settings().task_events
worker_send_task_events = settings().task_events

# The stack's queues (TASKS_CONFIG_FILE) and Celery's own, where bare clients send.
task_queues = [Queue(name) for name in settings().stack_queues]
task_default_queue = "default"
task_routes = {
    "tasks.ml_tasks.*": {"queue": "ml"},
    "tasks.data_tasks.*": {"queue": "data"},
    "tasks.simple_tasks.*": {"queue": "default"},
}
task_default_priority = 0

# A worker takes one message per free process, so urgent messages published meanwhile
# are not stuck behind a prefetched backlog.
worker_prefetch_multiplier = 1

# Beat also notes each dispatch in Redis, where tasks.metrics reads it.
beat_scheduler = "tasks.beat:RecordingScheduler"

timezone = "UTC"
enable_utc = True


def _schedule(value):
    if isinstance(value, dict):
        return crontab(**{key: str(field) for key, field in value["crontab"].items()})
    return float(value)


beat_schedule = {
    name: {
        "task": entry["task"],
        "schedule": _schedule(entry["schedule"]),
        "args": tuple(entry.get("args", ())),
        "kwargs": entry.get("kwargs", {}),
        "options": entry.get("options", {}),
    }
    for name, entry in settings().beat_schedule.items()
}
