# alosmap developer commands. `make test` and `make demo` create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ALOSMAP := $(VENV)/bin/alosmap

.PHONY: install test test-all lint demo sample-data clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

## run the test suite (what CI runs)
test: $(VENV)/.installed
	$(PY) -m pytest -q

## include slow tests
test-all: $(VENV)/.installed
	$(PY) -m pytest -q -m "not gpu"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## the main job on sample_data/ (see README)
demo: $(VENV)/.installed
	bash scripts/demo.sh $(VENV)

## regenerate sample_data/ byte for byte
sample-data: $(VENV)/.installed
	$(ALOSMAP) synth sample-data sample_data --overwrite

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info demo_out
