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

test: install
	$(BIN)/python -m pytest

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
