# The two commands of the quickstart are `make demo` and `make test`; each creates .venv,
# installs driftline, starts the local Kafka broker and Redis server, and runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install services down status lint typecheck unit test fuzz demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

services: install
	$(BIN)/driftline services up

down: install
	$(BIN)/driftline services down

status: install
	$(BIN)/driftline services status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -m "unit"

test: lint typecheck services
	$(BIN)/pytest

# A longer round of the fuzz harness that make test runs: more hostile messages on a new seed
# (the run prints the seed that reproduces it).
fuzz: services
	DRIFTLINE_FUZZ_EXAMPLES=$${DRIFTLINE_FUZZ_EXAMPLES:-600} DRIFTLINE_FUZZ_SEED=$${DRIFTLINE_FUZZ_SEED:-$$(date +%s)} \
	  $(BIN)/pytest -s tests/integration/test_fuzz.py

demo: services
	$(BIN)/driftline demo

# bench/monitor.py has no --quick: these sizes take a few minutes on 2 cores (its default is
# 1,000,000 events, ~5 minutes more).
BENCH_MONITOR_QUICK ?= --events 200000 --throughput-events 100000 --per-event 5000 --link-events 1000

bench: services
	$(BIN)/python bench/inference.py --quick
	$(BIN)/python bench/monitor.py $(BENCH_MONITOR_QUICK)
	$(BIN)/python bench/detection.py --quick
	$(BIN)/python bench/performance.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis out
