#!/bin/sh
# Loads the environment files the unit names in CELERY_RAY_ENV_FILES (colon-separated, a
# leading '-' for one that may be missing), as systemd's EnvironmentFile= does for the
# systemd runtime, then runs the service. The files are mounted, so no secret is part of
# the container's configuration (docker inspect).
set -eu
env_files="${CELERY_RAY_ENV_FILES:-}"
unset CELERY_RAY_ENV_FILES
saved_ifs=$IFS
IFS=:
set -f
for env_file in $env_files; do
  IFS=$saved_ifs
  case "$env_file" in
    -*) env_file="${env_file#-}"; [ -e "$env_file" ] || continue ;;
  esac
  set -a
  . "$env_file"
  set +a
done
IFS=$saved_ifs
set +f
exec "$@"
