# genstream — `make help` lists the targets. `make run` and `make test` set up everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet -e ./clients/python
	touch $(STAMP)

.PHONY: install
install: $(STAMP) ## create .venv and install the service with its dev tools

.PHONY: run
run: $(STAMP) ## migrate and serve on 127.0.0.1:8000 (embedded PostgreSQL unless DATABASE_URL)
	$(PY) -m service serve

.PHONY: worker
worker: $(STAMP) ## run generations only (no HTTP)
	$(PY) -m service worker

.PHONY: migrate
migrate: $(STAMP) ## apply the Alembic migrations up to head
	$(PY) -m service migrate

.PHONY: browser
browser: ## Debian's chromium for the web page's tests (installed when run as root)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "The web page's tests need Debian's chromium: sudo apt-get install chromium" >&2; exit 1; \
	  fi; }

.PHONY: proxy
proxy: ## Debian's nginx for the reverse-proxy tests (installed when run as root)
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; \
	  else \
	    echo "The reverse-proxy tests need Debian's nginx: sudo apt-get install nginx" >&2; exit 1; \
	  fi; }

.PHONY: sandbox
sandbox: ## Debian's bubblewrap, the sandbox generated code is verified in (installed when run as root)
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else \
	    echo "Verifying generated code needs Debian's bubblewrap: sudo apt-get install bubblewrap" >&2; exit 1; \
	  fi; }

.PHONY: pooler
pooler: ## Debian's pgbouncer for the tests behind a pooler (installed when run as root)
	@command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; \
	  else \
	    echo "The pooler tests need Debian's pgbouncer: sudo apt-get install pgbouncer" >&2; exit 1; \
	  fi; }

.PHONY: peers
peers: ## Debian's redis-server and nats-server, the peers of bench case 12 (installed when run as root)
	@{ command -v redis-server && { command -v nats-server || [ -x /usr/sbin/nats-server ]; }; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server nats-server >/dev/null; \
	  else \
	    echo "Bench case 12 and its test need Debian's redis-server and nats-server: sudo apt-get install redis-server nats-server" >&2; exit 1; \
	  fi; }

# pytest-xdist workers (TEST_WORKERS=0: one process). Three on two cores: much of the suite
# waits on fsync, subprocesses and the browser, so a third worker still shortens it (24 -> 11.5 min).
TEST_WORKERS ?= 3
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

.PHONY: test
test: $(STAMP) browser proxy sandbox pooler peers ## the whole suite against a real PostgreSQL, Chromium, nginx, bubblewrap, PgBouncer, Redis and NATS
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: $(STAMP) sandbox ## the inner loop: every test not marked slow (no browser, faults, bench)
	$(PY) -m pytest -m "not slow" $(XDIST) $(PYTEST_ARGS)

.PHONY: bench
bench: $(STAMP) peers ## benchmarks beside their references: tables, bench/results/*.json (BENCH_ARGS=--quick)
	$(PY) -m bench $(BENCH_ARGS)

.PHONY: lint
lint: $(STAMP) ## ruff (lint + format check) and mypy --strict
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: check
check: lint test ## lint, then test

.PHONY: db-stop
db-stop: $(STAMP) ## stop the embedded PostgreSQL cluster
	$(PY) -m service db stop

.PHONY: clean
clean: ## remove the virtualenv (keeps .data, the embedded database)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
