"""`ray start`, but without the Ray Client server; installed by the ray_node role.

`ray start --head` starts the Ray Client server (its default port, which runs whatever code a
client sends it) whenever grpc can be imported, as it always can with ray[default], and
has no switch to leave it out (--ray-client-server-port only takes ports 1024-65535). It
decides through ray.scripts.scripts.get_ray_client_dependency_error(): answering "not
installed" there makes it start none, exactly as on an installation without Ray Client.
ray-head.service runs this instead of `ray start` unless ray_head_client_server_enabled.
"""

import sys

from ray.scripts import scripts


def _client_server_off():
    return ImportError("the Ray Client server is off (ray_head_client_server_enabled: false)")


if not callable(getattr(scripts, "get_ray_client_dependency_error", None)):
    sys.exit("This Ray version decides differently whether to start the Ray Client server: "
             "review roles/ray_node/files/ray_start_without_client.py before using it.")
scripts.get_ray_client_dependency_error = _client_server_off
sys.exit(scripts.main())
