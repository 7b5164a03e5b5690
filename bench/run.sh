#!/usr/bin/env bash
# The benchmarks (python -m bench; arguments pass through). The task benchmarks put
# themselves in a network and PID namespace of their own (Ray sees only loopback); the
# stack benchmarks drive the local stack's container from here.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH=files exec .venv/bin/python -m bench "$@"
