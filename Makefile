# IGW: `make run` starts the whole system on embedded defaults; `make test` runs the checks and tests.

VENV   ?= .venv
BIN    := $(VENV)/bin
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; \
	done)

.PHONY: install run test lint typecheck unit integration bench clean

$(BIN)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "IGW needs Python 3.11 or newer (python3.11+ on PATH, or make PYTHON=/path/to/python)"; exit 1; }
	@echo "setting up $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/igw up

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit

integration: install
	$(BIN)/pytest tests/integration

test: lint typecheck
	$(BIN)/pytest

bench: install
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) .igw .pytest_cache .mypy_cache .ruff_cache
