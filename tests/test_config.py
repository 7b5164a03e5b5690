"""Settings, the TASKS_CONFIG_FILE checker and the Celery configuration (no Redis/Ray)."""

import json
import subprocess
import sys

import pytest
from celery.schedules import crontab
from tasks import app, celeryconfig, data_tasks, ml_tasks, simple_tasks  # noqa: F401
from tasks.raycluster import ensure_ray
from tasks.settings import ConfigError, validate

from testbed import PACKAGE_PARENT


def check(tmp_path, document) -> subprocess.CompletedProcess:
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    # The file in use is broken: the checker must judge the given file alone.
    in_use = tmp_path / "in-use.json"
    in_use.write_text("{broken")
    return subprocess.run(
        [sys.executable, "-m", "tasks.config", "check", str(path)],
        cwd=PACKAGE_PARENT, capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "TASKS_CONFIG_FILE": str(in_use)},
    )


def test_checker_accepts_the_contract_example(tmp_path):
    document = {
        "queues": ["ml", "data", "default"],
        "beat_schedule": {
            "daily-model-retraining": {"task": "tasks.ml_tasks.retrain_models",
                                       "schedule": 86400, "args": [], "kwargs": {},
                                       "options": {"queue": "ml", "priority": 9}},
            "nightly": {"task": "tasks.simple_tasks.cleanup_old_results",
                        "schedule": {"crontab": {"minute": "0", "hour": "3", "day_of_week": "*",
                                                 "day_of_month": "*", "month_of_year": "*"}}},
        },
        "retrain_models": [{"name": "stock_predictor", "dataset": "/datasets/stocks.csv",
                            "model_config": {"n_estimators": 100, "max_depth": 20}}],
        "inbox_dir": "/datasets/new", "processed_dir": "/datasets/processed",
        "models_dir": "/models", "webhook_url": "https://hooks.example/x",
        "retry_backoff_seconds": 60, "task_events": False,
    }
    result = check(tmp_path, document)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


@pytest.mark.parametrize(("document", "message"), [
    ({"beat_schedule": {"e": {"task": "tasks.ml_tasks.nope", "schedule": 5}}},
     "beat_schedule['e'].task: unknown task 'tasks.ml_tasks.nope'"),
    ({"beat_schedule": {"e": {"task": "tasks.simple_tasks.ping", "schedule": "hourly"}}},
     "beat_schedule['e'].schedule: 'hourly' is neither seconds"),
    ({"beat_schedule": {"e": {"task": "tasks.simple_tasks.ping",
                              "schedule": {"crontab": {"minute": "75"}}}}},
     "beat_schedule['e'].schedule.crontab"),
    ({"beat_schedule": {"e": {"task": "tasks.simple_tasks.ping", "schedule": 5,
                              "options": {"priority": 10}}}},
     "beat_schedule['e'].options.priority: 10 is outside 0-9"),
    ({"beat_schedule": {"e": {"task": "tasks.simple_tasks.ping", "schedule": 5,
                              "every": 3}}},
     "beat_schedule['e']: unknown keys ['every']"),
    ({"retrain_models": [{"name": "m", "dataset": "/d.csv", "params": {}}]},
     "retrain_models[0]: unknown keys ['params']"),
    ({"schedules": {}}, "unknown keys ['schedules']"),
    ({"inbox_dir": "relative/dir"}, "inbox_dir: 'relative/dir' must be an absolute path"),
    ({"task_events": "no"}, "task_events: 'no' must be true or false"),
    ({"queues": ["ml", ""]}, "queues[1]: '' must be a non-empty string"),
    ({"queues": ["ml", "data", "ml"]}, "queues: ['ml'] named more than once"),
    ({"queues": []}, "queues must be a non-empty list of queue names"),
    ({"queues": ["ml", "celery"]}, "queues: 'celery' is Celery's own default queue"),
    ({"beat_schedule": {"e": {"task": "tasks.simple_tasks.ping", "schedule": 5,
                              "options": {"queue": "reports"}}}},
     "beat_schedule['e'].options.queue: 'reports' is not one of "
     "['ml', 'data', 'default', 'celery']"),
    ("{not json", "not valid JSON"),
])
def test_checker_names_the_entry_and_the_fix(tmp_path, document, message):
    result = check(tmp_path, document)
    assert result.returncode == 1
    assert message in result.stderr


def test_a_queue_added_to_the_file_is_one_beat_may_send_to(tmp_path):
    document = {
        "queues": ["ml", "data", "default", "reports"],
        "beat_schedule": {"weekly": {"task": "tasks.simple_tasks.ping", "schedule": 604800,
                                     "options": {"queue": "reports"}},
                          "bare": {"task": "tasks.simple_tasks.ping", "schedule": 60,
                                   "options": {"queue": "celery"}}},
    }
    result = check(tmp_path, document)
    assert result.returncode == 0, result.stderr


def test_the_workers_declare_the_files_queues_and_celerys_own(tmp_path):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps({"queues": ["ml", "data", "default", "reports"]}))
    probe = ("from tasks import app; "
             "print(*(queue.name for queue in app.conf.task_queues))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=PACKAGE_PARENT, check=True,
                            capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "TASKS_CONFIG_FILE": str(path)})
    assert result.stdout.split() == ["ml", "data", "default", "reports", "celery"]


def test_checker_imports_neither_ray_nor_sklearn():
    probe = ("import sys, tasks.application as a; a.known_task_names(); "
             "print(sorted(m for m in ('ray', 'sklearn', 'pandas', 'pyarrow') "
             "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=PACKAGE_PARENT,
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_defaults_without_a_file(monkeypatch, fresh_settings):
    """The schedule and the models to retrain come from the file alone (group_vars)."""
    for name in ("TASKS_CONFIG_FILE", "TASKS_DATA_ROOTS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    current = fresh_settings()
    assert current.data_roots == ("/datasets", "/models")
    assert current.ray_address is None
    assert current.queues == ("ml", "data", "default")
    assert current.stack_queues == ("ml", "data", "default", "celery")
    assert (current.beat_schedule, current.retrain_models) == ({}, [])
    assert current.retry_backoff_seconds == 60


def test_a_ray_task_without_ray_address_says_what_to_set(monkeypatch, fresh_settings):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("TASKS_CONFIG_FILE", raising=False)
    fresh_settings()
    with pytest.raises(ConfigError, match="RAY_ADDRESS is not set"):
        ensure_ray()


def test_the_files_schedule_and_models_are_the_settings(tmp_path, monkeypatch,
                                                        fresh_settings):
    schedule = {"hourly-data-processing": {"task": "tasks.data_tasks.process_new_data",
                                           "schedule": 3600, "options": {"queue": "data"}}}
    models = [{"name": "stock_predictor", "dataset": "/datasets/stocks_latest.csv",
               "model_config": {"n_estimators": 100, "max_depth": 20}}]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps({"queues": ["data", "ml"], "beat_schedule": schedule,
                                "retrain_models": models}))
    monkeypatch.setenv("TASKS_CONFIG_FILE", str(path))
    current = fresh_settings()
    assert (current.beat_schedule, current.retrain_models) == (schedule, models)
    assert current.queues == ("data", "ml")


def test_environment_and_file_override_defaults(tmp_path, monkeypatch, fresh_settings):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps({"models_dir": "/srv/models", "beat_schedule": {}}))
    monkeypatch.setenv("TASKS_CONFIG_FILE", str(path))
    monkeypatch.setenv("TASKS_DATA_ROOTS", "/a:/b/c")
    monkeypatch.setenv("RAY_ADDRESS", "ray-head:16379")
    current = fresh_settings()
    assert (current.models_dir, current.beat_schedule) == ("/srv/models", {})
    assert current.data_roots == ("/a", "/b/c")
    assert current.ray_address == "ray-head:16379"


def test_invalid_file_stops_the_process_with_the_problem(tmp_path, monkeypatch, fresh_settings):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps({"retry_backoff_seconds": -1}))
    monkeypatch.setenv("TASKS_CONFIG_FILE", str(path))
    with pytest.raises(ConfigError, match="retry_backoff_seconds"):
        fresh_settings()


def test_crontab_entries_become_celery_crontabs(tmp_path):
    document = {"beat_schedule": {"nightly": {
        "task": "tasks.simple_tasks.cleanup_old_results",
        "schedule": {"crontab": {"minute": "0", "hour": "3"}}}}}
    assert validate(document) == []
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(document))
    probe = ("from tasks import app; s = app.conf.beat_schedule['nightly']['schedule']; "
             "print(type(s).__name__, s.hour, s.minute)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=PACKAGE_PARENT, check=True,
                            capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "TASKS_CONFIG_FILE": str(path)})
    assert result.stdout.split() == [crontab.__name__, "{3}", "{0}"]


@pytest.mark.parametrize("task_events", [True, False])
def test_task_events_follow_the_config_file(tmp_path, task_events):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps({"task_events": task_events}))
    probe = ("from tasks import app; "
             "print(app.conf.worker_send_task_events, app.conf.task_send_sent_event)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=PACKAGE_PARENT, check=True,
                            capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "TASKS_CONFIG_FILE": str(path)})
    assert result.stdout.split() == [str(task_events)] * 2


def test_reliability_settings():
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.broker_connection_retry_on_startup is True
    longest_hard_limit = max(task.time_limit or 0 for name, task in app.tasks.items()
                             if name.startswith("tasks."))
    longest_countdown = 60 * 2 ** 2
    assert longest_hard_limit + longest_countdown < celeryconfig.VISIBILITY_TIMEOUT
    for name, task in app.tasks.items():
        if name.startswith(("tasks.ml_tasks.", "tasks.data_tasks.")):
            assert task.acks_late and task.reject_on_worker_lost, name
            assert task.soft_time_limit < task.time_limit, name
