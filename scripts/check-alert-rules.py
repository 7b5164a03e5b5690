"""`make lint`: the alert rules as production gets them, checked and unit-tested by promtool.

Renders roles/monitoring/templates/alerts.rules.yml.j2 the way Ansible does (the template's
own `#jinja2:` delimiters) with the monitoring role's defaults and the project's backlog
thresholds from group_vars/all/main.yml, then runs `promtool check rules` on it and
`promtool test rules` on tests/alerts.test.yml next to it.

    python scripts/check-alert-rules.py PROMTOOL
"""

import ast
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jinja2
import yaml

PROJECT = Path(__file__).resolve().parents[1]
ROLE = PROJECT / "roles/monitoring"
TEMPLATE = ROLE / "templates/alerts.rules.yml.j2"
RULES_NAME = "celery-ray-stack.rules.yml"  # the name tests/alerts.test.yml loads
TESTS = PROJECT / "tests/alerts.test.yml"
OVERRIDES = "#jinja2:"


def render() -> str:
    text = TEMPLATE.read_text()
    header, _, body = text.partition("\n")
    if not header.startswith(OVERRIDES):
        sys.exit(f"{TEMPLATE}: expected its first line to set the delimiters ({OVERRIDES} ...)")
    delimiters = {key.strip(): ast.literal_eval(value) for key, value in
                  (pair.split(":", 1) for pair in header[len(OVERRIDES):].split(","))}
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True,
                                     keep_trailing_newline=True, **delimiters)
    variables = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    group_vars = yaml.safe_load((PROJECT / "group_vars/all/main.yml").read_text())
    variables["monitoring_queue_backlog_thresholds"] = group_vars[
        "monitoring_queue_backlog_thresholds"]
    return environment.from_string(body).render(
        ansible_managed=f"Rendered from {TEMPLATE.relative_to(PROJECT)} for make lint",
        **variables)


def main(promtool: str) -> int:
    with tempfile.TemporaryDirectory(prefix="alert-rules-") as directory:
        rules = Path(directory) / RULES_NAME
        rules.write_text(render())
        shutil.copy(TESTS, directory)
        for command in (["check", "rules", str(rules)],
                        ["test", "rules", str(Path(directory) / TESTS.name)]):
            if subprocess.run([promtool, *command], check=False).returncode:
                return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    sys.exit(main(sys.argv[1]))
