"""The doors of the stack, tried the way an outsider would: each refuses a caller without
its secret, the dangerous Redis commands stay refused to the stack's own user, no secret
shows in a process list, a unit file or a log, and the firewall lets only the inventory's
hosts and the admin networks reach the stack's ports.

Run from this controller (172.30.0.1, an admin address of the Molecule group_vars) against
the running container; what listens on the container's loopback only is tried from inside.
"""

import ipaddress
import json
import socket
import subprocess
import urllib.error
import urllib.request

import grpc
import pytest
import redis
from scenario import (
    ALERTMANAGER_URL,
    CONTAINER,
    FLOWER_URL,
    NODE_ADDRESS,
    PROJECT,
    PROMETHEUS_URL,
    REDIS_PORT,
    REDIS_USER,
    RUNTIME,
    SECRETS,
    SETTINGS,
    STACK_UNITS,
    WORKER_UNITS,
    container_of,
    main_pid,
    main_pids,
    run_playbook,
    wait_for,
)

SECRET_VALUES = [value for name, value in SECRETS.items() if name != "vault_flower_user"]
RAY_TOKEN = SECRETS["vault_ray_auth_token"]
GCS_PORT = SETTINGS["celery_ray_head_port"]
DASHBOARD = f"http://127.0.0.1:{SETTINGS['ray_head_dashboard_port']}"
CLIENT_SERVER_PORT = SETTINGS["ray_head_client_server_port"]
# A throwaway container on the project network at an address the firewall does not know.
PROBE_ADDRESS = str(ipaddress.ip_address(NODE_ADDRESS) + 1)
PROBE_CONTAINER = f"{CONTAINER}-door-probe"
PROBE_NETWORK = "celery-ray-stack"
MONITORING_PORTS = [SETTINGS[f"monitoring_{name}_port"] for name in
                    ("prometheus", "alertmanager", "node_exporter", "redis_exporter",
                     "queue_metrics")]
# A port of no stack service, opened for the probe: the firewall must leave it alone.
OTHER_PORT = 28080
CONNECT_TIMEOUT_SECONDS = 10
HTTP_TIMEOUT_SECONDS = 30


def redis_client(**credentials):
    return redis.Redis(host=NODE_ADDRESS, port=REDIS_PORT, socket_timeout=30, **credentials)


def http_status(url, method="GET", body=None, headers=None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def connect_error(host, port):
    """0 when a TCP connection to host:port opens, else the errno (111: refused)."""
    with socket.socket() as probe:
        probe.settimeout(CONNECT_TIMEOUT_SECONDS)
        return probe.connect_ex((host, port))


def in_container(*argv, stdin=""):
    """Run argv in the container as root; secrets go through stdin, never the command line."""
    return subprocess.run(["docker", "exec", "-i", CONTAINER, *argv], input=stdin,
                          capture_output=True, text=True, check=False, timeout=300)


# --- Redis -----------------------------------------------------------------------------

def test_redis_refuses_a_client_that_gives_no_password():
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis_client().ping()


@pytest.mark.parametrize("command", [
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "GET", "requirepass"),
    ("CONFIG", "SET", "protected-mode", "no"),
    ("DEBUG", "SLEEP", "0"),
    ("SHUTDOWN", "ABORT"),
    ("KEYS", "*"),
    ("ACL", "SETUSER", "intruder", "on", "nopass", "+@all"),
])
def test_redis_refuses_dangerous_commands_to_the_stack_user(command):
    client = redis_client(username=REDIS_USER, password=SECRETS["vault_redis_password"])
    with pytest.raises(redis.exceptions.ResponseError) as refused:
        client.execute_command(*command)
    # Redis 7 refuses DEBUG to every user (enable-debug-command no) before the ACL is asked.
    assert isinstance(refused.value, redis.exceptions.NoPermissionError) or (
        command[0] == "DEBUG" and "not allowed" in str(refused.value))
    assert client.ping() is True


# --- Flower ------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/"),
    ("GET", "/api/workers"),
    ("GET", "/api/tasks"),
    ("POST", "/api/task/send-task/tasks.simple_tasks.ping"),
    ("POST", "/api/worker/shutdown/nobody"),
])
def test_flower_answers_401_without_credentials(method, path):
    body = b"{}" if method == "POST" else None
    assert http_status(f"{FLOWER_URL}{path}", method, body) == 401


@pytest.mark.parametrize("path", ["/metrics", "/healthcheck"])
def test_flower_metrics_and_healthcheck_stay_open_as_documented(path):
    """Flower exempts them from auth (README: behind the firewall, for Prometheus and probes)."""
    assert http_status(f"{FLOWER_URL}{path}") == 200


def test_flower_is_a_version_without_cve_2022_30034(container):
    version = container.check_output(
        "/opt/celery-ray/venv/bin/python -c "
        "'import importlib.metadata as m; print(m.version(\"flower\"))'")
    assert tuple(int(part) for part in version.split(".")[:2]) >= (1, 2)


# --- Prometheus and Alertmanager --------------------------------------------------------

@pytest.mark.parametrize(("method", "url"), [
    ("GET", f"{PROMETHEUS_URL}/graph"),
    ("GET", f"{PROMETHEUS_URL}/api/v1/query?query=up"),
    ("GET", f"{PROMETHEUS_URL}/metrics"),
    ("POST", f"{PROMETHEUS_URL}/-/reload"),
    ("GET", f"{ALERTMANAGER_URL}/"),
    ("GET", f"{ALERTMANAGER_URL}/api/v2/alerts"),
    ("POST", f"{ALERTMANAGER_URL}/api/v2/silences"),
    ("GET", f"{ALERTMANAGER_URL}/metrics"),
])
def test_prometheus_and_alertmanager_answer_401_without_credentials(method, url):
    assert http_status(url, method, b"{}" if method == "POST" else None) == 401


# --- Ray ---------------------------------------------------------------------------------

def dashboard_status(container, path, token=None):
    """HTTP status of a request on the dashboard from inside the container, as the service
    user with a clean environment: with no token, a wrong one or the stack's own token file."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "url, token = sys.argv[1], sys.argv[2]\n"
        "if token == 'file':\n"
        "    token = open('/etc/celery-ray/ray-token').read().strip()\n"
        "headers = {'Authorization': 'Bearer ' + token} if token else {}\n"
        "request = urllib.request.Request(url, headers=headers)\n"
        "try:\n"
        "    print(urllib.request.urlopen(request, timeout=30).status)\n"
        "except urllib.error.HTTPError as error:\n"
        "    print(error.code)\n"
    )
    return int(container.check_output(
        "runuser -u celery -- env -i /usr/bin/python3 -c %s %s %s",
        script, f"{DASHBOARD}{path}", token or ""))


@pytest.mark.parametrize("path", ["/api/jobs/", "/api/cluster_status", "/nodes?view=summary"])
def test_ray_dashboard_and_jobs_api_refuse_a_request_without_the_token(container, path):
    assert dashboard_status(container, path) == 401
    assert dashboard_status(container, path, token="not-the-token") == 403
    assert dashboard_status(container, path, token="file") == 200


def test_ray_dashboard_is_not_reachable_from_outside_the_host():
    assert connect_error(NODE_ADDRESS, SETTINGS["ray_head_dashboard_port"]) != 0


def gcs_get_all_node_info(metadata=None):
    """One GCS call (an empty GetAllNodeInfoRequest) with the given gRPC metadata."""
    with grpc.insecure_channel(f"{NODE_ADDRESS}:{GCS_PORT}") as channel:
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetAllNodeInfo")
        return call(b"", metadata=metadata, timeout=30)


def test_ray_gcs_refuses_a_request_without_the_token():
    with pytest.raises(grpc.RpcError) as refused:
        gcs_get_all_node_info()
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as wrong:
        gcs_get_all_node_info([("authorization", "Bearer not-the-token")])
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert gcs_get_all_node_info([("authorization", f"Bearer {RAY_TOKEN}")])


def test_ray_client_server_is_off(container):
    assert container.check_output(f"ss -Hltn 'sport = :{CLIENT_SERVER_PORT}'") == ""
    assert connect_error(NODE_ADDRESS, CLIENT_SERVER_PORT) != 0


@pytest.mark.parametrize("unit", ["ray-head.service", *WORKER_UNITS])
def test_ray_token_auth_reaches_the_ray_head_and_every_celery_worker(container, unit):
    environ = container.check_output(f"tr '\\0' '\\n' < /proc/{main_pid(container, unit)}/environ")
    assert "RAY_AUTH_MODE=token" in environ.splitlines()
    assert "RAY_AUTH_TOKEN_PATH=/etc/celery-ray/ray-token" in environ.splitlines()


def test_ray_object_store_is_bounded(container):
    listing = container.check_output(
        "runuser -u celery -- /opt/celery-ray/with-stack-env ray list nodes --detail --format=json")
    (node,) = json.loads(listing)
    # Ray reports it for people, e.g. "286.102 MiB".
    amount, unit = node["resources_total"]["object_store_memory"].split()
    size = float(amount) * {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]
    assert size == pytest.approx(SETTINGS["ray_node_object_store_memory_bytes"], rel=0.001)


# --- Secrets -----------------------------------------------------------------------------

def test_no_secret_in_the_full_process_list(container):
    processes = container.check_output("ps -eww -o user=,pid=,args=")
    assert [value for value in SECRET_VALUES if value in processes] == []


def secrets_found_under(*paths):
    """Files under paths that contain a secret (grep reads the secrets from stdin)."""
    found = in_container("grep", "-rlF", "-D", "skip", "-f", "-", *paths,
                         stdin="\n".join(SECRET_VALUES))
    assert found.returncode in (0, 1), found.stderr
    return found.stdout.split()


def test_no_secret_in_a_unit_file():
    assert secrets_found_under("/etc/systemd/system", "/lib/systemd/system") == []


@pytest.mark.skipif(RUNTIME != "docker", reason="only the docker runtime has containers")
def test_no_secret_in_the_containers_configuration():
    """docker inspect shows a container's environment and command: the secrets come from
    mounted files instead."""
    inspected = subprocess.run(["docker", "inspect", *map(container_of, STACK_UNITS)],
                               capture_output=True, text=True, check=True).stdout
    assert [value for value in SECRET_VALUES if value in inspected] == []


def test_the_stack_itself_was_refused_no_redis_command():
    """Celery, kombu, Beat and Flower log a refused command as NOPERM: the ACL lets them be."""
    journal = in_container("journalctl", "--no-pager", "-o", "cat").stdout
    assert [line for line in journal.splitlines() if "NOPERM" in line] == []


def test_no_secret_in_the_journal_or_ray_logs():
    journal = in_container("journalctl", "--no-pager", "-o", "cat").stdout
    assert [value for value in SECRET_VALUES if value in journal] == []
    assert secrets_found_under("/var/lib/celery-ray/ray") == []


# --- Firewall ----------------------------------------------------------------------------

def nft_set(container, name):
    listing = json.loads(container.check_output(f"nft -j list set inet celery_ray_stack {name}"))
    (entry,) = [item["set"] for item in listing["nftables"] if "set" in item]
    return entry.get("elem", [])


def allowed_networks(container):
    """The firewall's IPv4 allow list; an element is an address or {"prefix": {addr, len}}."""
    return [ipaddress.ip_network(f"{element['prefix']['addr']}/{element['prefix']['len']}"
                                 if isinstance(element, dict) else element)
            for element in nft_set(container, "allowed_ipv4")]


def test_firewall_table_is_loaded_by_an_enabled_unit(container):
    service = container.service("celery-ray-firewall.service")
    assert service.is_enabled
    assert service.is_running
    allowed = allowed_networks(container)

    def let_in(address):
        return any(ipaddress.ip_address(address) in network for network in allowed)

    assert all(let_in(address)
               for address in [NODE_ADDRESS, *SETTINGS["firewall_admin_networks"]])
    assert not let_in(PROBE_ADDRESS)


def guarded_ports(container):
    ports = set()
    for element in nft_set(container, "stack_tcp_ports"):
        low, high = element["range"] if isinstance(element, dict) else (element, element)
        ports.update(range(low, high + 1))
    return ports


def test_every_port_the_stack_listens_on_outside_loopback_is_guarded(container):
    listening = set()
    for line in container.check_output("ss -Hltn").splitlines():
        address, port = line.split()[3].rsplit(":", 1)
        address = address.strip("[]").split("%")[0]
        if address == "*" or not ipaddress.ip_address(address).is_loopback:
            listening.add(int(port))
    assert listening
    assert listening - guarded_ports(container) == set()


@pytest.fixture
def other_service(container):
    """A plain HTTP server on a port of no stack service, stopped afterwards."""
    unit = "door-probe-http"
    container.check_output(
        f"systemd-run --unit={unit} --property=RuntimeMaxSec=600 /usr/bin/python3 -m http.server "
        f"{OTHER_PORT} --bind {NODE_ADDRESS}")
    try:
        yield OTHER_PORT
    finally:
        container.run(f"systemctl stop {unit}")


PROBE_SCRIPT = """
import json, socket, sys
results = {}
for port in map(int, sys.argv[2:]):
    with socket.socket() as probe:
        probe.settimeout(10)
        results[port] = probe.connect_ex((sys.argv[1], port))
print(json.dumps(results))
"""


def test_firewall_refuses_the_stack_ports_to_an_unknown_address(container, other_service):
    """From a throwaway container at an address outside the inventory and the admin networks:
    the stack's ports answer with a reset; a port of no stack service still opens."""
    assert other_service not in guarded_ports(container)
    stack_ports = [REDIS_PORT, SETTINGS["flower_port"], GCS_PORT, *MONITORING_PORTS]
    ports = [*stack_ports, other_service]
    # The controller, an admin address, reaches the same ports.
    wait_for(lambda: connect_error(NODE_ADDRESS, other_service) == 0,
             f"the plain HTTP server on {other_service}")
    assert {port: connect_error(NODE_ADDRESS, port) for port in ports} == dict.fromkeys(ports, 0)
    subprocess.run(["docker", "rm", "-f", PROBE_CONTAINER], capture_output=True, check=False)
    try:
        probe = subprocess.run(
            ["docker", "run", "--rm", "--name", PROBE_CONTAINER, "--network", PROBE_NETWORK,
             "--ip", PROBE_ADDRESS, "--entrypoint", "/usr/bin/python3", image_of(CONTAINER),
             "-c", PROBE_SCRIPT, NODE_ADDRESS, *map(str, ports)],
            capture_output=True, text=True, check=True, timeout=120)
    finally:
        subprocess.run(["docker", "rm", "-f", PROBE_CONTAINER], capture_output=True, check=False)
    results = {int(port): error for port, error in json.loads(probe.stdout).items()}
    refused = 111  # ECONNREFUSED: the firewall's TCP reset
    assert results == {**dict.fromkeys(stack_ports, refused), other_service: 0}


def image_of(container_name: str) -> str:
    """The stack container's own image: the probe needs only its Python."""
    return subprocess.run(["docker", "inspect", "--format", "{{.Config.Image}}", container_name],
                          capture_output=True, text=True, check=True).stdout.strip()


def firewall_state(container):
    return (container.file("/etc/systemd/system/celery-ray-firewall.service").exists,
            container.run("nft list table inet celery_ray_stack").rc == 0)


def test_firewall_turns_off_and_on_with_firewall_enabled_and_nothing_else_restarts(container):
    before = main_pids(container)
    try:
        run_playbook(PROJECT, "playbooks/site.yml", "--tags", "firewall",
                     "-e", "firewall_enabled=false")
        assert firewall_state(container) == (False, False)
    finally:
        run_playbook(PROJECT, "playbooks/site.yml", "--tags", "firewall")
    assert firewall_state(container) == (True, True)
    assert main_pids(container) == before
