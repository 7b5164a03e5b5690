"""The Celery app of the celery-ray stack: ``celery -A tasks worker|beat|flower``.

Tasks: tasks.ml_tasks (queue ml), tasks.data_tasks (data), tasks.simple_tasks (default).
Settings: tasks.config (environment + TASKS_CONFIG_FILE), tasks.celeryconfig.
Priorities: tasks.broker. Clients: tasks.client.

Only Celery is imported here: Ray, scikit-learn, pandas and pyarrow are imported inside
the task bodies, so the prefork parent, Beat, Flower and the config checker stay light.
"""

from celery import Celery

import tasks.broker  # noqa: F401  (registers the workers' priority polling)

app = Celery(
    "tasks",
    include=["tasks.ml_tasks", "tasks.data_tasks", "tasks.simple_tasks"],
)
app.config_from_object("tasks.celeryconfig")
