"""Write the local stack's connection settings, then use the stack like a client would.

Run by scripts/local-stack.sh (`make up`) with files/ on PYTHONPATH:

    python scripts/demo.py --container celery-ray-local --address 172.30.1.10 \
        --env-file .local-stack/connection.env

Ports come from the project's settings (molecule/shared/project_settings.py), secrets from
the generated (git-ignored) molecule/shared/group_vars/molecule/secrets.yml. The settings
are written first, so they are there even when the demo fails. The demo sends the spec's
ping and a small hyperparameter search on /datasets/demo.csv, and checks Flower, the Ray
dashboard, Prometheus and Alertmanager answer.
"""

import argparse
import base64
import os
import shlex
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

from tasks.client import make_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "molecule/shared"))
from project_settings import SECRETS_FILE, SETTINGS, read_secrets

DEMO_DATASET = "/datasets/demo.csv"
DEMO_GRID = [
    {"n_estimators": n_estimators, "max_depth": max_depth}
    for n_estimators in (10, 50)
    for max_depth in (3, 6)
]
PING_TIMEOUT_SECONDS = 120
SEARCH_TIMEOUT_SECONDS = 600
HTTP_TIMEOUT_SECONDS = 10


def connection_settings(container: str, address: str) -> dict[str, str]:
    try:
        secrets = read_secrets()
    except FileNotFoundError:
        sys.exit(f"{SECRETS_FILE} is missing: `make up` generates it (molecule create -s local).")
    password = quote(secrets["vault_redis_password"], safe="")
    user = quote(SETTINGS["redis_user"], safe="")
    redis = f"redis://{user}:{password}@{address}:{SETTINGS['redis_port']}"
    return {
        "CELERY_BROKER_URL": f"{redis}/0",
        "CELERY_RESULT_BACKEND": f"{redis}/1",
        "FLOWER_URL": f"http://{address}:{SETTINGS['flower_port']}",
        "FLOWER_USER": secrets["vault_flower_user"],
        "FLOWER_PASSWORD": secrets["vault_flower_password"],
        "RAY_DASHBOARD_URL": f"http://{address}:{SETTINGS['ray_head_dashboard_port']}",
        # Ray's token authentication covers the dashboard: its page asks for this token,
        # API clients send it as "Authorization: Bearer <token>".
        "RAY_AUTH_TOKEN": secrets["vault_ray_auth_token"],
        "PROMETHEUS_URL": f"http://{address}:{SETTINGS['monitoring_prometheus_port']}",
        "ALERTMANAGER_URL": f"http://{address}:{SETTINGS['monitoring_alertmanager_port']}",
        "MONITORING_USER": SETTINGS["monitoring_web_user"],
        "MONITORING_PASSWORD": secrets["vault_monitoring_web_password"],
        "STACK_CONTAINER": container,
    }


def write_env_file(path: Path, settings: dict[str, str]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lines = ["# The local stack (`make up`); `source` this file. Generated, never commit it."]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in settings.items()]
    partial = path.with_suffix(".tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    partial.replace(path)


def basic_auth(user: str, password: str) -> str:
    return f"Basic {base64.b64encode(f'{user}:{password}'.encode()).decode()}"


def http_status(url: str, authorization: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": authorization})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def run_demo(settings: dict[str, str]) -> None:
    client = make_client(settings["CELERY_BROKER_URL"], settings["CELERY_RESULT_BACKEND"])

    started = time.monotonic()
    pong = client.send_task("tasks.simple_tasks.ping").get(timeout=PING_TIMEOUT_SECONDS)
    print(f"ping: {pong} ({time.monotonic() - started:.1f} s)")

    started = time.monotonic()
    search = client.send_task(
        "tasks.ml_tasks.hyperparameter_search",
        kwargs={"param_grid": DEMO_GRID, "dataset_path": DEMO_DATASET},
    ).get(timeout=SEARCH_TIMEOUT_SECONDS)
    print(f"hyperparameter_search on {DEMO_DATASET}: {len(DEMO_GRID)} combinations, "
          f"{search['ray_tasks']} Ray tasks ({time.monotonic() - started:.1f} s)")
    for result in search["results"]:
        print(f"  {result['params']}: mean score {result['mean_score']:.4f}")
    print(f"  best: {search['best_params']} ({search['best_score']:.4f})")

    monitoring = basic_auth(settings["MONITORING_USER"], settings["MONITORING_PASSWORD"])
    answers = {
        "Flower": http_status(settings["FLOWER_URL"],
                              basic_auth(settings["FLOWER_USER"], settings["FLOWER_PASSWORD"])),
        "the Ray dashboard": http_status(f"{settings['RAY_DASHBOARD_URL']}/api/version",
                                         f"Bearer {settings['RAY_AUTH_TOKEN']}"),
        "Prometheus": http_status(f"{settings['PROMETHEUS_URL']}/-/ready", monitoring),
        "Alertmanager": http_status(f"{settings['ALERTMANAGER_URL']}/-/ready", monitoring),
    }
    print("; ".join(f"{name} answers HTTP {status}" for name, status in answers.items()))
    if set(answers.values()) != {200}:
        sys.exit("Not everything answers as expected: docker exec "
                 f"{settings['STACK_CONTAINER']} journalctl -u flower -u ray-head -u 'prometheus*'")


def print_how_to_connect(settings: dict[str, str], env_file: Path) -> None:
    container = settings["STACK_CONTAINER"]
    print(f"""
The stack runs in the container {container}.
  Flower:         {settings['FLOWER_URL']}
                  user {settings['FLOWER_USER']}, password: FLOWER_PASSWORD in {env_file}
  Ray dashboard:  {settings['RAY_DASHBOARD_URL']}
                  the page asks for the token: RAY_AUTH_TOKEN in {env_file}
  Prometheus:     {settings['PROMETHEUS_URL']}
  Alertmanager:   {settings['ALERTMANAGER_URL']}/api/v2/alerts (Debian's package has no web
                  UI; Prometheus's /alerts page lists the same alerts)
                  both: user {settings['MONITORING_USER']}, password: MONITORING_PASSWORD in
                  {env_file}
  Settings:       source {env_file}
  A client:       source {env_file}; PYTHONPATH=files .venv/bin/python
                  >>> import os; from tasks.client import make_client
                  >>> env = os.environ
                  >>> app = make_client(env["CELERY_BROKER_URL"], env["CELERY_RESULT_BACKEND"])
                  >>> app.send_task("tasks.simple_tasks.ping").get(timeout=10)
  Logs:           docker exec {container} journalctl -u 'celery-*' -u flower -u ray-head -f
                  (the monitoring: -u 'prometheus*')
  Tear down:      make down""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--container", required=True, help="the stack's container name")
    parser.add_argument("--address", required=True, help="the container's address")
    parser.add_argument("--env-file", required=True, type=Path, help="where to write the settings")
    args = parser.parse_args()

    settings = connection_settings(args.container, args.address)
    write_env_file(args.env_file, settings)
    run_demo(settings)
    print_how_to_connect(settings, args.env_file)


if __name__ == "__main__":
    main()
