# casemgr developer and CI entry points.  `make` (or `make help`) lists targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed
HOST        ?= 127.0.0.1
PORT        ?= 8000
PYTEST_ARGS ?=
LOCK_ARGS   ?=
# Admin URL the test suite uses to create/drop its own PostgreSQL databases.
# Set it to an empty value to run the SQLite tests only.
CASEMGR_TEST_PG_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

PIP_COMPILE_FLAGS := --extra dev --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host

.PHONY: help venv init run test lint fmt bench lock clean

help: ## Show this help
	@echo "Usage: make <target> [VAR=value ...]"
	@echo
	@echo "Targets:"
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_.-]+:.*## / {printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "Variables: PYTHON=$(PYTHON) PORT=$(PORT) PYTEST_ARGS='$(PYTEST_ARGS)' LOCK_ARGS='$(LOCK_ARGS)'"
	@echo "           CASEMGR_TEST_PG_URL (empty = SQLite tests only), CI=true (PostgreSQL required)"

venv: $(STAMP) ## Create .venv and install requirements.lock + casemgr (editable)

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.lock
	$(BIN)/pip install --no-deps -e .
	@touch $@

init: $(STAMP) ## Create keys in keys/ and migrate the SQLite database in var/
	$(BIN)/casemgr init

run: $(STAMP) ## Init, seed demo data if the db is empty, serve on HOST:PORT (127.0.0.1:8000)
	$(BIN)/casemgr init
	$(BIN)/casemgr demo --if-empty
	$(BIN)/casemgr serve --host $(HOST) --port $(PORT)

# PostgreSQL: with CI=true it must be reachable; otherwise the suite falls
# back to SQLite only (CASEMGR_TEST_PG_URL exported empty) with a warning.
test: $(STAMP) ## Run the whole test suite (PostgreSQL too when reachable)
	@bash scripts/ensure-system-deps
	@url='$(CASEMGR_TEST_PG_URL)'; \
	shown=$$(sed -E 's#//([^:/@]+):[^@]*@#//\1:***@#' <<<"$$url"); \
	libpq_url=$$(sed -E 's#^([a-z]+)\+[a-z0-9]+://#\1://#' <<<"$$url"); \
	if [ -z "$$url" ]; then \
		if [ "$(CI)" = "true" ]; then \
			echo "error: CI=true but CASEMGR_TEST_PG_URL is empty; PostgreSQL tests are required in CI" >&2; \
			exit 1; \
		fi; \
		echo "warning: CASEMGR_TEST_PG_URL is empty: running the SQLite tests only" >&2; \
	elif PGCONNECT_TIMEOUT=5 psql -X -A -t -q -d "$$libpq_url" -c 'select 1' >/dev/null 2>&1; then \
		echo "PostgreSQL reachable at $$shown"; \
	elif [ "$(CI)" = "true" ]; then \
		echo "error: PostgreSQL unreachable at $$shown (CI=true requires it)" >&2; \
		exit 1; \
	else \
		echo "warning: PostgreSQL unreachable at $$shown: running the SQLite tests only" >&2; \
		echo "         (start it with: pg_ctlcluster 15 main start)" >&2; \
		url=; \
	fi; \
	export CASEMGR_TEST_PG_URL="$$url"; \
	echo "+ CASEMGR_TEST_PG_URL=$${url:+$$shown} $(BIN)/python -m pytest $(PYTEST_ARGS)"; \
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check, ruff format --check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP) ## Format with ruff and apply ruff's safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: ## Run the benchmarks (python -m benchmarks)
	@if [ ! -d benchmarks ]; then \
		echo "error: no benchmarks/ package in this checkout yet; nothing to run" >&2; \
		exit 1; \
	fi
	@$(MAKE) --no-print-directory venv
	$(BIN)/python -m benchmarks

lock: $(STAMP) ## Regenerate requirements.lock from pyproject.toml (LOCK_ARGS=--upgrade to bump)
	$(BIN)/pip-compile $(PIP_COMPILE_FLAGS) $(LOCK_ARGS) -o requirements.lock pyproject.toml

clean: ## Remove .venv, caches, build output and var/ (keeps keys/)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info var
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
