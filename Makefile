# Champ Portal — the README's two commands, plus benchmarks and lint.
#   make run    set up everything and start web + worker + simulator
#   make test   install and run the whole test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
SIM_PORT ?= 8765

.PHONY: run test test-default test-scaled bench lint format install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	@mkdir -p var
	CHAMP_PORTAL_DEBUG=1 $(BIN)/python manage.py migrate --noinput
	CHAMP_PORTAL_DEBUG=1 CHAMP_API_BASE=http://127.0.0.1:$(SIM_PORT) $(BIN)/python manage.py seed_demo
	@echo
	@echo "  Champ Portal:  http://127.0.0.1:$(PORT)/"
	@echo "  Log in as:     demo / $$(cat var/demo_password)   (viewer / same password: a viewer)"
	@echo "  Simulator:     http://127.0.0.1:$(SIM_PORT)/   (Ctrl-C stops everything)"
	@echo
	CHAMP_PORTAL_DEBUG=1 CHAMP_PORTAL_PORT=$(PORT) CHAMP_SIM_PORT=$(SIM_PORT) \
	CHAMP_API_BASE=http://127.0.0.1:$(SIM_PORT) \
	CHAMP_SIM_WEBHOOK_URL=http://127.0.0.1:$(PORT)/hooks/champ/demo/ \
	$(BIN)/honcho start

# The suite runs twice: on the embedded default (SQLite + ORM broker), then on
# PostgreSQL + Redis when they answer. Under CI (CI=true) the second leg is
# required: missing services fail the run instead of skipping it.
SCALED_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/champ_portal
SCALED_BROKER_URL ?= redis://127.0.0.1:6379/15

test: install
	$(MAKE) --no-print-directory test-default
	$(MAKE) --no-print-directory test-scaled

test-default: install
	@echo "== Test leg 1/2: embedded default (SQLite + ORM broker) =="
	env -u DATABASE_URL -u CHAMP_PORTAL_BROKER $(BIN)/python -m pytest $(PYTEST_ARGS)

test-scaled: install
	@if SCALED_DATABASE_URL=$(SCALED_DATABASE_URL) SCALED_BROKER_URL=$(SCALED_BROKER_URL) \
	    $(BIN)/python scripts/scaled_services.py; then \
	  echo "== Test leg 2/2: PostgreSQL + Redis broker =="; \
	  DATABASE_URL=$(SCALED_DATABASE_URL) CHAMP_PORTAL_BROKER=$(SCALED_BROKER_URL) \
	  CHAMP_PORTAL_CLUSTER_NAME=champ_portal_test_$$$$ $(BIN)/python -m pytest $(PYTEST_ARGS); \
	elif [ -n "$$CI" ]; then \
	  echo "CI: PostgreSQL and Redis are required for the scaled test leg." >&2; exit 1; \
	else \
	  echo "== Test leg 2/2 SKIPPED: PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) is not running =="; \
	fi

bench: install
	$(BIN)/python -m tests.bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var/staticfiles
