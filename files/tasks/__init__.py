"""The Celery app of the celery-ray stack: ``celery -A tasks worker|beat|flower``.

Tasks: tasks.ml_tasks (queue ml), tasks.data_tasks (data), tasks.simple_tasks (default).
Settings: tasks.settings (environment + TASKS_CONFIG_FILE), tasks.celeryconfig; their
checker: ``python -m tasks.config check PATH``.
Priorities: tasks.broker. Clients: tasks.client. Metrics for Prometheus: tasks.metrics
(Beat notes its dispatches for it: tasks.beat).

``tasks.app`` is made on first use (tasks.application), so the Ray workers, which import
tasks.csvwork and tasks.ml only, never load Celery. The app imports only Celery: Ray,
scikit-learn, pandas and pyarrow are imported inside the task bodies, so the prefork
parent, Beat, Flower and the config checker stay light.
"""


def __getattr__(name: str):
    if name == "app":
        from tasks.application import app

        return app
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
