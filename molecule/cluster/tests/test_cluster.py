"""Two hosts converged by playbooks/site.yml: the head and a second Ray and Celery node.

The services of each host are checked inside it; the cluster as a whole (Ray's node
list, the Celery workers answering, a hyperparameter search spread over both nodes) is
checked from the controller with the documented client, as a user would.
"""

import json
import sys
import time

import pytest
import testinfra
from project_settings import PROJECT, SETTINGS, read_secrets
from run_summary import report_drill

sys.path.insert(0, str(PROJECT / "files"))

from tasks.client import make_client

SECRETS = read_secrets()
QUEUES = [queue["name"] for queue in SETTINGS["celery_worker_queues"]]
HEAD, NODE = "celery-ray-cluster-head", "celery-ray-cluster-node"
ADDRESSES = {HEAD: "172.30.0.20", NODE: "172.30.0.21"}
HEAD_ADDRESS = ADDRESSES[HEAD]
EXPECTED_WORKERS = {f"{queue}@{host}" for queue in QUEUES for host in ADDRESSES}
WORKER_UNITS = [f"celery-worker@{queue}.service" for queue in QUEUES]
HEAD_ONLY_UNITS = ["redis-server@celery.service", "celery-beat.service", "flower.service",
                   "ray-head.service"]
# Ports of the head's services: Redis, Ray's GCS, Flower, Ray's dashboard.
HEAD_ONLY_PORTS = [SETTINGS[name] for name in ("redis_port", "celery_ray_head_port", "flower_port",
                                                "ray_head_dashboard_port")]
# 12 combinations x 3 folds = 36 one-CPU Ray tasks, more than the 2 + 2 CPUs of the cluster.
GRID = [{"n_estimators": n, "max_depth": d} for n in (20, 40, 80) for d in (2, 4, 8, None)]
RESULT_TIMEOUT_SECONDS = 600
SEARCHES = 3
WORKERS_DEADLINE_SECONDS = 120


@pytest.fixture(scope="module", params=[HEAD, NODE])
def any_host(request):
    return connect(request, request.param)


@pytest.fixture(scope="module")
def head(request):
    return connect(request, HEAD)


@pytest.fixture(scope="module")
def node(request):
    return connect(request, NODE)


def connect(request, name):
    return testinfra.get_host(f"ansible://{name}",
                              ansible_inventory=request.config.option.ansible_inventory)


@pytest.fixture(scope="module")
def client():
    url = f"redis://{SETTINGS['redis_user']}:{SECRETS['vault_redis_password']}@{HEAD_ADDRESS}:6380"
    app = make_client(f"{url}/0", f"{url}/1")
    yield app
    app.close()


def listening_ports(host):
    lines = host.check_output("ss -Hltn").splitlines()
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in lines}


@pytest.mark.parametrize("unit", [*WORKER_UNITS, "celery-ray.target"])
def test_both_hosts_run_the_celery_workers(any_host, unit):
    service = any_host.service(unit)
    assert service.is_enabled
    assert service.is_running


def test_node_runs_a_ray_worker_node(node):
    service = node.service("ray-worker.service")
    assert service.is_enabled
    assert service.is_running


@pytest.mark.parametrize("unit", HEAD_ONLY_UNITS)
def test_node_runs_none_of_the_head_services(head, node, unit):
    assert head.service(unit).is_running
    assert not node.file(f"/etc/systemd/system/{unit}").exists
    assert not node.service(unit).is_running


def test_node_listens_on_none_of_the_head_ports(node):
    assert listening_ports(node) & set(HEAD_ONLY_PORTS) == set()


def test_node_points_at_the_head(node):
    env = node.file("/etc/celery-ray/celery.env").content_string
    assert f"@{HEAD_ADDRESS}:6380/0" in env
    assert f"@{HEAD_ADDRESS}:6380/1" in env
    assert f"RAY_ADDRESS={HEAD_ADDRESS}:{SETTINGS['celery_ray_head_port']}" in env


def alive_ray_nodes(head) -> set[str]:
    """Addresses of the nodes Ray lists alive: its state API as the service user, with the
    token the stack's processes use."""
    listing = head.check_output(
        "sudo -u celery /opt/celery-ray/with-stack-env ray list nodes --format=json")
    return {entry["node_ip"] for entry in json.loads(listing) if entry["state"] == "ALIVE"}


def alive_ray_nodes_once_joined(head) -> set[str]:
    """The alive nodes once both hosts are among them (or the deadline): a node's raylet
    registers with the head some seconds after its unit has started."""
    deadline = time.monotonic() + WORKERS_DEADLINE_SECONDS
    while True:
        alive = alive_ray_nodes(head)
        if alive == set(ADDRESSES.values()) or time.monotonic() > deadline:
            return alive
        time.sleep(2)


def test_ray_sees_both_nodes_alive(head):
    assert alive_ray_nodes_once_joined(head) == set(ADDRESSES.values())


def answering_workers(client):
    """Names of the workers answering a ping, once every expected one does (or the deadline)."""
    deadline = time.monotonic() + WORKERS_DEADLINE_SECONDS
    while True:
        answered = set(client.control.inspect(timeout=5).ping() or {})
        if answered >= EXPECTED_WORKERS or time.monotonic() > deadline:
            return answered


def test_celery_workers_of_both_hosts_share_the_head_broker(client):
    assert answering_workers(client) == EXPECTED_WORKERS


def test_hyperparameter_search_runs_on_both_ray_nodes(client, head, record_property):
    """The folds spread over both nodes. Ray's SPREAD is best effort: in 2 of 3 fresh runs
    one search of these short folds ran all 12 on the head, so up to SEARCHES are sent."""
    assert alive_ray_nodes_once_joined(head) == set(ADDRESSES.values())
    used_by_search = []
    while len(used_by_search) < SEARCHES and set(ADDRESSES.values()) not in used_by_search:
        result = client.send_task(
            "tasks.ml_tasks.hyperparameter_search",
            kwargs={"param_grid": GRID, "dataset_path": "/datasets/training_data.csv"},
        ).get(timeout=RESULT_TIMEOUT_SECONDS)
        assert [entry["params"] for entry in result["results"]] == GRID
        # One Ray task per fold of each max_depth (the n_estimators of a depth share a forest).
        assert result["ray_tasks"] == 4 * 3
        assert result["best_params"] in GRID
        used_by_search.append({node for entry in result["results"] for node in entry["nodes"]})
    record_property("nodes used by each search", [sorted(used) for used in used_by_search])
    assert set(ADDRESSES.values()) in used_by_search


def test_drill_a_ray_node_lost_under_a_search(client, head, node, record_property):
    """The node's ray-worker stops while a search spreads its folds over both nodes: Ray
    runs the folds it lost again on the head, and the search completes without a retry.

    The node's ml worker is taken off the queue meanwhile, so that the search's driver (the
    Celery worker process that runs it) sits on the head."""
    node_ml = f"ml@{NODE}"
    slow_grid = [{"n_estimators": 4000, "max_depth": depth} for depth in (2, 3, 4, 5)]
    client.control.cancel_consumer("ml", destination=[node_ml], reply=True)
    try:
        result = client.send_task("tasks.ml_tasks.hyperparameter_search", kwargs={
            "param_grid": slow_grid, "dataset_path": "/datasets/training_data.csv"})
        deadline = time.monotonic() + RESULT_TIMEOUT_SECONDS
        while result.state != "PROGRESS":
            assert time.monotonic() < deadline, "the search never reported progress"
            time.sleep(0.2)
        node.check_output("systemctl stop ray-worker")
        outcome = result.get(timeout=RESULT_TIMEOUT_SECONDS)
    finally:
        node.check_output("systemctl start ray-worker")
        client.control.add_consumer("ml", destination=[node_ml], reply=True)
    report_drill(record_property, "cluster drill (ray-worker stopped under a search)", 1,
                 int(result.state == "SUCCESS"), retries=result.retries, ran_on=result.worker)
    assert outcome["best_params"] in slow_grid
    assert result.worker == f"ml@{HEAD}"
    assert result.retries == 0
    assert alive_ray_nodes_once_joined(head) == set(ADDRESSES.values()), \
        "the node did not rejoin the cluster"
