"""The Ray connection of a worker process: made lazily, once, inside the child.

A prefork parent never imports Ray; each child connects on its first Ray task and keeps
the connection (ray.init is not fork-safe, so it must not happen before the fork).
The package directory is shipped to the cluster as a ``py_modules`` runtime env, so Ray
workers unpickle the remote functions of tasks.ml / tasks.csvwork without the code being
installed on the Ray nodes.
"""

import os
import socket
import sys
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from typing import Any

from tasks.config import settings
from tasks.errors import InvalidInput, RayUnavailable

PROBE_TIMEOUT_SECONDS = 3

_connected_pid: int | None = None


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailable(f"RAY_ADDRESS {address!r} is not host:port")
    return host, int(port)


def probe(address: str) -> None:
    """Fail fast (instead of ray.init's long retry loop) when nothing listens there."""
    try:
        socket.create_connection(_split_address(address), PROBE_TIMEOUT_SECONDS).close()
    except OSError as exc:
        raise RayUnavailable(f"Ray head {address} is unreachable: {exc}") from exc


def ensure_ray():
    """Return the ``ray`` module, connected to RAY_ADDRESS in this process."""
    global _connected_pid  # noqa: PLW0603 (one connection per process, by design)
    import ray

    if _connected_pid == os.getpid() and ray.is_initialized():
        return ray
    address = settings().ray_address
    probe(address)
    try:
        # Ray asks sys.stdout/stderr for file descriptors; a Celery worker has replaced them
        # with logging proxies that have none.
        with redirect_stdout(sys.__stdout__), redirect_stderr(sys.__stderr__):
            ray.init(
                address=address,
                runtime_env={"py_modules": [os.path.dirname(os.path.abspath(__file__))]},
                log_to_driver=False,
                logging_level="WARNING",
                ignore_reinit_error=True,
            )
    except Exception as exc:  # ray raises ConnectionError, RuntimeError, auth errors...
        raise RayUnavailable(f"cannot connect to Ray at {address}: {exc}") from exc
    _connected_pid = os.getpid()
    return ray


def gather(
    refs: Sequence[Any], progress: Callable[[int, int], None] | None = None
) -> list[Any]:
    """``ray.get`` every ref, in order, reporting done/total as they finish.

    A remote InvalidInput comes back as itself (not wrapped in RayTaskError), a lost
    node or worker as RayUnavailable (retried); on any failure the rest is cancelled.
    """
    import ray
    from ray.exceptions import RaySystemError, RayTaskError, WorkerCrashedError

    pending = list(refs)
    total = len(pending)
    try:
        while pending:
            _, pending = ray.wait(pending, num_returns=1)
            if progress:
                progress(total - len(pending), total)
        return ray.get(list(refs))
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, InvalidInput):
            raise InvalidInput(str(cause)) from None
        raise
    except (RaySystemError, WorkerCrashedError) as exc:
        raise RayUnavailable(f"Ray failed under the task: {exc}") from exc
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
