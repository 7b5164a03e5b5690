"""The monitoring converged by playbooks/site.yml: its units, every scrape target up, the
Redis users of the exporters limited to what they need, and every panel of the Grafana
dashboard answered by the real Prometheus. (test_alert_drills makes the alerts fire.)"""

import json
import re

import pytest
import redis
from monitor import query, targets
from scenario import (
    MONITORING_UNITS,
    NODE_ADDRESS,
    PROJECT,
    REDIS_PORT,
    SECRETS,
    SETTINGS,
    main_pid,
    wait_for,
    wait_until_completed,
)

DASHBOARD = PROJECT / "files/grafana/celery-ray-stack.json"
# Grafana fills these in; any window over a few scrapes gives data here.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "10m"}
EXPORTED_PORTS = {
    "prometheus.service": SETTINGS["monitoring_prometheus_port"],
    "prometheus-alertmanager.service": SETTINGS["monitoring_alertmanager_port"],
    "prometheus-node-exporter.service": SETTINGS["monitoring_node_exporter_port"],
    "prometheus-redis-exporter.service": SETTINGS["monitoring_redis_exporter_port"],
    "celery-metrics.service": SETTINGS["monitoring_queue_metrics_port"],
}
REDIS_USERS = SETTINGS["monitoring_redis_users"]
REDIS_PASSWORDS = {"exporter": SECRETS["vault_redis_exporter_password"],
                   "queue_metrics": SECRETS["vault_queue_metrics_password"]}


@pytest.mark.parametrize("unit", MONITORING_UNITS)
def test_unit_is_enabled_and_running(host, unit):
    service = host.service(unit)
    assert service.is_enabled
    assert service.is_running


@pytest.mark.parametrize(("unit", "port"), EXPORTED_PORTS.items())
def test_each_listens_on_the_node_address_only(host, unit, port):
    lines = host.check_output(f"ss -Hltne 'sport = :{port}'").splitlines()
    assert [line.split()[3] for line in lines] == [f"{NODE_ADDRESS}:{port}"]
    assert lines[0].split("cgroup:")[1].split()[0].endswith(f"/{unit}")


def test_alertmanager_has_no_cluster_port(host):
    assert host.check_output("ss -Hltn 'sport = :9094'") == ""


def test_every_scrape_target_is_up():
    expected_jobs = {"prometheus", "alertmanager", "node", "redis", "celery", "flower", "ray"}

    def all_up():
        found = targets()
        return ({target["labels"]["job"] for target in found} == expected_jobs
                and all(target["health"] == "up" for target in found))

    wait_for(all_up, "every scrape target up")
    assert {target["scrapeUrl"] for target in targets()} >= {
        f"http://{NODE_ADDRESS}:{SETTINGS['flower_port']}/metrics",
        f"http://{NODE_ADDRESS}:{SETTINGS['ray_node_ports']['metrics_export']}/metrics",
    }


def test_the_broker_metrics_unit_is_hardened_and_holds_no_stack_password(host):
    unit = "celery-metrics.service"
    names = "NoNewPrivileges,ProtectSystem,PrivateTmp,User,CapabilityBoundingSet"
    properties = dict(line.split("=", 1) for line in
                      host.check_output(f"systemctl show {unit} --property={names}").splitlines())
    assert properties == {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                          "PrivateTmp": "yes", "User": "celery", "CapabilityBoundingSet": ""}
    environ = host.check_output(f"tr '\\0' '\\n' < /proc/{main_pid(host, unit)}/environ")
    assert SECRETS["vault_redis_password"] not in environ
    assert f"redis://{REDIS_USERS['queue_metrics']['name']}:" in environ


def redis_as(user: str) -> redis.Redis:
    return redis.Redis(host=NODE_ADDRESS, port=REDIS_PORT, socket_timeout=30,
                       username=REDIS_USERS[user]["name"], password=REDIS_PASSWORDS[user])


def test_the_redis_exporters_user_reads_no_key_and_writes_nothing():
    exporter = redis_as("exporter")
    assert exporter.info("server")["redis_version"]
    for command in (("GET", "unacked"), ("LLEN", "default"), ("SET", "x", "1"), ("KEYS", "*")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            exporter.execute_command(*command)


def test_the_broker_metrics_user_reads_lengths_and_writes_nothing():
    reader = redis_as("queue_metrics")
    assert reader.llen("default") >= 0
    for command in (("LPUSH", "default", "x"), ("DEL", "unacked"), ("INFO",), ("SELECT", "1")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            reader.execute_command(*command)


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [(panel["title"], target["expr"]) for panel in dashboard["panels"]
             for target in panel.get("targets", [])]
    assert found, f"{DASHBOARD} has no panel queries"
    return found


def with_grafana_variables(expression: str) -> str:
    return re.sub(r"\$__\w+", lambda match: GRAFANA_VARIABLES[match.group()], expression)


def test_every_dashboard_panel_query_returns_data(client, backend):
    """Some tasks first, so that the rate and runtime panels have something to show."""
    sent = [client.send_task("tasks.simple_tasks.ping", queue="default").id for _ in range(20)]
    assert wait_until_completed(backend, sent) == len(sent)
    empty = {}

    def answered() -> bool:
        empty.clear()
        for title, expression in panel_queries():
            if not query(with_grafana_variables(expression)):
                empty[title] = expression
        return not empty

    wait_for(answered, "every panel query answered", deadline_seconds=120)
    assert empty == {}
