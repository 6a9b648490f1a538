# Two commands matter: `make demo` and `make test`. Everything sets itself up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall only when the dependency list changes: a no-op setup takes well under a second.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/cotune quickstart --force

test: setup
	$(BIN)/pytest -m "not slow" -q

test-all: setup
	$(BIN)/pytest -m '' -q

bench: setup
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench.run

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
