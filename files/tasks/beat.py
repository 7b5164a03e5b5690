"""Celery Beat that notes in Redis when it sent each schedule entry (``beat_scheduler``).

Beat keeps its own record of the last runs in a file on its host; tasks.metrics, which
may run elsewhere, reads this hash in the broker instead: ``{entry name: unix time}``.
An entry Beat has not sent yet is noted with the time Beat started scheduling it, so a
Beat that never sends anything still looks stale once twice its interval has passed.
A Redis error while noting is logged and otherwise ignored: it must not stop the schedule.
"""

import logging
import time
from collections.abc import Iterable
from functools import cached_property

import redis
from celery.beat import PersistentScheduler

DISPATCH_KEY = "celery-ray:beat-dispatches"

logger = logging.getLogger(__name__)


class RecordingScheduler(PersistentScheduler):
    @cached_property
    def _redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.app.conf.broker_url)

    def setup_schedule(self):
        super().setup_schedule()
        self._note(self.schedule, first_only=True)

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        result = super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        self._note([entry.name], first_only=False)
        return result

    def _note(self, names: Iterable[str], first_only: bool) -> None:
        now = time.time()
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                for name in names:
                    (pipe.hsetnx if first_only else pipe.hset)(DISPATCH_KEY, name, now)
                pipe.execute()
        except redis.RedisError as exc:
            logger.warning("could not note the Beat dispatch in Redis (%s): %s",
                           DISPATCH_KEY, exc)
