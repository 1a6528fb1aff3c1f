# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q -c constraints.txt

.PHONY: demo test test-export test-heavy lint install install-dev explorer-test-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(PIP) -e .

install-dev: $(BIN)/python
	$(PIP) -e ".[dev,deploy]"

demo: install
	$(BIN)/cnnlab demo

lint: install-dev
	$(BIN)/ruff check .

# The explorer's browser tests: Playwright from PyPI (the explorer-test extra) and Debian's
# chromium (apt-get, when root and missing). If either cannot be installed, those tests skip
# and say why; nothing else depends on them.
explorer-test-deps: install-dev
	@$(BIN)/python -c "import playwright" 2>/dev/null || $(PIP) -e ".[explorer-test]" || \
	  echo "make: Playwright not installed; the browser tests will be skipped"
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
	  echo "make: chromium not installed; the browser tests will be skipped"

# One pytest worker per core (pytest-xdist), each on one torch thread (tests/conftest.py):
# twice as fast on two cores as one process whose two threads share them.
test: lint explorer-test-deps
	$(BIN)/python -m pytest -q -n auto -m "not export_registry"

# Every registered model exported to ONNX and checked by ONNX Runtime: too long for `make test`.
test-export: install-dev
	$(BIN)/python -m pytest -q -m export_registry

# The real-valued tests of the models over 400M parameters (tests/zoo_helpers.HEAVY_PARAMS),
# which `make test` checks on meta tensors only. regnet_y_128gf's ONNX export needs more than
# 8 GB of memory and is left out (docs/deploy.md).
HEAVY = vit_h_14 or regnet_y_128gf
test-heavy: install-dev
	CNNLAB_HEAVY=1 $(BIN)/python -m pytest -q -m "not export_registry" -k "$(HEAVY)"
	CNNLAB_HEAVY=1 $(BIN)/python -m pytest -q -m export_registry -k vit_h_14
