"""Lightweight tasks (queue ``default``): health, notifications, cleanup."""

import json
import logging
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import redis

from tasks import paths
from tasks.base import DURABLE, task
from tasks.errors import InvalidInput, TransientError
from tasks.raycluster import ensure_ray
from tasks.settings import settings

logger = logging.getLogger(__name__)

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL}
CHANNELS = ("log", "webhook")
WEBHOOK_TIMEOUT_SECONDS = 10
RESULT_KEY_PATTERN = "celery-task-meta-*"


@task(soft_time_limit=10, time_limit=20)
def ping(self):
    return {"status": "pong", "worker": self.request.hostname}


# Durable like every task that connects to Ray: a pool process whose Ray connection died
# leaves the pool in ensure_ray, and the check runs again in a new process.
@task(soft_time_limit=30, time_limit=60, **DURABLE)
def check_cluster_health(self):
    """Ray's nodes, CPUs and liveness. An unreachable or broken Ray is reported as
    status 'unhealthy' with the error, not raised."""
    address = settings().ray_address
    try:
        ray = ensure_ray(head_wait_seconds=0)
        nodes = ray.nodes()
        total_cpus = ray.cluster_resources().get("CPU", 0)
        available_cpus = ray.available_resources().get("CPU", 0)
    except Exception as exc:
        return {"status": "unhealthy", "ray_address": address, "error": str(exc),
                "nodes": [], "alive_nodes": 0, "total_cpus": 0, "available_cpus": 0}
    alive = [node for node in nodes if node["Alive"]]
    return {
        "status": "healthy" if alive else "unhealthy",
        "ray_address": address,
        "alive_nodes": len(alive),
        "dead_nodes": len(nodes) - len(alive),
        "total_cpus": total_cpus,
        "available_cpus": available_cpus,
        "nodes": [
            {"node_id": node["NodeID"], "address": node["NodeManagerAddress"],
             "alive": node["Alive"], "cpus": node.get("Resources", {}).get("CPU", 0)}
            for node in nodes
        ],
    }


def post_webhook(url: str, payload: dict) -> int:
    """POST payload as JSON; 5xx/429/unreachable is transient, another 4xx is final."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        if exc.code >= 500 or exc.code == 429:
            raise TransientError(f"webhook answered HTTP {exc.code}") from None
        raise InvalidInput(f"webhook refused the notification: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise TransientError(f"webhook unreachable: {exc}") from None


@task(soft_time_limit=30, time_limit=60)
def send_notification(self, message=None, level="info", channel="log"):
    """Log the message, or POST it as JSON {message, level, task_id, sent_at} to the
    configured webhook_url (channel 'webhook')."""
    if not isinstance(message, str) or not message:
        raise InvalidInput(f"message must be a non-empty string, got {message!r}")
    if level not in LEVELS:
        raise InvalidInput(f"level {level!r} is not one of {list(LEVELS)}")
    if channel not in CHANNELS:
        raise InvalidInput(f"channel {channel!r} is not one of {list(CHANNELS)}")
    if channel == "log":
        logger.log(LEVELS[level], "notification: %s", message)
        return {"status": "sent", "channel": channel, "level": level}
    url = settings().webhook_url
    if not url:
        raise InvalidInput("channel 'webhook' needs webhook_url in TASKS_CONFIG_FILE")
    status = post_webhook(url, {"message": message, "level": level,
                                "task_id": self.request.id,
                                "sent_at": datetime.now(UTC).isoformat()})
    return {"status": "sent", "channel": channel, "level": level, "http_status": status}


def remove_files_older_than(directory: Path, cutoff: float) -> list[str]:
    """Remove files last modified before cutoff under directory; prune emptied dirs."""
    removed = []
    if not directory.is_dir():
        return removed
    for path in sorted(directory.rglob("*"), reverse=True):
        if path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff:
            path.unlink()
            removed.append(str(path))
        elif path.is_dir() and path != directory and not any(path.iterdir()):
            path.rmdir()
    return sorted(removed)


def remove_results_older_than(client: redis.Redis, cutoff: float) -> int:
    """Delete stored results that carry no expiry (result_expires expires the others)
    and finished before cutoff."""
    removed = 0
    for key in client.scan_iter(match=RESULT_KEY_PATTERN, count=500):
        if client.ttl(key) != -1:
            continue
        raw = client.get(key)
        try:
            done = datetime.fromisoformat(json.loads(raw)["date_done"])
        except (TypeError, ValueError, KeyError):
            continue
        if done.replace(tzinfo=done.tzinfo or UTC).timestamp() < cutoff:
            removed += client.delete(key)
    return removed


@task(soft_time_limit=300, time_limit=360)
def cleanup_old_results(self, older_than_days=7):
    """Remove output files older than older_than_days from processed_dir and the inbox's
    claimed files, and stored results without expiry; report what was removed."""
    if isinstance(older_than_days, bool) or not isinstance(older_than_days, int | float) \
            or older_than_days <= 0:
        raise InvalidInput(f"older_than_days must be a number > 0, got {older_than_days!r}")
    cutoff = time.time() - older_than_days * 86400
    directories = [
        paths.guarded_path(settings().processed_dir, what="processed_dir"),
        paths.guarded_path(settings().inbox_dir, what="inbox_dir") / paths.CLAIMED_DIR,
    ]
    removed_files = [f for d in directories for f in remove_files_older_than(d, cutoff)]
    removed_results = remove_results_older_than(
        redis.Redis.from_url(settings().result_backend), cutoff
    )
    return {"status": "completed", "older_than_days": older_than_days,
            "removed_files": removed_files, "removed_results": removed_results}
