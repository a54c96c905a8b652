# One command each (README): make run | make test. Everything else is a building block.
SHELL := /bin/bash
PY_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help venv up down status logs test test-scaleout soak test-unit lint run worker bench soak-mongo schemas clean promtool chromium

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the project with its dev extras

up: venv  ## start Kafka, PostgreSQL and FerretDB on 127.0.0.1 (idempotent; installs/builds on first use)
	@bash ops/kafka.sh start
	@if [ "$${FERRETDB_BACKEND:-postgresql}" = postgresql ]; then bash ops/postgres.sh start; fi
	@bash ops/ferretdb.sh start

down:  ## stop the demo workers, Kafka, FerretDB and PostgreSQL (by pid; safe to call twice)
	@bash ops/demo.sh stop
	@bash ops/ferretdb.sh stop
	@bash ops/postgres.sh stop
	@bash ops/kafka.sh stop

status:  ## show what is running
	-@bash ops/kafka.sh status
	-@bash ops/postgres.sh status
	-@bash ops/ferretdb.sh status

logs:  ## tail the service logs
	-@bash ops/kafka.sh logs 40
	-@bash ops/postgres.sh logs 40
	-@bash ops/ferretdb.sh logs 40

# The multi-worker tests run here too: the scale-out test and 3 seeded chaos iterations (CHAOS_ITERATIONS);
# `make soak` runs more of them. They joined once `make soak` passed 20/20 (docs/partitioning.md, "Soak record").
test: up promtool chromium  ## the whole suite, unit and integration (scale-out and 3 chaos iterations included), against the real services
	$(PY) -m pytest $(PYTEST_ARGS)

promtool:  ## install promtool (Debian's prometheus package) when missing; the alert-rule tests need it
	@command -v promtool >/dev/null || { echo "installing promtool (apt-get install prometheus)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

chromium:  ## install headless Chromium and its WebDriver (Debian's chromium, chromium-driver) when missing; the console's browser tests need them
	@{ command -v chromium && command -v chromedriver; } >/dev/null || { echo "installing chromium (apt-get install chromium chromium-driver)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }

test-scaleout: up  ## the multi-worker rebalance test alone (also in `make test`)
	$(PY) -m pytest -m scaleout tests/integration/test_scale_out.py $(PYTEST_ARGS)

SOAK_N ?= 20
SOAK_SEED ?=
soak: up  ## the chaos test, SOAK_N iterations (default 20); SOAK_SEED=<printed seed> SOAK_N=1 re-runs one
	CHAOS_ITERATIONS=$(SOAK_N) CHAOS_SEED=$(SOAK_SEED) $(PY) -m pytest -m chaos -s tests/integration/test_chaos.py $(PYTEST_ARGS)

test-unit: venv  ## pure tests only (no services)
	$(PY) -m pytest -m 'not integration' $(PYTEST_ARGS)

lint: venv  ## ruff + mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

run: up  ## the demo: services, workers and a small feed of real files (ops/demo.sh)
	@bash ops/demo.sh run

bench: up  ## benchmarks (not part of make test); writes bench/RESULTS.md
	$(PY) -m pip install -q -e '.[dev,bench]'
	$(PY) -m bench.run

soak-mongo: up  ## the projector under load with a 20,000-statement VEX doc and 500 advisories (SOAK_SECONDS=600 for the full 10 min)
	$(PY) -m bench.soak_mongo

schemas: venv  ## regenerate schemas/json from the models
	$(PY) -m schemas.export

clean: down  ## stop everything and delete run/ (topics, databases, logs)
	rm -rf run
