# The README's commands: `make up` runs the stack locally, `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
PYTHON ?= python3

.PHONY: help up down test lint unit molecule molecule-default molecule-default-trixie molecule-cluster molecule-docker molecule-trixie-then-cluster docker-engine base-image base-image-trixie host-packages bench

# promtool of Debian's prometheus package (the version the hosts run), unpacked here:
# installing the package would start a Prometheus on this machine.
PROMTOOL := .cache/prometheus/usr/bin/promtool

help:
	@echo "make up       bring the whole stack up locally in a systemd container and run a demo"
	@echo "make down     tear the local stack down"
	@echo "make test     lint, unit tests and the Molecule scenarios: default on Debian 12 and 13, cluster, docker (installs what it needs)"
	@echo "make bench    the stack and task benchmarks against bare Celery, pandas/polars, scikit-learn (QUICK=1: smaller)"

$(VENV)/.installed: requirements-dev.txt files/tasks/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

host-packages:
	@command -v redis-server >/dev/null && command -v unshare >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server util-linux iproute2 >/dev/null; }
	@# The unit tests start their own redis-server; Debian's packaged instance is not needed.
	@systemctl disable --now redis-server >/dev/null 2>&1 || true

$(PROMTOOL):
	mkdir -p .cache/prometheus
	cd .cache/prometheus && { apt-get download prometheus 2>/dev/null \
	  || { apt-get update -qq && apt-get download prometheus; }; }
	dpkg-deb -x .cache/prometheus/prometheus_*.deb .cache/prometheus
	rm .cache/prometheus/prometheus_*.deb
	touch $@

docker-engine:
	bash scripts/ensure-docker.sh

base-image: docker-engine
	bash scripts/build-base-image.sh bookworm

base-image-trixie: docker-engine
	bash scripts/build-base-image.sh trixie

lint: $(VENV)/.installed $(PROMTOOL)
	ruff check .
	yamllint --strict .
	ansible-lint
	python scripts/check-alert-rules.py $(PROMTOOL)

unit: $(VENV)/.installed host-packages
	bash tests/run-in-netns.sh

molecule-default: $(VENV)/.installed base-image
	molecule test -s default

# The default scenario again on a Debian 13 host (Python 3.13, Redis 8): converge,
# idempotence and every verify test but the fault drills, which the Debian 12 run covers.
molecule-default-trixie: $(VENV)/.installed base-image-trixie
	CELERY_RAY_BASE_IMAGE=celery-ray-stack/debian13-systemd:latest CELERY_RAY_DRILLS=0 \
	  molecule test -s default

molecule-cluster: $(VENV)/.installed base-image
	molecule test -s cluster

# The default scenario's stack and tests on the docker runtime (celery_ray_runtime: docker).
molecule-docker: $(VENV)/.installed base-image
	molecule test -s docker

# The default scenario first: it fills the wheel cache and writes the test secrets the
# others read. Then two lanes at once, each mostly waiting on its containers (converges,
# drills): Debian 13 then the cluster, and the docker runtime. Each lane's output is
# printed whole when it ends.
molecule: $(VENV)/.installed base-image base-image-trixie
	$(MAKE) molecule-default
	$(MAKE) --jobs=2 --output-sync=target molecule-trixie-then-cluster molecule-docker

molecule-trixie-then-cluster:
	$(MAKE) --jobs=1 molecule-default-trixie molecule-cluster

# The stack benchmarks recreate the local stack's container (`make up`) and leave it up.
bench: $(VENV)/.installed host-packages base-image
	$(BIN)/pip install --quiet -r bench/requirements.txt
	bash bench/run.sh $(if $(QUICK),--quick)

test: lint unit molecule

up: $(VENV)/.installed base-image
	bash scripts/local-stack.sh up

down:
	bash scripts/local-stack.sh down
