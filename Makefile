# Two commands matter: `make demo` and `make test`. Everything sets itself up.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup llama demo test test-all bench gsm8k lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Reinstall only when the dependency list changes: a no-op setup takes well under a second.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The bench extra, with llama-cpp-python built from source for this machine. GGML_NATIVE=OFF
# builds portable AVX2 kernels and leaves out ggml's AMX matmul, which -march=native turns on
# for AMX CPUs (Sapphire Rapids) and which segfaulted there on Q8_0 / Q4_K weights
# (docs/export.md). --no-cache-dir: pip's wheel cache would reuse a build made with other flags.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAVA_BUILD=OFF
LLAMA_STAMP := $(VENV)/.installed-bench

$(LLAMA_STAMP): pyproject.toml | $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q --no-cache-dir -e '.[bench]'
	touch $(LLAMA_STAMP)

llama: setup $(LLAMA_STAMP)

demo: setup
	$(BIN)/cotune quickstart --force

test: setup
	$(BIN)/pytest -m "not slow" -q

# thorough: Hypothesis searches randomly with more examples (tests/conftest.py).
test-all: setup llama
	HYPOTHESIS_PROFILE=thorough $(BIN)/pytest -m '' -q

bench: setup llama
	$(BIN)/python -m bench.run

# GSM8K end to end on the 270M (hours on a CPU; docs/gsm8k.md): base 0-shot and 8-shot, LoRA SFT,
# GRPO, each on the full test set. Resumable: run it again to continue; STAGES=sft to pick.
STAGES ?= base_0shot,base_8shot,sft,grpo
gsm8k: setup
	$(BIN)/python -m bench.gsm8k --stages $(STAGES)

# lint-imports: the one-way import contracts in pyproject.toml ([tool.importlinter]).
lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
