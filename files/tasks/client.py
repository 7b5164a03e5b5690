"""The documented client: routes and priorities exactly as the workers expect.

    from tasks.client import make_client
    app = make_client("redis://:PASSWORD@HOST:6380/0", "redis://:PASSWORD@HOST:6380/1")
    app.send_task("tasks.ml_tasks.distributed_training", kwargs={...}, priority=9)

A task name is routed to its queue by module (ml_tasks -> ml, data_tasks -> data,
simple_tasks -> default) without ``queue=``, and every priority 0-9 gets a Redis list of
its own (the spec's bare client rounds 1-2, 4-5, 7-8 down to 0, 3, 6). Before sending,
``send_task`` refuses (InvalidInput) a task name the package does not have and arguments
above the size limit of tasks.arguments, which the workers would refuse anyway. Importing
it needs Celery only (not Ray, not scikit-learn).
"""

from celery import Celery

from tasks import celeryconfig
from tasks.application import known_task_names
from tasks.arguments import check_argument_size
from tasks.errors import InvalidInput


class Client(Celery):
    def send_task(self, name, args=None, kwargs=None, **options):
        known = known_task_names()
        if name not in known:
            raise InvalidInput(f"unknown task {name!r}; known: {sorted(known)}")
        check_argument_size(args, kwargs)
        return super().send_task(name, args, kwargs, **options)


def make_client(broker_url: str, backend_url: str) -> Celery:
    client = Client("tasks-client", broker=broker_url, backend=backend_url)
    client.conf.update(
        broker_transport_options=celeryconfig.broker_transport_options,
        result_backend_transport_options=celeryconfig.result_backend_transport_options,
        task_routes=celeryconfig.task_routes,
        task_queues=celeryconfig.task_queues,
        task_default_queue=celeryconfig.task_default_queue,
        task_serializer=celeryconfig.task_serializer,
        accept_content=celeryconfig.accept_content,
        result_extended=celeryconfig.result_extended,
    )
    return client
