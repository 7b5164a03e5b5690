"""The Celery app itself, ``tasks.app``: made on first use of that name (tasks/__init__.py).

The app names its task modules (``include``) instead of importing them: they import the
app to register their tasks (tasks.base). Celery imports them when a worker starts, and
:func:`known_task_names` when the checker or the client asks for the names.
"""

from celery import Celery

import tasks.broker  # noqa: F401  (registers the workers' priority polling)

app = Celery(
    "tasks",
    include=["tasks.ml_tasks", "tasks.data_tasks", "tasks.simple_tasks"],
)
app.config_from_object("tasks.celeryconfig")


def known_task_names() -> set[str]:
    """Names of every task the package registers (imports Celery only, not Ray/sklearn)."""
    app.loader.import_default_modules()
    return {name for name in app.tasks if name.startswith("tasks.")}
