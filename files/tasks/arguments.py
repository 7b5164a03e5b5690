"""The size limit on task arguments, shared by the workers and the package's client.

Task arguments are paths and small settings; data travels as files under the data
roots. A message of tens of megabytes would sit in Redis (the queue, the unacknowledged
copy, the stored result) and pass through every worker process that touches it, so
arguments above the limit are refused: by the package's client before sending, and by
the workers (for any other client) before the task runs.
"""

import json
from typing import Any

from tasks.errors import InvalidInput

MAX_ARGUMENT_BYTES = 1_000_000


def arguments_size(args: Any, kwargs: Any) -> int:
    """Bytes of the arguments as the JSON serializer sends them."""
    return len(json.dumps([args or [], kwargs or {}], default=str).encode())


def check_argument_size(args: Any, kwargs: Any) -> None:
    size = arguments_size(args, kwargs)
    if size > MAX_ARGUMENT_BYTES:
        raise InvalidInput(
            f"task arguments are {size / 1e6:.1f} MB of JSON, above the limit of "
            f"{MAX_ARGUMENT_BYTES / 1e6:g} MB: write the data to a file under the data "
            "roots and pass its path"
        )
