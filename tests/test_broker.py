"""The workers' Redis channel (tasks.broker) still reaches Redis after its kombu Connection
has let go of the transport, as happens when Redis restarts under a running worker."""

import pytest
from kombu import Connection
from kombu.transport import redis as kombu_redis
from tasks import broker

from testbed import RedisServer


@pytest.fixture
def redis_url(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server.url(0)
    server.stop()


def let_go(channel):
    """What the worker's consumer does on a lost broker connection: Connection.collect()
    clears the transport's client, and the channel's pools are gone; a late ack or the
    restore of unacknowledged messages then needs a new pool."""
    channel.connection.client = None
    channel._disconnect_pools()


def test_the_workers_channel_reconnects_after_the_connection_let_go(redis_url):
    connection = Connection(redis_url, transport=broker.TRANSPORT)
    channel = connection.channel()
    assert isinstance(channel, broker.HighFirstRedisChannel)
    let_go(channel)
    with channel.conn_or_acquire() as client:
        assert client.ping()
    assert channel.connection.client is None  # the transport itself is left as it was


def test_stock_kombu_still_fails_there(redis_url):
    """If this starts passing without the error, kombu fixed it upstream (celery/kombu#582):
    HighFirstRedisChannel._connparams can then go."""
    channel = Connection(redis_url).channel()
    assert type(channel) is kombu_redis.Channel
    let_go(channel)
    with pytest.raises(AttributeError, match="hostname"), channel.conn_or_acquire():
        pass
