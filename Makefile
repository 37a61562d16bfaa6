# Warden: `make run` starts everything, `make test` tests everything. `make help` lists targets.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3
T ?= tests

.PHONY: help install run test lint fmt migrate bench chaos compose-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its dev tools

run: $(STAMP) ## start the dev stack (embedded PostgreSQL/Redis unless DATABASE_URL/REDIS_URL are set)
	$(BIN)/warden dev

test: $(STAMP) ## run the test suite (T=path to run a subset)
	$(BIN)/python -m pytest $(T)

lint: $(STAMP) ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/mypy guard compiler shared

fmt: $(STAMP) ## format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: $(STAMP) ## apply database migrations (DATABASE_URL, else the running make run's database)
	@$(BIN)/warden migrate

bench: $(STAMP) ## run the benchmarks (prints JSON, writes bench/results/latest.json)
	$(BIN)/warden bench

chaos: $(STAMP) ## break a real stack at scale (kills, Redis restarts, ...); prints the table, writes bench/results/chaos.json
	$(BIN)/python -m bench.chaos

clean: ## remove .venv and .warden (all local data)
	rm -rf $(VENV) .warden
