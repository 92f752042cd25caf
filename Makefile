# mnist99: the two commands a newcomer needs are `make run` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MNIST99_DATA ?= $(abspath ../shared/data/mnist)
export MNIST99_DATA
CONFIG ?= configs/default.yaml

.PHONY: setup run test test-all lint bench clean

$(BIN)/mnist99: setup.cfg pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)  # reuses what the machine has; installs the rest
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/mnist99

## The main job: prepare -> 3-model ensemble -> evaluate -> export (falls back to train until `run` exists)
run: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/mnist99 run -c $(CONFIG)

## The default test suite (~5 min on 2 cores), the same command CI runs
test: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check mnist99 tests pipelines benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
