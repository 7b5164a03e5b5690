"""Make ``priority=9`` mean "served first" on the Redis broker, for every client.

How kombu's Redis transport handles priorities (kombu/transport/redis.py, 5.x):

* A publisher files a message under one Redis list per priority step. The steps come
  from the publisher's own transport option ``priority_steps`` (default ``[0, 3, 6, 9]``);
  a priority is rounded down to a step, and the list is ``<queue>`` for step 0 and
  ``<queue>\\x06\\x16<step>`` otherwise. The spec's bare client
  ``Celery(broker=..., backend=...)`` therefore puts priority 9 in ``celery\\x06\\x169``
  and priority 0 (or none) in ``celery``.
* A consumer issues one ``BRPOP`` over the lists of all its queues, ordered by its own
  ``priority_steps``, and Redis pops from the first non-empty list. Stock kombu orders the
  steps ascending, so step 0 is polled first: on Redis, out of the box, 0 is the *highest*
  priority, the opposite of what the spec (and AMQP) mean.

What the workers do about it: ``celeryconfig`` gives every process
``priority_steps = 0..9`` (a list per priority, a superset of the default steps, so the
lists a bare client writes are all polled), and the workers' connection uses
:class:`HighFirstRedisTransport`, whose channel polls those lists from 9 down to 0.
Publishing (which lists a message goes to) is unchanged and identical to stock kombu, so
bare clients, Beat, Flower and the package's own client need nothing special.
Messages without a priority count as 0, the lowest.
"""

from celery.signals import celeryd_init
from kombu.transport import redis as kombu_redis

TRANSPORT = "tasks.broker:HighFirstRedisTransport"
# One Redis list per priority 0..9 (celeryconfig's priority_steps); polled 9 first.
PRIORITY_STEPS = list(range(10))


def priority_lists(queue: str) -> list[str]:
    """The Redis lists a queue's messages wait in, one per priority step."""
    return [queue if step == 0 else f"{queue}{kombu_redis.Channel.sep}{step}"
            for step in PRIORITY_STEPS]


def queue_depth(client, queue: str) -> int:
    """Messages waiting in a queue, every priority counted (LLEN of one list undercounts)."""
    with client.pipeline(transaction=False) as pipe:
        for name in priority_lists(queue):
            pipe.llen(name)
        return sum(pipe.execute())


class _TransportWithClient:
    """The channel's transport, with the kombu Connection it was opened for as ``client``."""

    def __init__(self, transport, client):
        self._transport = transport
        self.client = client

    def __getattr__(self, name):
        return getattr(self._transport, name)


class HighFirstRedisChannel(kombu_redis.Channel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # BRPOP lists its keys in this order and Redis pops the first non-empty one.
        self.priority_steps = sorted(self.priority_steps, reverse=True)
        # The kombu Connection this channel belongs to, kept for _connparams below.
        self._opened_for = self.connection.client

    def _connparams(self, asynchronous=False):
        """Redis connection parameters, also after the kombu Connection let go of us.

        When the broker connection drops (Redis restarts), the worker's consumer calls
        ``Connection.collect()``, which sets the transport's ``client`` to None, and then
        ``Connection.close()``, which closes this channel. Closing puts the unacknowledged
        messages back (``QoS.restore_unacked_once``), and a late-acknowledged task that was
        running acks its message on this channel when it finishes: both open a new Redis
        pool, and stock kombu builds its parameters from ``self.connection.client``, now
        None. The AttributeError ("'NoneType' object has no attribute 'hostname'") escapes
        Celery's handling of connection errors: the worker stops with "Unrecoverable
        error" (seen with celery 5.7.0 / kombu 5.7.0, files/tasks/requirements.txt), and
        the finished task's message stays unacknowledged, to be run again after the
        visibility timeout. The same error in the same place upstream: celery/kombu#582
        (a channel closed after its connection let go of the transport) and the lost
        restore on close of celery/kombu#970.

        Here the channel builds its parameters from the Connection it was opened for, so
        the restore either reaches Redis or fails with a connection error that Celery
        handles (it retries the connection), and the late ack reaches the restarted Redis.
        """
        transport = self.connection
        if transport is None or transport.client is not None or self._opened_for is None:
            return super()._connparams(asynchronous=asynchronous)
        self.connection = _TransportWithClient(transport, self._opened_for)
        try:
            return super()._connparams(asynchronous=asynchronous)
        finally:
            self.connection = transport

    def priority(self, n):
        """The step a priority is filed under: the largest step not above it (as stock)."""
        return max((step for step in self.priority_steps if step <= n),
                   default=min(self.priority_steps))


class HighFirstRedisTransport(kombu_redis.Transport):
    Channel = HighFirstRedisChannel


@celeryd_init.connect
def _workers_poll_high_priority_first(conf=None, **_):
    """Only consuming needs the reversed order; set it for worker processes alone."""
    if conf is not None and conf.broker_url.startswith("redis://"):
        conf.broker_transport = TRANSPORT
