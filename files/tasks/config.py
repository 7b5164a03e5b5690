"""The checker of TASKS_CONFIG_FILE, run by the deployment before it installs the file:

  python -m tasks.config check /etc/celery-ray/tasks.json

Exit 0 when the file is valid, 1 with one line per problem (2: wrong usage). It needs
neither Redis nor Ray: the keys are those of tasks.settings, and the task names of the
Beat entries must be tasks the package registers (tasks.application).
"""

import os
import sys

from tasks.application import known_task_names
from tasks.settings import ConfigError, read_document, validate


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "check":
        print("usage: python -m tasks.config check PATH", file=sys.stderr)
        return 2
    path = argv[1]
    # Judge the given file alone, even where the environment names another (maybe broken).
    os.environ.pop("TASKS_CONFIG_FILE", None)
    try:
        errors = validate(read_document(path), known_task_names())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    for error in errors:
        print(f"{path}: {error}", file=sys.stderr)
    if errors:
        return 1
    print(f"{path}: valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
