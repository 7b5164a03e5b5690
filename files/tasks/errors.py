"""The two kinds of failure a task can have, and how Celery treats each.

``InvalidInput`` is the caller's mistake (a missing file, a malformed grid, an unknown
column, an empty CSV, a path outside the data roots): the task fails at once, with a
message that says what to fix, and is never retried.

``TransientError`` is the environment's (Ray unreachable, Redis hiccup, a webhook
answering 5xx): the task is retried up to 3 times with exponential backoff (a lost Ray
connection at once).
"""


MAX_MESSAGE_CHARS = 2000


class InvalidInput(ValueError):
    """Bad task arguments or bad input data; retrying cannot help.

    A message quoting a huge argument is cut short: it is stored as the task's result and
    logged by the worker.
    """

    def __init__(self, message: str):
        if len(message) > MAX_MESSAGE_CHARS:
            # Short enough to pass through unchanged when the client re-creates it.
            message = f"{message[:MAX_MESSAGE_CHARS - 40]}... ({len(message)} characters)"
        super().__init__(message)


class TransientError(RuntimeError):
    """A dependency is unavailable for now; the task is retried."""


class RayUnavailable(TransientError):
    """The Ray cluster cannot be reached (head down, wrong address, bad token)."""


class RayConnectionLost(RayUnavailable):
    """The Ray node a worker process was attached to went away under a task.

    Retried at once, not after the backoff: the new pool process that runs it again waits
    for the head itself (tasks.raycluster).
    """
