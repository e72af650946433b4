# curvlens developer entry points.  `make test` works on a fresh machine:
# it creates .venv, installs the CPU build of torch only when the venv has none,
# installs curvlens (editable) with its test extras, and runs the suite.
PY      ?= python3
VENV    ?= .venv
TORCH   ?= torch==2.13.0
BIN     := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: test lint demo venv bench-deps bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

venv: $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	@$(BIN)/python -m pip install -q -e ".[test]"

test: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# pyflakes-level checks (unused or undefined names, syntax); configured in pyproject.toml
lint: venv
	$(BIN)/ruff check curvlens cli tests benchmarks examples

demo: venv
	$(BIN)/curvlens analyze --demo

# Peer libraries for benchmarks/, installed without dependencies so that torch is never replaced.
bench-deps: venv
	$(BIN)/python -m pip install -q --no-deps pyhessian curvlinops-for-pytorch hessian-eigenthings \
	    backpack-for-pytorch einops unfoldNd einconv linear_operator opt-einsum tqdm

bench: bench-deps
	$(BIN)/python benchmarks/hvp_cost.py
	$(BIN)/python benchmarks/spectral.py
	$(BIN)/python benchmarks/analyze_cost.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
