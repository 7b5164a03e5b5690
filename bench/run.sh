#!/usr/bin/env bash
# The task benchmarks (python -m bench; arguments pass through) in a network and PID
# namespace of their own: the Ray head, Redis and Celery workers they start see only
# loopback (Ray otherwise advertises the machine's external address), cannot touch any
# other Ray on the machine, and die with the run.
set -euo pipefail
cd "$(dirname "$0")/.."

# bash stays PID 1 of the namespace (no exec): it reaps the daemons `ray start` leaves
# orphaned, which `ray stop` would otherwise wait for as zombies.
exec unshare --net --pid --fork --mount-proc \
  bash -c 'ip link set lo up && PYTHONPATH=files .venv/bin/python -m bench "$@"; exit $?' \
  run-bench "$@"
