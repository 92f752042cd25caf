# mnist99: the two commands a newcomer needs are `make run` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MNIST99_DATA ?= $(abspath ../shared/data/mnist)
export MNIST99_DATA
CONFIG ?= default

.PHONY: setup browser postgres run test test-fast test-scaling lint clean

$(BIN)/mnist99: setup.cfg pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)  # reuses what the machine has; installs the rest
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/mnist99

## The main job: prepare -> 3-model ensemble -> evaluate -> export (`make run CONFIG=quick`: the same in about 1.5 min)
run: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/mnist99 run -c $(CONFIG)

## Debian's Chromium + chromedriver for the UI browser test (no browser download); needs root or sudo
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver \
	  || echo "chromium not installed: the UI browser test will be skipped"; \
	fi

## Debian's PostgreSQL programs for the team-server tests (tests/test_scaling.py starts its own cluster;
## no service is used); needs root or sudo
postgres:
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q postgresql \
	  || echo "postgresql not installed: the team-server tests will be skipped"; \
	fi

## The default test suite, the same command CI runs (two pytest-xdist workers: most tests wait on
## subprocesses, servers or one-thread work, so two share 2 cores well)
test: setup browser
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -n 2 --maxschedchunk 1 -m "not scaling"

## The inner loop, under a minute: the tests not marked slow or integration
test-fast: setup
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -n 2 --maxschedchunk 1 -m "not slow and not integration and not scaling"

## The team-server tests (docs/SCALING.md): PostgreSQL + `mnist99 server` with workers as real processes
test-scaling: setup postgres
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -n 2 --maxschedchunk 1 -m scaling

lint: setup
	$(BIN)/python -m ruff check mnist99 tests pipelines benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
