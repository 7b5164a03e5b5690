"""Find the Celery workers of this host that stay up but no longer consume their queues.

A worker can keep running and stop taking messages: after broker reconnects
(celery#8030, #10205, #10302), or with its main process stopped or wedged. systemd sees a
running process either way. The watchdog unit runs this every interval on each worker
host, with the state of the previous run:

    python -m tasks.watchdog --workers DIR --state FILE --stalled FILE

DIR holds the settings the worker units read: celery-worker@NAME.service reads NAME.env,
whose CELERY_WORKER_QUEUES are the queues it consumes; its node name is NAME@<host>.

A worker gets a strike when messages wait in the queues it should consume (the sum over
every priority list) and either it does not answer through the broker, or it answers,
consumes them, has a free pool process and has taken no task since the previous run.
After --strikes strikes in a row it is written to the --stalled file, one worker per
line, for the unit to restart (a warm shutdown: its running tasks finish first). Nothing
is judged while the broker cannot be reached, and a queue an operator took the worker off
(``control cancel_consumer``) is not its to consume.
"""

import argparse
import json
import logging
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import redis

from tasks.broker import queue_depth
from tasks.settings import settings

logger = logging.getLogger("tasks.watchdog")

REPLY_TIMEOUT_SECONDS = 10
QUEUES_VARIABLE = "CELERY_WORKER_QUEUES"


@dataclass(frozen=True)
class Seen:
    """One look at a worker: what waits for it, and what it says of itself."""

    waiting: int
    answered: bool
    free_processes: int = 0
    taken: int = 0


def is_strike(seen: Seen, taken_before: int | None) -> bool:
    if seen.waiting == 0:
        return False
    if not seen.answered:
        return True
    return seen.free_processes > 0 and taken_before == seen.taken


def look(app, broker: redis.Redis, worker: str, queues: list[str],
         reply_timeout: float) -> Seen:
    inspect = app.control.inspect(destination=[worker], timeout=reply_timeout)
    replies = []
    for ask in (inspect.stats, inspect.active_queues, inspect.active, inspect.reserved):
        replies.append((ask() or {}).get(worker))
        if replies[-1] is None:
            return Seen(waiting=sum(queue_depth(broker, queue) for queue in queues),
                        answered=False)
    stats, consumed, active, reserved = replies
    consumed_names = {queue["name"] for queue in consumed}
    return Seen(
        waiting=sum(queue_depth(broker, queue) for queue in queues if queue in consumed_names),
        answered=True,
        free_processes=stats["pool"]["max-concurrency"] - len(active) - len(reserved),
        taken=sum(stats.get("total", {}).values()),
    )


def watch(app, broker: redis.Redis, workers: dict[str, list[str]], state: dict, *,
          strikes_to_stall: int, reply_timeout: float = REPLY_TIMEOUT_SECONDS,
          ) -> tuple[dict, list[str]]:
    """(the new state, the stalled workers) after one look at every worker."""
    new_state, stalled = {}, []
    for worker, queues in workers.items():
        before = state.get(worker, {})
        seen = look(app, broker, worker, queues, reply_timeout)
        strikes = before.get("strikes", 0) + 1 if is_strike(seen, before.get("taken")) else 0
        if strikes >= strikes_to_stall:
            logger.warning("%s stalled: %d messages wait, %s; restarting it", worker,
                           seen.waiting, "it answers but takes none" if seen.answered
                           else "it does not answer")
            stalled.append(worker)
            strikes = 0
        elif strikes:
            logger.info("%s: strike %d of %d (%d messages wait)", worker, strikes,
                        strikes_to_stall, seen.waiting)
        new_state[worker] = {"strikes": strikes, "taken": seen.taken if seen.answered else None}
    return new_state, stalled


def host_workers(settings_dir: Path, host: str) -> dict[str, list[str]]:
    """{node name: queues} of the worker units whose settings are in settings_dir."""
    workers = {}
    for env_file in sorted(settings_dir.glob("*.env")):
        for line in env_file.read_text().splitlines():
            name, _, value = line.partition("=")
            if name == QUEUES_VARIABLE:
                workers[f"{env_file.stem}@{host}"] = value.split(",")
    return workers


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.watchdog", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=Path, required=True,
                        help="directory of the worker units' NAME.env settings")
    parser.add_argument("--state", type=Path, required=True,
                        help="JSON file kept between runs")
    parser.add_argument("--stalled", type=Path, required=True,
                        help="written with the stalled workers' names, one per line")
    parser.add_argument("--strikes", type=int, default=2,
                        help="strikes in a row that make a worker stalled (default 2)")
    parser.add_argument("--reply-timeout", type=float, default=REPLY_TIMEOUT_SECONDS,
                        help="seconds to wait for a worker's replies "
                             f"(default {REPLY_TIMEOUT_SECONDS})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    workers = host_workers(args.workers, socket.gethostname())
    state = json.loads(args.state.read_text()) if args.state.exists() else {}
    args.stalled.write_text("")
    broker = redis.Redis.from_url(settings().broker_url)
    try:
        broker.ping()
    except redis.exceptions.RedisError as exc:
        logger.warning("broker unreachable (%s): nothing judged this time", exc)
        return 0
    from tasks import app

    state, stalled = watch(app, broker, workers, state, strikes_to_stall=args.strikes,
                           reply_timeout=args.reply_timeout)
    args.state.write_text(json.dumps(state))
    args.stalled.write_text("".join(f"{worker.split('@')[0]}\n" for worker in stalled))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
