# casemgr developer and CI entry points.  `make` (or `make help`) lists targets.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := .venv
BIN         := $(VENV)/bin
STAMP       := $(VENV)/.installed
HOST        ?= 127.0.0.1
PORT        ?= 8000
# The slowest tests are listed at the end of each run (keeps CI time visible).
PYTEST_ARGS ?= --durations=15
# Test processes (pytest-xdist): one per CPU. PYTEST_WORKERS=0 runs in this process.
PYTEST_WORKERS ?= auto
LOCK_ARGS   ?=
BENCH_ARGS  ?=
# Admin URL the test suite uses to create/drop its own PostgreSQL databases.
# Set it to an empty value to run the SQLite tests only.
CASEMGR_TEST_PG_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

PIP_COMPILE_FLAGS := --extra dev --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links --no-emit-trusted-host

.PHONY: help venv init run test lint fmt bench bench-full lock clean

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
	echo "+ CASEMGR_TEST_PG_URL=$${url:+$$shown} $(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)"; \
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# -- stress tests (issue 11) ----------------------------------------------------------------
# Real `casemgr serve` processes under sixteen clients, killed halfway through imports, key
# rotation, audit batches and checkpoints, and PostgreSQL restarted under load
# (tests/stress/). Run alone, never beside `make test` or other work on this PostgreSQL: the
# restart breaks every connection to it. `make test` leaves these tests out. STRESS_SECONDS
# is how long the concurrency tests load the service (CI runs 25).
STRESS_SECONDS ?= 60
.PHONY: test-stress
test-stress: $(STAMP) ## Stress tests, alone: load, kills, a PostgreSQL restart (STRESS_SECONDS=60)
	@bash scripts/ensure-system-deps
	@url='$(CASEMGR_TEST_PG_URL)'; \
	libpq_url=$$(sed -E 's#^([a-z]+)\+[a-z0-9]+://#\1://#' <<<"$$url"); \
	if [ -n "$$url" ] && ! PGCONNECT_TIMEOUT=5 psql -X -A -t -q -d "$$libpq_url" -c 'select 1' >/dev/null 2>&1; then \
		if [ "$(CI)" = "true" ]; then echo "error: PostgreSQL unreachable (CI=true requires it)" >&2; exit 1; fi; \
		echo "warning: PostgreSQL unreachable: running the SQLite stress tests only" >&2; url=; \
	elif [ -z "$$url" ] && [ "$(CI)" = "true" ]; then \
		echo "error: CI=true but CASEMGR_TEST_PG_URL is empty" >&2; exit 1; \
	fi; \
	export CASEMGR_TEST_PG_URL="$$url" CASEMGR_STRESS_SECONDS='$(STRESS_SECONDS)'; \
	echo "+ CASEMGR_STRESS_SECONDS=$(STRESS_SECONDS) $(BIN)/python -m pytest -m stress tests/stress $(PYTEST_ARGS)"; \
	$(BIN)/python -m pytest -m stress tests/stress $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check, ruff format --check, mypy, bandit
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/bandit -q -c pyproject.toml -r casemgr

fmt: $(STAMP) ## Format with ruff and apply ruff's safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# SQLite always; PostgreSQL too when CASEMGR_BENCH_PG_URL names an admin connection (the
# benchmarks create and drop databases of their own). Results: var/bench/results.json.
bench: $(STAMP) ## Run the benchmarks, quick sizes (SPEC §8 figures; BENCH_ARGS='--only reads')
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

bench-full: $(STAMP) ## Run the benchmarks at the sizes SPEC §8 names (tens of minutes)
	$(BIN)/python -m benchmarks --full $(BENCH_ARGS)

lock: $(STAMP) ## Regenerate requirements.lock from pyproject.toml (LOCK_ARGS=--upgrade to bump)
	$(BIN)/pip-compile $(PIP_COMPILE_FLAGS) $(LOCK_ARGS) -o requirements.lock pyproject.toml

clean: ## Remove .venv, caches, build output and var/ (keeps keys/)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info var
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# -- web UI (issue 9) ----------------------------------------------------------------------
# Catalogues are .po files read at start-up (casemgr.web.i18n): no compile step, no .mo.
I18N_DIR := casemgr/web/translations
.PHONY: i18n
i18n: $(STAMP) ## Extract UI messages and merge them into the zh_Hans and en catalogues
	$(BIN)/pybabel extract -F babel.cfg -k N_ --no-location --sort-output --omit-header \
		-o $(I18N_DIR)/messages.pot .
	$(BIN)/pybabel update -i $(I18N_DIR)/messages.pot -d $(I18N_DIR) -D messages \
		--no-fuzzy-matching --omit-header --ignore-obsolete
	@echo "Now translate the new entries of $(I18N_DIR)/zh_Hans/LC_MESSAGES/messages.po;"
	@echo "tests/web/test_i18n.py fails while any message lacks a Chinese translation."
