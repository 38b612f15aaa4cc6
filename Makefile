# alosmap developer commands. `make test` and `make demo` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ALOSMAP := $(VENV)/bin/alosmap

.PHONY: install test test-fast test-all test-gpu lint docs demo bench bench-quick sample-data clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

## run every test but the GPU ones, slow ones included (what CI runs)
test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not gpu"

## the quick loop: neither the slow end-to-end runs nor the GPU tests
test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow and not gpu"

## the same as `make test`
test-all: test

## the GPU tests (each skips, saying why, without a CUDA GPU or TensorRT)
test-gpu: $(VENV)/.installed
	$(PY) -m pytest -q -m gpu

## ruff, the import contracts of pyproject.toml, mypy on alosmap/, function lengths
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	bash scripts/lint_imports.sh $(VENV)
	$(VENV)/bin/mypy
	$(PY) scripts/check_function_length.py

## the documentation site into site/ (mkdocs.yml; warnings are errors)
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

## the speed guard: model-only, end-to-end and ceiling tiles/s per backend and precision,
## ratios within one run, into bench.json; fails on a gross regression (docs/benchmarks.md)
bench: $(VENV)/.installed
	$(PY) scripts/bench_guard.py --out bench.json

## its short version (what CI runs)
bench-quick: $(VENV)/.installed
	$(PY) scripts/bench_guard.py --quick --out bench-quick.json

## the main job on sample_data/ (see README)
demo: $(VENV)/.installed
	bash scripts/demo.sh $(VENV)

## regenerate sample_data/ (byte for byte on the machine that made it; within 1 DN elsewhere)
sample-data: $(VENV)/.installed
	$(ALOSMAP) synth sample-data sample_data --overwrite

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build *.egg-info demo_out site
