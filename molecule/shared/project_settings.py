"""The project's settings as the tests and the demo read them: every role's defaults, then
group_vars/all/main.yml, then the test containers' group_vars, as Ansible layers them.

A value that only names other settings ("{{ celery_ray_broker_port }}",
"{{ ray_node_ports.metrics_export }}") is resolved; the secrets come from the generated
(git-ignored) secrets.yml, never from here.
"""

import re
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[2]
GROUP_VARS_FILE = PROJECT / "group_vars/all/main.yml"
MOLECULE_VARS_FILE = PROJECT / "molecule/shared/group_vars/molecule/main.yml"
SECRETS_FILE = PROJECT / "molecule/shared/group_vars/molecule/secrets.yml"
REFERENCE = re.compile(r"^\{\{ *([a-z_]+(?:\.[a-z_]+)*) *\}\}$")


def _layers() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for defaults in sorted(PROJECT.glob("roles/*/defaults/main.yml")):
        merged.update(yaml.safe_load(defaults.read_text()) or {})
    merged.update(yaml.safe_load(GROUP_VARS_FILE.read_text()))
    merged.update(yaml.safe_load(MOLECULE_VARS_FILE.read_text()))
    return merged


def _resolve(value: Any, layers: dict[str, Any]) -> Any:
    match = REFERENCE.match(value) if isinstance(value, str) else None
    if not match:
        return value
    name, *attributes = match.group(1).split(".")
    if name not in layers:  # a secret (vault_*): read_secrets() has it
        return value
    resolved = _resolve(layers[name], layers)
    for attribute in attributes:
        resolved = resolved[attribute]
    return resolved


_LAYERS = _layers()
SETTINGS: dict[str, Any] = {name: _resolve(value, _LAYERS) for name, value in _LAYERS.items()}


def read_secrets() -> dict[str, str]:
    return yaml.safe_load(SECRETS_FILE.read_text())
