#!/usr/bin/env bash
# Make sure a Docker engine answers. Where `docker info` already works this does nothing;
# on Debian as root it installs docker.io and iptables and starts dockerd with its defaults
# (bridge and NAT on), logging to a file and recording its PID.
set -euo pipefail

state_dir="${DOCKERD_STATE_DIR:-/var/lib/celery-ray-stack}"
log_file="$state_dir/dockerd.log"
pid_file="$state_dir/dockerd.pid"

if docker info >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "No Docker engine answers and this is not root: start Docker yourself (docker info must work)." >&2
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v iptables >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io iptables >/dev/null
fi

mkdir -p "$state_dir"
if [ -s "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
  echo "dockerd (PID $(cat "$pid_file")) is starting; waiting for it." >&2
else
  # A session of its own: dockerd outlives the shell, job or CI step that started it
  # (ending a process group, as job runners do, would otherwise take dockerd with it).
  # setsid execs dockerd in place (a background child is no group leader), so $! is its PID.
  setsid dockerd >>"$log_file" 2>&1 </dev/null &
  echo $! >"$pid_file"
fi

for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "dockerd is up (PID $(cat "$pid_file"), log $log_file)."
    exit 0
  fi
  sleep 1
done
echo "dockerd did not answer within 60 s; see $log_file" >&2
tail -n 20 "$log_file" >&2
exit 1
