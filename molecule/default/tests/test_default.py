"""The stack converged by playbooks/site.yml, seen from inside the container."""

import hashlib
import json

import pytest
from scenario import (
    CELERY_UNITS,
    NODE_ADDRESS,
    QUEUES,
    REDIS_USER,
    RUNTIME,
    SECRETS,
    SETTINGS,
    STACK_UNITS,
    main_pid,
    pool_size,
    unit_of_cgroup,
)


def listeners(host, port):
    """(address, systemd unit) of every TCP socket listening on the port."""
    found = []
    for line in host.check_output(f"ss -Hltne 'sport = :{port}'").splitlines():
        fields = line.split()
        address = fields[3].rsplit(":", 1)[0].strip("[]")
        cgroup = next(field for field in fields if field.startswith("cgroup:"))
        found.append((address, unit_of_cgroup(cgroup)))
    return found


@pytest.mark.parametrize("unit", [*STACK_UNITS, "celery-ray.target", "celery-ray-app.target",
                                  "celery-worker-watchdog.timer"])
def test_unit_is_enabled_and_running(host, unit):
    service = host.service(unit)
    assert service.is_enabled
    assert service.is_running


def test_the_watchdog_looks_at_every_worker_and_restarts_none(host):
    """One look now, as the timer starts it: the service user's part reads the workers'
    settings and asks each through the broker; healthy workers stay as they are."""
    before = {queue: main_pid(host, f"celery-worker@{queue}.service") for queue in QUEUES}
    host.check_output("systemctl start celery-worker-watchdog.service")
    result = host.check_output(
        "systemctl show --property=Result --value celery-worker-watchdog.service")
    assert result == "success"
    assert host.file("/var/lib/celery-ray/watchdog.json").user == "celery"
    state = json.loads(host.file("/var/lib/celery-ray/watchdog.json").content_string)
    assert {name.split("@")[0] for name in state} == set(QUEUES)
    assert {queue: main_pid(host, f"celery-worker@{queue}.service") for queue in QUEUES} == before


def test_debian_default_redis_is_masked_and_stopped(host):
    state = host.run("systemctl is-enabled redis-server.service").stdout.strip()
    assert state == "masked"
    assert not host.service("redis-server.service").is_running


def test_redis_listens_on_6380_only_on_configured_addresses(host):
    expected = [
        ("127.0.0.1", "redis-server@celery.service"),
        (NODE_ADDRESS, "redis-server@celery.service"),
    ]
    assert sorted(listeners(host, 6380)) == expected


def test_nothing_of_redis_listens_on_ray_gcs_port(host):
    gcs_port = SETTINGS["celery_ray_head_port"]
    assert {unit for _, unit in listeners(host, gcs_port)} == {"ray-head.service"}


def test_ray_dashboard_listens_on_loopback_only(host):
    dashboard_port = SETTINGS["ray_head_dashboard_port"]
    assert listeners(host, dashboard_port) == [("127.0.0.1", "ray-head.service")]


def test_flower_listens_on_the_node_address(host):
    assert listeners(host, 5555) == [(NODE_ADDRESS, "flower.service")]


@pytest.mark.parametrize(
    ("path", "user", "group", "mode"),
    [
        ("/etc/celery-ray/celery.env", "root", "celery", 0o640),
        ("/etc/celery-ray/ray-token", "root", "celery", 0o640),
        ("/etc/celery-ray/flower.env", "root", "celery", 0o640),
        ("/etc/celery-ray/tasks.json", "root", "celery", 0o640),
        ("/etc/redis/redis-celery.conf", "root", "redis", 0o640),
        ("/etc/celery-ray", "root", "celery", 0o750),
        ("/var/lib/celery-ray", "celery", "celery", 0o750),
        ("/datasets", "celery", "celery", 0o750),
        ("/models", "celery", "celery", 0o750),
        ("/opt/celery-ray/app/tasks/__init__.py", "root", "root", 0o644),
    ],
)
def test_file_owner_and_mode(host, path, user, group, mode):
    target = host.file(path)
    assert target.exists
    assert (target.user, target.group, target.mode) == (user, group, mode)


def test_env_file_points_at_broker_and_ray_head(host):
    env = host.file("/etc/celery-ray/celery.env").content_string
    assert f"@{NODE_ADDRESS}:6380/0" in env
    assert f"@{NODE_ADDRESS}:6380/1" in env
    assert f"RAY_ADDRESS={NODE_ADDRESS}:{SETTINGS['celery_ray_head_port']}" in env
    assert "RAY_AUTH_TOKEN_PATH=/etc/celery-ray/ray-token" in env


def test_redis_config_is_a_broker_config(host):
    config = host.file("/etc/redis/redis-celery.conf").content_string.splitlines()
    expected = [
        "port 6380",
        f"bind 127.0.0.1 {NODE_ADDRESS}",
        "protected-mode yes",
        "appendonly yes",
        "appendfsync everysec",
        "maxmemory-policy noeviction",
    ]
    assert [line for line in expected if line not in config] == []
    # The stack's ACL user (Redis's default, for the spec's URL; the monitoring's read-only
    # users are tried in test_monitoring.py); passwords kept as their SHA-256 only.
    assert not any(line.startswith("requirepass") for line in config)
    digest = hashlib.sha256(SECRETS["vault_redis_password"].encode()).hexdigest()
    assert [line for line in config if line.startswith(f"user {REDIS_USER} ")] == [
        f"user {REDIS_USER} on resetpass #{digest} ~* &* +@all -@dangerous"
        " -flushall -flushdb -config -debug -shutdown"]
    assert [name for name, value in SECRETS.items()
            if name.endswith("_password") and value in "\n".join(config)] == []


def test_beat_schedule_from_group_vars_reached_the_host(host):
    rendered = json.loads(host.file("/etc/celery-ray/tasks.json").content_string)
    assert rendered["beat_schedule"] == SETTINGS["celery_app_beat_schedule"]
    assert rendered["retrain_models"] == SETTINGS["celery_app_retrain_models"]


@pytest.mark.parametrize("queue", QUEUES)
def test_worker_runs_the_queue_table_concurrency(host, queue):
    env = host.file(f"/etc/celery-ray/workers/{queue}.env").content_string
    assert f"CELERY_WORKER_CONCURRENCY={QUEUES[queue]}" in env
    assert pool_size(host, f"celery-worker@{queue}.service") == QUEUES[queue]


def test_default_worker_also_consumes_celery_queue(host):
    env = host.file("/etc/celery-ray/workers/default.env").content_string
    assert "CELERY_WORKER_QUEUES=default,celery" in env


@pytest.mark.parametrize(
    ("unit", "user"),
    [(unit, "celery") for unit in [*CELERY_UNITS, "ray-head.service"]]
    + [("redis-server@celery.service", "redis")],
)
def test_service_runs_as_its_non_root_user(host, unit, user):
    assert host.check_output(f"ps -o user= -p {main_pid(host, unit)}") == user


@pytest.mark.parametrize("unit", [u for u in STACK_UNITS if u != "redis-server@celery.service"])
def test_unit_is_hardened(host, unit):
    names = "NoNewPrivileges,ProtectSystem,ProtectHome,PrivateTmp,User,ReadWritePaths"
    output = host.check_output(f"systemctl show {unit} --property={names}")
    properties = dict(line.split("=", 1) for line in output.splitlines())
    assert properties["NoNewPrivileges"] == "yes"
    assert properties["ProtectSystem"] == "strict"
    assert properties["ProtectHome"] == "yes"
    assert properties["PrivateTmp"] == "yes"
    # On the docker runtime the unit runs the Docker client, as root (the engine's socket is
    # root's); the service itself runs as celery (test_service_runs_as_its_non_root_user).
    assert properties["User"] == ("celery" if RUNTIME == "systemd" else "")
    assert "/var/lib/celery-ray" in properties["ReadWritePaths"]


def test_redis_refuses_clients_without_the_password(host):
    assert "NOAUTH" in host.run("redis-cli -h 127.0.0.1 -p 6380 ping").stdout


def http_status(host, url):
    script = (
        "import sys, urllib.request, urllib.error\n"
        "try:\n    print(urllib.request.urlopen(sys.argv[1]).status)\n"
        "except urllib.error.HTTPError as error:\n    print(error.code)"
    )
    return int(host.check_output("python3 -c %s %s", script, url))


def test_flower_asks_for_credentials_but_exposes_metrics(host):
    assert http_status(host, f"http://{NODE_ADDRESS}:5555/") == 401
    assert http_status(host, f"http://{NODE_ADDRESS}:5555/metrics") == 200
