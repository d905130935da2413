# IGW: `make run` starts the whole system on embedded defaults; `make test` runs the checks and tests.

VENV   ?= .venv
BIN    := $(VENV)/bin
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; \
	done)

.PHONY: install browser promtool local-extra run run-local test test-quick test-local lint typecheck unit integration bench clean

$(BIN)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "IGW needs Python 3.11 or newer (python3.11+ on PATH, or make PYTHON=/path/to/python)"; exit 1; }
	@echo "setting up $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/.installed

# the 'local' extra (igw up --local-model): pip builds llama-cpp-python from source, which
# takes minutes; its output goes to a log that is shown only if the install fails
$(BIN)/.local-installed: $(BIN)/.installed
	@echo "installing the 'local' extra (building llama-cpp-python from source takes minutes)"
	@start=$$(date +%s); \
	$(BIN)/python -m pip install -e '.[dev,local]' >$(VENV)/local-extra.log 2>&1 \
	  || { tail -n 60 $(VENV)/local-extra.log; echo "installing the 'local' extra failed (log: $(VENV)/local-extra.log)"; exit 1; }; \
	echo "the 'local' extra is installed ($$(( $$(date +%s) - start ))s)"
	@touch $@

local-extra: $(BIN)/.local-installed

# the dashboard's browser test drives Debian's chromium through chromedriver (Selenium);
# as root with apt-get they are installed here (with a font for readable screenshots),
# otherwise this says how to install them
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium and chromium-driver (the dashboard's browser test needs them)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core; \
	else \
	  echo "chromium and chromedriver are missing: the dashboard's browser test will fail."; \
	  echo "install them with: sudo apt-get install -y --no-install-recommends chromium chromium-driver"; \
	fi

# the deploy tests validate deploy/prometheus with promtool, from Debian's prometheus package
promtool:
	@if command -v promtool >/dev/null 2>&1; then \
	  :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing promtool (Debian's prometheus package; the deploy tests validate the alert rules)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends prometheus; \
	else \
	  echo "promtool is missing: the deploy tests that validate deploy/prometheus will fail."; \
	  echo "install it with: sudo apt-get install -y --no-install-recommends prometheus"; \
	fi

run: install
	$(BIN)/igw up

run-local: local-extra
	$(BIN)/igw up --local-model

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install promtool
	$(BIN)/pytest tests/unit

integration: install browser
	$(BIN)/pytest tests/integration -m "not local_model"

# everything CI runs, the real local model included (builds the 'local' extra once)
test: lint typecheck local-extra browser promtool
	$(BIN)/pytest

# the same without the local-model test, for a machine without a C++ compiler
test-quick: lint typecheck browser promtool
	$(BIN)/pytest -m "not local_model"

test-local: local-extra
	$(BIN)/pytest -m local_model

bench: install
	$(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) .igw .pytest_cache .mypy_cache .ruff_cache
