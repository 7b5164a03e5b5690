"""What every task shares: the retry policy, progress reports, and fan-out without doubles.

Retry policy (the spec's "Handle Failures Gracefully"): a transient failure (Ray
unreachable, a Redis connection error, a webhook answering 5xx) is retried up to 3 times,
``retry_backoff_seconds * 2**retries`` apart (60, 120, 240 s by default); a Ray connection
lost under the task at once, since the process that runs it again waits for the head
(tasks.raycluster). InvalidInput,
like any other error, fails at once without a retry; so do arguments above the size
limit of tasks.arguments.
"""

import uuid
from functools import cache
from typing import Any

import redis
from celery import Task
from kombu.exceptions import OperationalError

from tasks.application import app
from tasks.arguments import check_argument_size
from tasks.errors import InvalidInput, RayConnectionLost, TransientError
from tasks.settings import settings

MAX_RETRIES = 3
TRANSIENT_ERRORS = (
    TransientError,
    ConnectionError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OperationalError,
)
# A fan-out remembers what it enqueued for this long (covers any redelivery).
ENQUEUED_MARKER_SECONDS = 7 * 24 * 3600


def retry_delay(exc: Exception, retries: int) -> float:
    """Seconds before the next attempt: the backoff, or none for a lost Ray connection."""
    if isinstance(exc, RayConnectionLost):
        return 0
    return settings().retry_backoff_seconds * 2 ** retries


class RetryingTask(Task):
    max_retries = MAX_RETRIES

    def __call__(self, *args, **kwargs):
        try:
            check_argument_size(args, kwargs)
        except InvalidInput:
            # The failure is stored with the request's arguments (result_extended): keep
            # megabytes of them out of the result backend.
            self.request.args, self.request.kwargs = [], {}
            raise
        try:
            return super().__call__(*args, **kwargs)
        except TRANSIENT_ERRORS as exc:
            # Raises exc itself once the retries are used up.
            raise self.retry(exc=exc, countdown=retry_delay(exc, self.request.retries)) from exc

    def report_progress(self, done: int, total: int) -> None:
        """Shown by Flower and by AsyncResult.info as {'done': n, 'total': m}."""
        if self.request.id:
            self.update_state(state="PROGRESS", meta={"done": done, "total": total})


def task(**options: Any):
    """``@app.task`` with the package's base class; the task is bound (``self``)."""
    return app.task(bind=True, base=RetryingTask, **options)


# Work that runs for minutes: acknowledged only when finished, and requeued if the worker
# process dies under it, so a crash or a deploy does not lose it.
DURABLE = {"acks_late": True, "reject_on_worker_lost": True}


@cache
def broker_redis() -> redis.Redis:
    return redis.Redis.from_url(settings().broker_url)


def enqueue_once(task_to_send: Task, parent_id: str, item: str, **kwargs: Any) -> str:
    """Send ``task_to_send`` for ``item`` once per parent run, and return its task id.

    The child's id is derived from (parent id, item), and a Redis SET NX marker records
    that it was sent: a redelivered or retried parent reports the same ids and sends
    nothing twice.
    """
    child_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"celery-ray/{parent_id}/{item}"))
    marker = f"tasks:enqueued:{child_id}"
    if broker_redis().set(marker, parent_id, nx=True, ex=ENQUEUED_MARKER_SECONDS):
        task_to_send.apply_async(task_id=child_id, kwargs=kwargs)
    return child_id
