# Champ Portal — the README's two commands, plus benchmarks and lint.
#   make run    set up everything and start web + worker + simulator
#   make test   install and run the whole test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
SIM_PORT ?= 8765

.PHONY: run test test-default test-scaled test-e2e e2e-deps bench lint format install clean

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
	CHAMP_PORTAL_URL=http://127.0.0.1:$(PORT) \
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

test-default: install e2e-deps
	@echo "== Test leg 1/2: embedded default (SQLite + ORM broker) =="
	env -u DATABASE_URL -u CHAMP_PORTAL_BROKER $(BIN)/python -m pytest $(PYTEST_ARGS)

test-scaled: install e2e-deps
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

# The browser suite (tests/e2e) drives Debian's chromium through Playwright
# (pip, in the test extra); Playwright's own browser download is not used.
# Installed with apt-get when missing. If that is impossible the browser tests
# are skipped, except under CI, where a missing browser fails the run.
CHAMP_E2E_CHROMIUM ?= /usr/bin/chromium
export CHAMP_E2E_CHROMIUM
E2E_APT_LOG := var/e2e/apt-get.log

e2e-deps:
	@if [ -x "$(CHAMP_E2E_CHROMIUM)" ]; then exit 0; fi; \
	mkdir -p var/e2e; \
	echo "Installing chromium for the browser tests (apt-get, log in $(E2E_APT_LOG))..."; \
	if command -v apt-get >/dev/null 2>&1 \
	   && apt-get update -qq >$(E2E_APT_LOG) 2>&1 \
	   && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >>$(E2E_APT_LOG) 2>&1 \
	   && [ -x "$(CHAMP_E2E_CHROMIUM)" ]; then \
	  echo "chromium installed: $(CHAMP_E2E_CHROMIUM)"; \
	elif [ -n "$$CI" ]; then \
	  tail -n 20 $(E2E_APT_LOG) >&2 2>/dev/null; \
	  echo "CI: $(CHAMP_E2E_CHROMIUM) is missing and apt-get could not install it; the browser tests need it." >&2; \
	  exit 1; \
	else \
	  echo "== $(CHAMP_E2E_CHROMIUM) is missing and apt-get could not install it (see $(E2E_APT_LOG)): the browser tests (tests/e2e) will be SKIPPED =="; \
	fi

# The browser suite alone (on the embedded default).
test-e2e: install e2e-deps
	env -u DATABASE_URL -u CHAMP_PORTAL_BROKER $(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

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
