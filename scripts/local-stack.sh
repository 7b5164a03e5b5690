#!/usr/bin/env bash
# `make up` / `make down`: the whole stack in one local systemd container.
#   up    create (or keep) the container of Molecule's `local` scenario, write the demo data,
#         converge the real playbooks/site.yml, then run the demo client (scripts/demo.py),
#         which writes .local-stack/connection.env. Running it again re-converges and re-runs
#         the demo.
#   down  remove the container and its network; connection.env goes with them. The
#         generated secrets (molecule/shared/group_vars/molecule/secrets.yml) stay: the
#         test scenarios share them.
set -euo pipefail

project_dir=$(cd "$(dirname "$0")/.." && pwd)
cd "$project_dir"
export PATH="$project_dir/.venv/bin:$PATH"

scenario=local
container=celery-ray-local
network=celery-ray-local
env_file=.local-stack/connection.env

container_running() {
  [ "$(docker container inspect --format '{{.State.Running}}' "$container" 2>/dev/null)" = true ]
}

up() {
  if ! container_running; then
    # Forget whatever Molecule remembers of an earlier container that is gone or stopped.
    molecule destroy -s "$scenario"
  fi
  # Skipped by Molecule when it made the container already.
  molecule create -s "$scenario"
  # Writes the demo data once per container (Molecule skips it when already prepared): a
  # second run would hand /datasets back to root until the converge corrects it.
  molecule prepare -s "$scenario"
  molecule converge -s "$scenario"

  local address
  address=$(docker container inspect \
    --format "{{ (index .NetworkSettings.Networks \"$network\").IPAddress }}" "$container")
  echo
  echo "Stack converged in $container ($address); running the demo client..."
  PYTHONPATH="$project_dir/files" python scripts/demo.py \
    --container "$container" --address "$address" --env-file "$env_file"
}

down() {
  rm -f "$env_file"
  rmdir "$(dirname "$env_file")" 2>/dev/null || true
  molecule destroy -s "$scenario"
  if docker container inspect "$container" >/dev/null 2>&1 || docker network inspect "$network" >/dev/null 2>&1; then
    echo "$container or the network $network is still there: see docker ps -a / docker network ls." >&2
    exit 1
  fi
  echo "The local stack is down: container $container and network $network removed."
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
