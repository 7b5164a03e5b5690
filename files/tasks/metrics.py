"""Prometheus metrics of the broker: the true depth of every queue, and Beat's dispatches.

Stock exporters count ``LLEN(queue)`` only. This stack keeps one Redis list per priority
(tasks.broker: ``<queue>`` for 0, ``<queue>\\x06\\x16<n>`` for n = 1..9), so they miss
every message sent with a priority. Here, per queue (label ``queue_name``, as
celery-exporter names it, so that celery-mixin's panels and alerts read the true depth):

  celery_queue_length          messages waiting, summed over every priority list
  celery_queue_unacked         messages delivered to a worker and not yet acknowledged
                               (the broker's ``unacked`` hash, by routing key)
  celery_queue_stalled_seconds how long the queue has held messages without handing one
                               to a worker (0 when it is empty)

and per Beat schedule entry (tasks.beat notes the dispatches):

  celery_beat_last_dispatch_timestamp_seconds  when Beat last sent it
  celery_beat_interval_seconds                 its interval (entries given in seconds)

The age of the oldest waiting message is not among them: a Celery message carries no
time it was sent, and Redis lists keep none, so it cannot be read cheaply.
``celery_broker_up`` is 0 when the broker could not be read; the other metrics are then
left out of that scrape.

    python -m tasks.metrics serve --address 10.0.0.84 --port 9808   # the exporter
    python -m tasks.metrics show                                     # the depth now, as JSON

Both read the broker at CELERY_BROKER_URL and the schedule from TASKS_CONFIG_FILE
(tasks.settings); the service runs with a Redis user that may only read.
"""

import argparse
import hashlib
import json
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from kombu.transport.redis import Channel
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import GaugeMetricFamily

from tasks.beat import DISPATCH_KEY
from tasks.broker import priority_lists
from tasks.settings import settings

UNACKED_KEY = Channel.unacked_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListEnd:
    """One priority list as seen at one scrape: its length and the message next out.

    Workers pop from the right end (BRPOP), so the rightmost message is the next to go;
    ``next_out`` is a digest of it (each kombu message carries a unique delivery tag).
    """

    length: int
    next_out: bytes | None

    @classmethod
    def read(cls, length: int, rightmost: bytes | None) -> "ListEnd":
        digest = hashlib.blake2b(rightmost, digest_size=16).digest() if rightmost else None
        return cls(length, digest)

    def gave_out_since(self, earlier: "ListEnd | None") -> bool:
        """Whether a message left the list between the earlier look and this one."""
        return earlier is not None and earlier.length > 0 and earlier.next_out != self.next_out


class StallClock:
    """Seconds a queue has held messages without handing one to a worker, from scrapes.

    The clock starts when a scrape finds the queue newly non-empty and restarts whenever
    a message left one of its lists since the scrape before (at the scrapes' resolution).
    """

    def __init__(self) -> None:
        self._lists: Mapping[str, ListEnd] = {}
        self._since: float | None = None

    def observe(self, now: float, lists: Mapping[str, ListEnd]) -> float:
        waiting = sum(end.length for end in lists.values()) > 0
        moved = any(end.gave_out_since(self._lists.get(name)) for name, end in lists.items())
        if not waiting:
            self._since = None
        elif self._since is None or moved:
            self._since = now
        self._lists = lists
        return 0.0 if self._since is None else now - self._since


def unacked_by_queue(values: Iterable[bytes], queues: Iterable[str]) -> dict[str, int]:
    """Count the ``unacked`` hash's messages per queue.

    kombu stores each as JSON ``[message, exchange, routing_key]``; the stack's queues are
    bound under their own names, so the routing key is the queue.
    """
    counts = Counter()
    for value in values:
        try:
            routing_key = json.loads(value)[2]
        except (ValueError, IndexError, TypeError):
            continue
        counts[routing_key] += 1
    return {queue: counts[queue] for queue in queues}


def schedule_intervals(schedule: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The interval of each Beat entry given in seconds (crontab entries have none)."""
    return {name: float(entry["schedule"]) for name, entry in schedule.items()
            if isinstance(entry["schedule"], int | float)}


@dataclass(frozen=True)
class BrokerReading:
    lists: dict[str, dict[str, ListEnd]]
    unacked: dict[str, int]
    dispatches: dict[str, float]

    def depth(self, queue: str) -> int:
        return sum(end.length for end in self.lists[queue].values())


def read_broker(client: redis.Redis, queues: Iterable[str]) -> BrokerReading:
    """Everything the metrics need, in one round trip of read-only commands."""
    names = {queue: priority_lists(queue) for queue in queues}
    with client.pipeline(transaction=False) as pipe:
        for lists in names.values():
            for name in lists:
                pipe.llen(name)
                pipe.lindex(name, -1)
        pipe.hvals(UNACKED_KEY)
        pipe.hgetall(DISPATCH_KEY)
        *ends, unacked, dispatches = pipe.execute()
    pairs = iter(zip(ends[::2], ends[1::2], strict=True))
    return BrokerReading(
        lists={queue: {name: ListEnd.read(*next(pairs)) for name in lists}
               for queue, lists in names.items()},
        unacked=unacked_by_queue(unacked, list(names)),
        dispatches={name.decode(): float(when) for name, when in dispatches.items()},
    )


class BrokerCollector:
    """A prometheus_client collector that reads the broker at every scrape."""

    def __init__(self, client: redis.Redis, queues: Iterable[str],
                 schedule: Mapping[str, Mapping[str, Any]],
                 clock: Callable[[], float] = time.time):
        self._client = client
        self._queues = list(queues)
        self._schedule = schedule
        self._clock = clock
        self._stalls = {queue: StallClock() for queue in self._queues}
        # Scrapes may overlap (the HTTP server is threaded); the stall clocks are shared.
        self._lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("celery_broker_up",
                               "Whether the broker (Redis) could be read at this scrape")
        with self._lock:
            try:
                reading = read_broker(self._client, self._queues)
            except redis.RedisError as exc:
                logger.warning("cannot read the broker: %s", exc)
                up.add_metric([], 0)
                yield up
                return
            now = self._clock()
            stalled = {queue: self._stalls[queue].observe(now, reading.lists[queue])
                       for queue in self._queues}
        up.add_metric([], 1)
        yield up
        yield from self._queue_metrics(reading, stalled)
        yield from self._beat_metrics(reading.dispatches)

    def _queue_metrics(self, reading: BrokerReading,
                       stalled: dict[str, float]) -> Iterator[GaugeMetricFamily]:
        families = {
            "length": GaugeMetricFamily(
                "celery_queue_length", "Messages waiting in the queue, every priority list",
                labels=["queue_name"]),
            "unacked": GaugeMetricFamily(
                "celery_queue_unacked",
                "Messages of the queue delivered to a worker and not yet acknowledged",
                labels=["queue_name"]),
            "stalled": GaugeMetricFamily(
                "celery_queue_stalled_seconds",
                "Seconds the queue has held messages without handing one to a worker",
                labels=["queue_name"]),
        }
        for queue in self._queues:
            families["length"].add_metric([queue], reading.depth(queue))
            families["unacked"].add_metric([queue], reading.unacked[queue])
            families["stalled"].add_metric([queue], stalled[queue])
        yield from families.values()

    def _beat_metrics(self, dispatches: dict[str, float]) -> Iterator[GaugeMetricFamily]:
        last = GaugeMetricFamily(
            "celery_beat_last_dispatch_timestamp_seconds",
            "When Beat last sent the schedule entry (or began scheduling it)",
            labels=["entry"])
        interval = GaugeMetricFamily(
            "celery_beat_interval_seconds", "Interval of the schedule entry",
            labels=["entry"])
        for name in self._schedule:
            if name in dispatches:
                last.add_metric([name], dispatches[name])
        for name, seconds in schedule_intervals(self._schedule).items():
            interval.add_metric([name], seconds)
        yield last
        yield interval


def broker_client() -> redis.Redis:
    return redis.Redis.from_url(settings().broker_url, socket_timeout=10,
                                socket_connect_timeout=10)


def serve(address: str, port: int) -> None:
    REGISTRY.register(BrokerCollector(broker_client(), settings().stack_queues,
                                      settings().beat_schedule))
    _, thread = start_http_server(port, address)
    logger.info("serving the broker's metrics on %s:%d/metrics", address, port)
    thread.join()


def show() -> dict[str, dict[str, int]]:
    queues = settings().stack_queues
    reading = read_broker(broker_client(), queues)
    return {queue: {"waiting": reading.depth(queue), "unacked": reading.unacked[queue]}
            for queue in queues}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.metrics", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="serve the metrics for Prometheus")
    serving.add_argument("--address", required=True, help="address to listen on")
    serving.add_argument("--port", type=int, required=True, help="port to listen on")
    commands.add_parser("show", help="print every queue's depth and unacked count as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.command == "serve":
        serve(args.address, args.port)
        return 0
    try:
        print(json.dumps(show(), indent=2))
    except redis.RedisError as exc:
        print(f"cannot read the broker at CELERY_BROKER_URL: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
