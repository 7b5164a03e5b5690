"""The broker's metrics (tasks.metrics) and Beat's dispatch notes (tasks.beat): the pure
parts on their own, then against a real Redis with messages at several priorities, read
as the read-only Redis user the deployment gives the collector."""

import secrets
import time

import pytest
import redis
import yaml
from celery import Celery
from kombu import Connection
from prometheus_client import CollectorRegistry
from tasks import metrics
from tasks.beat import DISPATCH_KEY, RecordingScheduler
from tasks.broker import PRIORITY_STEPS, priority_lists
from tasks.client import make_client

from testbed import ROOT, RedisServer

GROUP_VARS = yaml.safe_load((ROOT / "group_vars/all/main.yml").read_text())
COLLECTOR_RULES = GROUP_VARS["monitoring_redis_users"]["queue_metrics"]["rules"]
PING = "tasks.simple_tasks.ping"


def ends(*lengths_and_tails) -> dict[str, metrics.ListEnd]:
    return {f"list{index}": metrics.ListEnd(length, tail)
            for index, (length, tail) in enumerate(lengths_and_tails)}


# --- Pure parts --------------------------------------------------------------------------

def test_priority_lists_are_kombus_names_for_every_step():
    assert priority_lists("ml") == ["ml", *(f"ml\x06\x16{step}" for step in range(1, 10))]
    assert len(PRIORITY_STEPS) == 10


def test_the_stall_clock_runs_while_nothing_leaves_a_non_empty_queue():
    clock = metrics.StallClock()
    assert clock.observe(100, ends((0, None), (0, None))) == 0
    assert clock.observe(105, ends((2, b"a"), (0, None))) == 0  # became non-empty
    assert clock.observe(110, ends((3, b"a"), (0, None))) == 5  # one more arrived, none left
    assert clock.observe(120, ends((3, b"a"), (1, b"x"))) == 15
    assert clock.observe(125, ends((3, b"b"), (1, b"x"))) == 0  # "a" went to a worker
    assert clock.observe(130, ends((3, b"b"), (0, None))) == 0  # "x" went
    assert clock.observe(131, ends((3, b"b"), (0, None))) == 1
    assert clock.observe(140, ends((0, None), (0, None))) == 0  # emptied


def test_a_list_first_seen_with_messages_starts_the_clock_without_counting_as_moved():
    clock = metrics.StallClock()
    assert clock.observe(50, ends((4, b"a"))) == 0
    assert clock.observe(80, ends((4, b"a"))) == 30


def test_unacked_messages_are_counted_by_routing_key_and_junk_is_skipped():
    values = [b'[{"body": "x"}, "ml", "ml"]', b'[{}, "ml", "ml"]', b'[{}, "", "default"]',
              b"not json", b'["too short"]', b'[{}, "x", "elsewhere"]']
    assert metrics.unacked_by_queue(values, ["ml", "data", "default"]) == {
        "ml": 2, "data": 0, "default": 1}


def test_only_entries_given_in_seconds_have_an_interval():
    schedule = {"health": {"schedule": 300}, "hourly": {"schedule": 3600.0},
                "nightly": {"schedule": {"crontab": {"minute": "0", "hour": "3"}}}}
    assert metrics.schedule_intervals(schedule) == {"health": 300.0, "hourly": 3600.0}


# --- Against Redis -----------------------------------------------------------------------

@pytest.fixture
def broker(tmp_path, monkeypatch):
    """A Redis of its own (no worker consumes it) and the collector's read-only user.
    Celery's CELERY_BROKER_URL, which the session's stack sets, would win over the URLs
    the clients here are given."""
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    monkeypatch.delenv("CELERY_RESULT_BACKEND", raising=False)
    server = RedisServer(tmp_path).start()
    admin_url = server.url(0)
    admin = redis.Redis.from_url(admin_url)
    collector_password = secrets.token_hex(16)
    admin.execute_command("ACL", "SETUSER", "queue-metrics", "reset", "on",
                          f">{collector_password}", "-@all", *COLLECTOR_RULES)
    yield admin_url, f"redis://queue-metrics:{collector_password}@127.0.0.1:{server.port}/0"
    admin.close()
    server.stop()


def collected(collector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def test_the_depth_counts_every_priority_list_of_both_clients(broker):
    admin_url, collector_url = broker
    documented = make_client(admin_url, admin_url)
    bare = Celery(broker=admin_url, backend=admin_url)
    for priority in (0, 4, 9, 9):
        documented.send_task(PING, queue="ml", priority=priority)
    for priority in (5, 8):  # the bare client files these under its steps 3 and 6
        bare.send_task(PING, queue="ml", priority=priority)
    collector = metrics.BrokerCollector(redis.Redis.from_url(collector_url),
                                        ["ml", "data"], schedule={})
    registry = collected(collector)
    assert registry.get_sample_value("celery_broker_up") == 1
    assert registry.get_sample_value("celery_queue_length", {"queue_name": "ml"}) == 6
    assert registry.get_sample_value("celery_queue_length", {"queue_name": "data"}) == 0
    # What LLEN of the queue's own name (the stock exporters' count) sees of them:
    assert redis.Redis.from_url(admin_url).llen("ml") == 1


def test_a_delivered_message_counts_as_unacked_until_acknowledged(broker):
    admin_url, collector_url = broker
    make_client(admin_url, admin_url).send_task(PING, queue="data", priority=7)
    reader = redis.Redis.from_url(collector_url)
    with Connection(admin_url, transport_options={"priority_steps": PRIORITY_STEPS}) as conn:
        message = conn.SimpleQueue("data").get(timeout=10)
        reading = metrics.read_broker(reader, ["data", "ml"])
        assert (reading.depth("data"), reading.unacked) == (0, {"data": 1, "ml": 0})
        message.ack()
    assert metrics.read_broker(reader, ["data"]).unacked == {"data": 0}


def test_the_stall_clock_sees_a_message_leave(broker):
    admin_url, collector_url = broker
    client = make_client(admin_url, admin_url)
    for _ in range(2):
        client.send_task(PING, queue="default")
    now = [1000.0]
    registry = collected(metrics.BrokerCollector(redis.Redis.from_url(collector_url),
                                                 ["default"], schedule={},
                                                 clock=lambda: now[0]))

    def stalled():
        return registry.get_sample_value("celery_queue_stalled_seconds",
                                         {"queue_name": "default"})

    assert stalled() == 0
    now[0] += 30
    assert stalled() == 30
    redis.Redis.from_url(admin_url).rpop("default")  # what a worker's BRPOP does
    now[0] += 30
    assert stalled() == 0


def test_beat_notes_each_entry_then_each_dispatch(broker, tmp_path):
    admin_url, collector_url = broker
    app = make_client(admin_url, admin_url)
    schedule = {"tick": {"task": PING, "schedule": 30, "options": {"queue": "default"}}}
    app.conf.beat_schedule = schedule
    started = time.time()
    scheduler = RecordingScheduler(app, schedule_filename=str(tmp_path / "beat-schedule"))
    try:
        admin = redis.Redis.from_url(admin_url)
        noted_at_start = float(admin.hget(DISPATCH_KEY, "tick"))
        assert noted_at_start >= started
        scheduler.apply_async(scheduler.schedule["tick"], producer=scheduler.producer)
        assert float(admin.hget(DISPATCH_KEY, "tick")) >= noted_at_start
        assert admin.llen("default") == 1
    finally:
        scheduler.close()
    registry = collected(metrics.BrokerCollector(redis.Redis.from_url(collector_url),
                                                 ["default"], schedule))
    assert registry.get_sample_value("celery_beat_interval_seconds", {"entry": "tick"}) == 30
    assert registry.get_sample_value("celery_beat_last_dispatch_timestamp_seconds",
                                     {"entry": "tick"}) >= started


def test_the_collector_reports_the_broker_down_instead_of_failing():
    nothing_listens = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=5)
    registry = collected(metrics.BrokerCollector(nothing_listens, ["ml"], schedule={}))
    assert registry.get_sample_value("celery_broker_up") == 0
    assert registry.get_sample_value("celery_queue_length", {"queue_name": "ml"}) is None
