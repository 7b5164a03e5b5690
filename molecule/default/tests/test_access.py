"""Flower, Redis, Prometheus and Alertmanager answer the controller with their secrets, and
only with the right ones (test_doors tries them without any)."""

import base64
import json
import urllib.error
import urllib.request

import pytest
import redis
from monitor import http_get
from scenario import (
    ALERTMANAGER_URL,
    FLOWER_URL,
    MONITORING_CREDENTIALS,
    NODE_ADDRESS,
    PROMETHEUS_URL,
    QUEUES,
    REDIS_PORT,
    REDIS_USER,
    SECRETS,
    wait_for,
    worker_name,
)


def flower_get(path, credentials=None):
    """(HTTP status, body) of a GET on Flower, with basic auth when credentials are given."""
    request = urllib.request.Request(f"{FLOWER_URL}{path}")
    if credentials:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def flower_credentials():
    return SECRETS["vault_flower_user"], SECRETS["vault_flower_password"]


def test_flower_refuses_a_wrong_password(flower_credentials):
    user, password = flower_credentials
    assert flower_get("/", (user, password + "-wrong"))[0] == 401


def test_flower_answers_with_credentials(flower_credentials):
    assert flower_get("/", flower_credentials)[0] == 200


def test_flower_shows_the_three_workers_online(flower_credentials):
    expected = {worker_name(queue): True for queue in QUEUES}

    def online():
        status, body = flower_get("/api/workers?status=1", flower_credentials)
        return status == 200 and json.loads(body) == expected

    # A worker restarted by another test is back online at its next heartbeat.
    wait_for(online, "the three workers online in Flower")


def test_redis_refuses_a_wrong_password():
    wrong = redis.Redis(host=NODE_ADDRESS, port=REDIS_PORT, socket_timeout=30,
                        username=REDIS_USER, password=SECRETS["vault_redis_password"] + "-wrong")
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong.ping()


def test_redis_accepts_the_password():
    client = redis.Redis(host=NODE_ADDRESS, port=REDIS_PORT, socket_timeout=30,
                         username=REDIS_USER, password=SECRETS["vault_redis_password"])
    assert client.ping() is True


@pytest.mark.parametrize("url", [f"{PROMETHEUS_URL}/api/v1/status/buildinfo",
                                 f"{ALERTMANAGER_URL}/api/v2/status"])
def test_prometheus_and_alertmanager_answer_their_login_only(url):
    user, password = MONITORING_CREDENTIALS
    assert http_get(url, (user, password + "-wrong"))[0] == 401
    assert http_get(url, (user, password))[0] == 200
