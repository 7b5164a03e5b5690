"""Settings of the task package: the environment plus the JSON file TASKS_CONFIG_FILE.

A leaf of the package: it imports no task module (they all read their settings here).
The deployment renders the file from group_vars (roles/celery_app/templates/tasks.json.j2),
the one source of the Beat schedule, the models to retrain and the queues.

Environment (rendered by the deployment into /etc/celery-ray/celery.env):
  CELERY_BROKER_URL      broker, default redis://127.0.0.1:6380/0
  CELERY_RESULT_BACKEND  result backend, default redis://127.0.0.1:6380/1
  RAY_ADDRESS            Ray head GCS address host:port; required by the tasks that use Ray
  RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH   read by Ray itself
  TASKS_DATA_ROOTS       colon-separated directories task paths must lie in,
                         default /datasets:/models
  TASKS_CONFIG_FILE      the JSON file below (optional; every key in it is optional)

TASKS_CONFIG_FILE keys:
  queues                 the stack's queue names (default ["ml", "data", "default"]);
                         the workers declare these and Celery's own "celery", the
                         metrics count them, Beat entries may send to them
  beat_schedule          {name: {task, schedule, args, kwargs, options}}; schedule is
                         seconds (number) or {"crontab": {minute, hour, day_of_week,
                         day_of_month, month_of_year}}; options: queue (one of queues,
                         or "celery"), priority (0-9), expires; default {} (no entry)
  retrain_models         [{name, dataset, model_config}] trained by retrain_models;
                         default [] (none)
  inbox_dir              where process_new_data finds new CSVs   (/datasets/new)
  processed_dir          where it writes them                    (/datasets/processed)
  models_dir             where trained models are saved          (/models)
  webhook_url            http(s) URL send_notification posts to (channel "webhook")
  retry_backoff_seconds  first retry delay; then x2, x4 (default 60: 60, 120, 240 s)
  ray_fault_timeout_seconds  how long a task waits for an unreachable Ray head, when it
                         connects or while its Ray work runs, before it is retried (60)
  task_events            Celery's task events, for Flower's task views (true)

The checker (tasks.config) judges a file, Beat's task names included, without Redis or Ray:
  python -m tasks.config check /etc/celery-ray/tasks.json
"""

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import urlparse

# The queues of the stack when TASKS_CONFIG_FILE names none (the deployment renders its
# own list there, from the worker queues of group_vars).
DEFAULT_QUEUES = ("ml", "data", "default")
# Celery's own default queue: the spec's bare clients send there without `queue=`.
BARE_CLIENT_QUEUE = "celery"

BEAT_ENTRY_KEYS = {"task", "schedule", "args", "kwargs", "options"}
BEAT_OPTION_KEYS = {"queue", "priority", "expires"}
CRONTAB_KEYS = {"minute", "hour", "day_of_week", "day_of_month", "month_of_year"}
RETRAIN_KEYS = {"name", "dataset", "model_config"}
DIR_KEYS = ("inbox_dir", "processed_dir", "models_dir")
TOP_LEVEL_KEYS = {
    "queues", "beat_schedule", "retrain_models", "webhook_url", "retry_backoff_seconds",
    "task_events", "ray_fault_timeout_seconds", *DIR_KEYS,
}


class ConfigError(ValueError):
    """TASKS_CONFIG_FILE is unreadable or invalid."""


@dataclass(frozen=True)
class Settings:
    broker_url: str = "redis://127.0.0.1:6380/0"
    result_backend: str = "redis://127.0.0.1:6380/1"
    ray_address: str | None = None
    data_roots: tuple[str, ...] = ("/datasets", "/models")
    queues: tuple[str, ...] = DEFAULT_QUEUES
    beat_schedule: dict[str, dict[str, Any]] = field(default_factory=dict)
    retrain_models: list[dict[str, Any]] = field(default_factory=list)
    inbox_dir: str = "/datasets/new"
    processed_dir: str = "/datasets/processed"
    models_dir: str = "/models"
    webhook_url: str | None = None
    retry_backoff_seconds: float = 60
    task_events: bool = True
    ray_fault_timeout_seconds: float = 60

    @property
    def stack_queues(self) -> tuple[str, ...]:
        """Every queue the stack serves: its own, then Celery's default one."""
        return (*self.queues, BARE_CLIENT_QUEUE)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _unknown_keys(where: str, given: dict, allowed: set[str]) -> list[str]:
    unknown = set(given) - allowed
    if not unknown:
        return []
    return [f"{where}unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}"]


def _schedule_errors(where: str, schedule: Any) -> list[str]:
    if _is_number(schedule):
        return [] if schedule > 0 else [f"{where}.schedule: {schedule} must be > 0 seconds"]
    if not (isinstance(schedule, dict) and set(schedule) == {"crontab"}):
        return [
            f"{where}.schedule: {schedule!r} is neither seconds (a number) nor "
            '{"crontab": {minute, hour, day_of_week, day_of_month, month_of_year}}'
        ]
    fields = schedule["crontab"]
    if not isinstance(fields, dict):
        return [f"{where}.schedule.crontab must be an object, got {fields!r}"]
    unknown = _unknown_keys(f"{where}.schedule.crontab: ", fields, CRONTAB_KEYS)
    if unknown:
        return unknown
    from celery.schedules import crontab

    try:
        crontab(**{key: str(value) for key, value in fields.items()})
    except (ValueError, TypeError) as exc:
        return [f"{where}.schedule.crontab: {exc}"]
    return []


def _queues_errors(queues: Any) -> list[str]:
    if not (isinstance(queues, list) and queues):
        return [f"queues must be a non-empty list of queue names, got {queues!r}"]
    errors = [f"queues[{index}]: {name!r} must be a non-empty string"
              for index, name in enumerate(queues) if not (isinstance(name, str) and name)]
    names = [name for name in queues if isinstance(name, str)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        errors.append(f"queues: {repeated} named more than once")
    if BARE_CLIENT_QUEUE in names:
        errors.append(f"queues: {BARE_CLIENT_QUEUE!r} is Celery's own default queue, "
                      "served anyway; leave it out")
    return errors


def _options_errors(where: str, options: Any, queues: Iterable[str]) -> list[str]:
    if not isinstance(options, dict):
        return [f"{where}.options must be an object, got {options!r}"]
    errors = _unknown_keys(f"{where}.options: ", options, BEAT_OPTION_KEYS)
    queue = options.get("queue")
    allowed = [*queues, BARE_CLIENT_QUEUE]
    if queue is not None and queue not in allowed:
        errors.append(f"{where}.options.queue: {queue!r} is not one of {allowed}")
    priority = options.get("priority")
    if priority is not None and not (
        isinstance(priority, int) and not isinstance(priority, bool) and 0 <= priority <= 9
    ):
        errors.append(f"{where}.options.priority: {priority!r} is outside 0-9; "
                      "use an integer from 0 (lowest) to 9 (highest)")
    return errors


def _beat_errors(schedule: Any, task_names: set[str] | None,
                 queues: Iterable[str]) -> list[str]:
    if not isinstance(schedule, dict):
        return [f"beat_schedule must be an object of entries, got {schedule!r}"]
    errors = []
    for name, entry in schedule.items():
        where = f"beat_schedule[{name!r}]"
        if not isinstance(entry, dict):
            errors.append(f"{where} must be an object, got {entry!r}")
            continue
        errors += _unknown_keys(f"{where}: ", entry, BEAT_ENTRY_KEYS)
        task = entry.get("task")
        if task_names is not None and task not in task_names:
            errors.append(f"{where}.task: unknown task {task!r}; known: {sorted(task_names)}")
        if "schedule" not in entry:
            errors.append(f"{where}: missing 'schedule' (seconds or crontab)")
        else:
            errors += _schedule_errors(where, entry["schedule"])
        if not isinstance(entry.get("args", []), list):
            errors.append(f"{where}.args must be a list")
        if not isinstance(entry.get("kwargs", {}), dict):
            errors.append(f"{where}.kwargs must be an object")
        errors += _options_errors(where, entry.get("options", {}), queues)
    return errors


def _retrain_errors(models: Any) -> list[str]:
    if not isinstance(models, list):
        return [f"retrain_models must be a list of {sorted(RETRAIN_KEYS)}, got {models!r}"]
    errors = []
    for index, model in enumerate(models):
        where = f"retrain_models[{index}]"
        if not isinstance(model, dict):
            errors.append(f"{where} must be an object, got {model!r}")
            continue
        errors += _unknown_keys(f"{where}: ", model, RETRAIN_KEYS)
        for key in ("name", "dataset"):
            if not (isinstance(model.get(key), str) and model[key]):
                errors.append(f"{where}.{key} must be a non-empty string")
        if not isinstance(model.get("model_config", {}), dict):
            errors.append(f"{where}.model_config must be an object")
    return errors


def validate(document: Any, task_names: set[str] | None = None) -> list[str]:
    """Every problem of a TASKS_CONFIG_FILE document, one message each ([] = valid).

    Beat's task names are checked against task_names when given: the checker
    (tasks.config) gives the package's own, before the deployment installs the file.
    settings() checks the rest only, so that reading the settings imports no task module
    (they read the settings themselves). A Beat entry's queue must be one of the
    document's queues (the default ones when it names none), or Celery's "celery".
    """
    if not isinstance(document, dict):
        return ["the top level must be a JSON object"]
    errors = _unknown_keys("", document, TOP_LEVEL_KEYS)
    queues = document.get("queues", list(DEFAULT_QUEUES))
    if "queues" in document:
        errors += _queues_errors(queues)
    if "beat_schedule" in document:
        errors += _beat_errors(document["beat_schedule"], task_names,
                               queues if isinstance(queues, list) else [])
    if "retrain_models" in document:
        errors += _retrain_errors(document["retrain_models"])
    for key in DIR_KEYS:
        value = document.get(key)
        if value is not None and not (isinstance(value, str) and value.startswith("/")):
            errors.append(f"{key}: {value!r} must be an absolute path")
    url = document.get("webhook_url")
    if url is not None and not (
        isinstance(url, str) and urlparse(url).scheme in ("http", "https")
    ):
        errors.append(f"webhook_url: {url!r} must be an http:// or https:// URL")
    for key in ("retry_backoff_seconds", "ray_fault_timeout_seconds"):
        value = document.get(key)
        if value is not None and not (_is_number(value) and value > 0):
            errors.append(f"{key}: {value!r} must be a number > 0")
    events = document.get("task_events")
    if events is not None and not isinstance(events, bool):
        errors.append(f"task_events: {events!r} must be true or false")
    return errors


def read_document(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc


@cache
def settings() -> Settings:
    """The settings of this process, read once (a change needs a restart)."""
    env = os.environ
    document: dict[str, Any] = {}
    path = env.get("TASKS_CONFIG_FILE")
    if path:
        document = read_document(path)
        errors = validate(document)
        if errors:
            raise ConfigError(f"{path}: " + "; ".join(errors))
    defaults = Settings()
    roots = env.get("TASKS_DATA_ROOTS")
    return Settings(
        broker_url=env.get("CELERY_BROKER_URL", defaults.broker_url),
        result_backend=env.get("CELERY_RESULT_BACKEND", defaults.result_backend),
        ray_address=env.get("RAY_ADDRESS", defaults.ray_address),
        data_roots=tuple(r for r in roots.split(":") if r) if roots else defaults.data_roots,
        **{key: tuple(value) if key == "queues" else value for key, value in document.items()},
    )

