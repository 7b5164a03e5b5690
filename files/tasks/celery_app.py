"""The Celery app itself, ``tasks.app``: made on first use of that name (tasks/__init__.py)."""

from celery import Celery

import tasks.broker  # noqa: F401  (registers the workers' priority polling)

app = Celery(
    "tasks",
    include=["tasks.ml_tasks", "tasks.data_tasks", "tasks.simple_tasks"],
)
app.config_from_object("tasks.celeryconfig")
