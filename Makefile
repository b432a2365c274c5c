# Tauon — the two commands a newcomer runs are `make demo` and `make test`.
# Both set everything up first: the Python environment (cached outside the repo, keyed by the
# pinned dependencies) and the Kubernetes control plane (built from the Go module proxy, cached
# by version). Nothing needs to be installed by hand beyond python3 and go.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
VENV := .tauon/venv
PY := $(VENV)/bin/python
# The checkout on PYTHONPATH wins over wherever the shared venv's editable install points
# (another clone on this machine may have installed itself there last).
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)/runtime:$(CURDIR)/hack

.PHONY: help setup venv control-plane prometheus seaweedfs kueue browser demo test lint unit integration e2e cluster-up \
        cluster-down crds crds-check bench clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

venv: ## the Python environment (torch, kopf, kubectl, helm …)
	@hack/setup-venv.sh >/dev/null

control-plane: ## build etcd, kube-apiserver, controller-manager, scheduler and kwok (cached)
	@hack/build-control-plane.sh >/dev/null

prometheus: ## build prometheus and promtool, take prometheus-operator's CRDs (cached)
	@hack/build-prometheus.sh >/dev/null

seaweedfs: ## build SeaweedFS, the local platform's S3 artifact store (cached)
	@hack/build-seaweedfs.sh >/dev/null

kueue: ## build Kueue (the queueing and quota controller the Kueue tests run), take its CRDs (cached)
	@hack/build-kueue.sh >/dev/null

setup: venv control-plane

browser: ## Debian's chromium and chromedriver, for the console's browser tests
	@hack/setup-chromium.sh

EXAMPLE ?= examples/digits
demo: setup seaweedfs ## the main job: start the platform locally and show it working (EXAMPLE=examples/<dir>)
	@$(PY) hack/demo.py $(EXAMPLE)

test: setup prometheus seaweedfs kueue browser lint ## every test: lint, unit, integration (real API server) and end-to-end
	@# Two workers, whole modules each: the reliability module's outage and idle windows (~13 min
	@# of mostly waiting) overlap the rest instead of adding to it. Each worker has its own cluster;
	@# the modules that run pods on a node agent share one worker (tests/conftest.py).
	$(PY) -m pytest -n 2 --dist loadfile tests

lint: venv ## ruff (lint and format) and mypy on operator/ and runtime/, ruff on the examples' code
	$(VENV)/bin/ruff check operator runtime examples
	$(VENV)/bin/ruff format --check operator runtime examples
	$(VENV)/bin/mypy operator/tauon_operator runtime/tauon_runtime

unit: venv ## unit tests only (no cluster)
	$(PY) -m pytest tests/unit

integration: setup seaweedfs kueue ## integration tests against the local control plane
	$(PY) -m pytest tests/integration

e2e: setup seaweedfs ## end-to-end tests (the whole loop)
	$(PY) -m pytest tests/e2e

cluster-up: setup ## start the control plane in .tauon/cluster and print `export KUBECONFIG=…`
	@$(PY) -m localkube up --state-dir .tauon/cluster

cluster-down: ## stop the control plane started by cluster-up
	@if [ -x $(PY) ]; then $(PY) -m localkube down --state-dir .tauon/cluster; fi

crds: venv ## regenerate crds/ and charts/tauon/crds/ from the pydantic models
	$(VENV)/bin/tauon-operator crds

bench: setup ## benchmarks: they print figures, they do not pass or fail (quick sizes)
	$(PY) bench/cluster_start.py
	$(PY) bench/operator_scale.py --jobs 100 --nodes 13 --baseline bare --peer training-operator
	$(PY) bench/serve_throughput.py --peers kserve,litserve --requests 200

clean: cluster-down ## remove local state (not the caches in ~/.cache/tauon)
	rm -rf .tauon .pytest_cache
