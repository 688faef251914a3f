# The two commands: `make up` runs the system, `make test` runs the tests.
# Settings come from .env if it exists, else .env.example.

ENV_FILE ?= $(if $(wildcard .env),.env,.env.example)
CARGO ?= cargo
SHELL := /bin/bash

.PHONY: help up build services test lint fmt load soak fuzz chaos scale cluster cluster-down cluster-chaos pg-cluster pg-cluster-down pg-cluster-chaos observe observe-down alert-drill clean

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

up: build services ## Build release binaries, start PostgreSQL/Redis/RabbitMQ if down, run the services until Ctrl-C.
	@set -a; . ./$(ENV_FILE); set +a; scripts/run.sh

build: ## Build the release binaries (product, order, outbox, perf tools).
	$(CARGO) build --release --workspace --bins

services: ## Make sure PostgreSQL, Redis and RabbitMQ answer (start them if installed but down).
	@scripts/services.sh

test: services ## The whole test suite against the real local servers: unit and integration tests, the docs' commands as written, the alert rules.
	@if scripts/cluster.sh url >/dev/null 2>&1; then echo "test: the three-node RabbitMQ cluster answers: its test runs"; \
	else echo "test: no three-node RabbitMQ cluster (make cluster): its test is skipped"; fi
	@if scripts/pg-cluster.sh healthy >/dev/null 2>&1; then echo "test: the Patroni cluster answers: its tests run"; \
	else echo "test: no Patroni cluster (make pg-cluster): its tests are skipped"; fi
	$(CARGO) test --workspace
	$(CARGO) build --workspace --bins
	@scripts/doc-commands.sh
	@scripts/check-rules.sh

lint: ## rustfmt and clippy, as CI runs them.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code.
	$(CARGO) fmt --all

load: ## Load-test the running stack (make up first): SCENARIO=orders|mixed|hot|ramp RATE=1000 DURATION=60s.
	$(CARGO) build --release -p perf
	@set -a; . ./$(ENV_FILE); set +a; scripts/load.sh

soak: build ## Hours-long use in half an hour: databases grown to FILL_ORDERS, RATE=1000 for MINUTES=30, outbox retention 6 min; a line a minute (stop make up first).
	@set -a; . ./$(ENV_FILE); set +a; scripts/soak.sh

fuzz: build ## schemathesis against both services' OpenAPI descriptions (own databases and ports): EXAMPLES=100.
	@set -a; . ./$(ENV_FILE); set +a; scripts/fuzz.sh

chaos: build ## Faults under load (stops its own stack; restarts local RabbitMQ and Redis): RATE=1000 PHASE_SECONDS=30.
	@set -a; . ./$(ENV_FILE); set +a; scripts/chaos.sh

scale: build ## 1 vs 2 instances of every process under the same load (stop make up first): RATE=2000 DURATION=30s.
	@set -a; . ./$(ENV_FILE); set +a; scripts/scale.sh

cluster: ## Start a three-node RabbitMQ cluster (rabbit-a/b/c on 5681-5683) beside the local broker; prints its AMQP_URL.
	@scripts/cluster.sh up

cluster-down: ## Stop the three cluster nodes and remove their folders (.state/rabbitmq-cluster).
	@scripts/cluster.sh down

cluster-chaos: build ## Orders against the cluster, its order-created leader killed at +10 s, restarted at +25 s: RATE=500 DURATION=40.
	@set -a; . ./$(ENV_FILE); set +a; scripts/cluster-chaos.sh

pg-cluster: ## Start PostgreSQL 15 under Patroni (pg-a/b/c on 5441-5443, REST 8441-8443, one etcd), synchronous and strict; prints the database settings for a stack on it.
	@scripts/pg-cluster.sh up

pg-cluster-down: ## Stop the Patroni cluster and etcd and remove their folders (.state/pg-cluster).
	@scripts/pg-cluster.sh down

pg-cluster-chaos: build ## Orders against services on the Patroni cluster, its leader killed at +15 s, restarted at +40 s: RATE=500 DURATION=60.
	@set -a; . ./$(ENV_FILE); set +a; scripts/pg-cluster-chaos.sh

observe: ## Prometheus (:9090) and Alertmanager (:9093) watching `make up` with the project's rules (deploy/); prints the URLs.
	@scripts/observe.sh up

observe-down: ## Stop Prometheus and Alertmanager and remove their data (.state/observe).
	@scripts/observe.sh down

alert-drill: build ## With `make observe`: hold each fault until its alert fires, end it, wait for the resolve; prints a table (stop make up first).
	@set -a; . ./$(ENV_FILE); set +a; scripts/alert-drill.sh

clean: ## Remove build output and load reports.
	$(CARGO) clean
	rm -rf reports
