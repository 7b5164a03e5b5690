"""Prometheus and Alertmanager of the default scenario, asked from this controller (an
admin address) with the web UIs' credentials."""

import base64
import json
import urllib.error
import urllib.parse
import urllib.request

import yaml
from scenario import ALERTMANAGER_URL, MONITORING_CREDENTIALS, PROJECT, PROMETHEUS_URL

HTTP_TIMEOUT_SECONDS = 30
# The alert drills' settings (short scrape interval and `for:`), from their group_vars.
DRILL_SETTINGS = yaml.safe_load(
    (PROJECT / "molecule/shared/group_vars/alert_drills/main.yml").read_text())


def seconds(duration: str) -> float:
    """A Prometheus duration of one unit ("15s", "1m") in seconds."""
    return float(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


SCRAPE_INTERVAL_SECONDS = seconds(DRILL_SETTINGS["monitoring_prometheus_scrape_interval"])


def http_get(url: str, credentials: tuple[str, str] | None = MONITORING_CREDENTIALS):
    """(HTTP status, body) of a GET, with basic auth when credentials are given."""
    request = urllib.request.Request(url)
    if credentials:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def get_json(url: str):
    status, body = http_get(url)
    assert status == 200, f"GET {url}: HTTP {status}: {body[:500]!r}"
    return json.loads(body)


def query(expression: str) -> list[dict]:
    """The result of an instant query: [{"metric": {...}, "value": [time, "value"]}]."""
    answer = get_json(f"{PROMETHEUS_URL}/api/v1/query?"
                      + urllib.parse.urlencode({"query": expression}))
    return answer["data"]["result"]


def value(expression: str) -> float | None:
    """The value of a query that yields one series, or None when it yields none."""
    result = query(expression)
    assert len(result) <= 1, f"{expression} yields {len(result)} series: {result}"
    return float(result[0]["value"][1]) if result else None


def targets() -> list[dict]:
    return get_json(f"{PROMETHEUS_URL}/api/v1/targets?state=active")["data"]["activeTargets"]


def active_alerts(name: str) -> list[dict]:
    """The alerts of that name Alertmanager holds as active (firing, not resolved)."""
    url = f"{ALERTMANAGER_URL}/api/v2/alerts?" + urllib.parse.urlencode(
        {"active": "true", "silenced": "false", "inhibited": "false",
         "filter": f'alertname="{name}"'})
    return get_json(url)
