"""The Ray connection of a worker process: made lazily inside the child, watched while a
task waits on it, and given up with the process when Ray fails under it.

A prefork parent never imports Ray; each child connects on its first Ray task and keeps
the connection (ray.init is not fork-safe, so it must not happen before the fork).
The package directory is shipped to the cluster as a ``py_modules`` runtime env, so Ray
workers unpickle the remote functions of tasks.ml / tasks.csvwork without the code being
installed on the Ray nodes.

When the Ray node this process is attached to goes away (the head restarted or crashed,
the local raylet killed, the node stopped), Ray neither fails the pending work nor lets
the process reconnect: ``ray.wait`` waits forever, and ``ray.shutdown()`` or ``ray.put``
end the process ("the local Raylet is dead"). So:

* while a task waits on Ray (:func:`gather`), the connection is checked every few
  seconds: the raylet process it attached to must still accept on its socket, and the
  GCS must answer within ``ray_fault_timeout_seconds``. A dead connection raises
  RayConnectionLost, a transient error retried at once (tasks.base): the task reruns
  from the start.
* the process keeps no dead connection: the next :func:`ensure_ray` in it exits the
  process instead (SystemExit, which billiard reports before the child ends). Celery
  puts that task's message back at once (every Ray task is ``acks_late`` with
  ``reject_on_worker_lost``) and a new pool process runs it with a new connection.
* connecting waits up to ``ray_fault_timeout_seconds`` for the head to answer (after a
  reboot the workers may start first) before the task is retried.
"""

import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any, NoReturn

from tasks.errors import InvalidInput, RayConnectionLost, RayUnavailable
from tasks.settings import ConfigError, settings

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 3
# struct ucred of SO_PEERCRED: pid, uid, gid.
UCRED = struct.Struct("3i")
# How often a task waiting on Ray checks its connection.
LIVENESS_INTERVAL_SECONDS = 2


@dataclass
class _Connection:
    pid: int
    raylet_socket: str
    # The raylet this process attached to: one started again in the same session (a
    # worker node's ray-worker restarted) listens at the same path.
    raylet_pid: int | None
    lost: str | None = None
    unreachable_since: float | None = None


_connection: _Connection | None = None


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


def wait_for_head(address: str, timeout_seconds: float) -> None:
    """Probe the head until it answers, for up to timeout_seconds."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            probe(address)
            return
        except RayUnavailable as exc:
            if time.monotonic() >= deadline:
                raise RayUnavailable(f"{exc} (waited {timeout_seconds:g} s)") from exc
        time.sleep(1)


def listener_pid(unix_socket: str) -> int | None:
    """The PID of the process that accepts on the socket (None: nothing accepts)."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(PROBE_TIMEOUT_SECONDS)
        try:
            client.connect(unix_socket)
        except OSError:
            return None
        credentials = client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size)
    return UCRED.unpack(credentials)[0]


def check_connection() -> None:
    """Raise RayConnectionLost if this process's Ray connection is dead.

    Dead: the raylet it attached to no longer accepts on its socket (the node restarted,
    was stopped or killed; a new raylet binds a new socket), or the GCS has not answered
    for ray_fault_timeout_seconds.
    """
    connection = _connection
    if connection is None or connection.pid != os.getpid():
        return
    if connection.lost is None:
        connection.lost = _why_lost(connection)
    if connection.lost:
        raise RayConnectionLost(connection.lost)


def _why_lost(connection: _Connection) -> str | None:
    if listener_pid(connection.raylet_socket) != connection.raylet_pid:
        return ("the Ray node this worker process was attached to is gone (its raylet "
                "no longer answers: the node restarted, stopped or was killed)")
    address = settings().ray_address
    try:
        probe(address)
        connection.unreachable_since = None
        return None
    except RayUnavailable as exc:
        now = time.monotonic()
        if connection.unreachable_since is None:
            connection.unreachable_since = now
        bound = settings().ray_fault_timeout_seconds
        if now - connection.unreachable_since >= bound:
            return f"{exc} for {bound:g} s"
        return None


def _replace_this_process(reason: str) -> NoReturn:
    """Leave the pool: the task's message goes back to its queue, a new process runs it."""
    logger.warning("Ray connection of pool process %d lost (%s): replacing the process; "
                   "the task goes back to its queue", os.getpid(), reason)
    raise SystemExit(f"Ray connection lost: {reason}")


def ensure_ray(head_wait_seconds: float | None = None):
    """Return the ``ray`` module, connected to RAY_ADDRESS in this process.

    A new connection first waits for the head up to head_wait_seconds (default:
    ray_fault_timeout_seconds). Only for tasks that are acks_late with
    reject_on_worker_lost: a process whose connection died exits here, and the task runs
    again in a new one.
    """
    global _connection  # noqa: PLW0603 (one connection per process, by design)
    import ray

    if _connection is not None and _connection.pid == os.getpid():
        try:
            check_connection()
        except RayConnectionLost as exc:
            _replace_this_process(str(exc))
        return ray
    address = settings().ray_address
    if not address:
        raise ConfigError("RAY_ADDRESS is not set: give this process the Ray head's GCS "
                          "address (host:port); the deployment writes it into celery.env")
    if head_wait_seconds is None:
        head_wait_seconds = settings().ray_fault_timeout_seconds
    wait_for_head(address, head_wait_seconds)
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
    # Ray has no public name for the socket of the raylet a driver is attached to.
    raylet_socket = ray._private.worker.global_worker.node.raylet_socket_name
    _connection = _Connection(pid=os.getpid(), raylet_socket=raylet_socket,
                              raylet_pid=listener_pid(raylet_socket))
    return ray


def gather(
    refs: Sequence[Any], progress: Callable[[int, int], None] | None = None
) -> list[Any]:
    """``ray.get`` every ref, in order, reporting done/total as they finish.

    A remote InvalidInput comes back as itself (not wrapped in RayTaskError); a failure
    of Ray itself (a lost node, worker, object or connection) as RayUnavailable, which
    is retried; on any failure the rest is cancelled while the connection lives.
    """
    import ray
    from ray.exceptions import RayError, RayTaskError

    pending = list(refs)
    total = len(pending)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=LIVENESS_INTERVAL_SECONDS)
            if ready and progress:
                progress(total - len(pending), total)
            if not ready:
                check_connection()
        return ray.get(list(refs))
    except RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, InvalidInput):
            raise InvalidInput(str(cause)) from None
        raise
    except RayError as exc:
        raise RayUnavailable(f"Ray failed under the task: {exc}") from exc
    finally:
        if _connection is None or not _connection.lost:
            for ref in pending:
                ray.cancel(ref, force=True)
