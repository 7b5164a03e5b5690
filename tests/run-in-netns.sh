#!/usr/bin/env bash
# Run the task-code tests (pytest args pass through) inside a network and PID namespace
# of their own: Redis, the Ray head and the Celery workers the tests start see only
# loopback (Ray otherwise advertises the machine's external address), cannot touch any
# other Ray on the machine (`ray stop` sees only this namespace), and die with the run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null; then
  echo "redis-server missing: installing Debian's redis-server" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

# bash stays PID 1 of the namespace (no exec): it reaps the daemons `ray start` leaves
# orphaned, which `ray stop` would otherwise wait for as zombies.
exec unshare --net --pid --fork --mount-proc \
  bash -c 'ip link set lo up && .venv/bin/pytest "$@"; exit $?' run-in-netns "$@"
