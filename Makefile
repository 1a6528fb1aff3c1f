# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q -c constraints.txt

.PHONY: demo test test-export lint install install-dev

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

test: lint
	$(BIN)/python -m pytest -q -m "not export_registry"

# Every registered model exported to ONNX and checked by ONNX Runtime: too long for `make test`.
test-export: install-dev
	$(BIN)/python -m pytest -q -m export_registry
