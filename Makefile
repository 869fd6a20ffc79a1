# Developer entry points. `make serve` and `make test` each set up what they need first.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet
CONSTRAINTS := constraints.txt
# The snapshot the bundled model is trained on (not part of the repository).
DATA ?= ../shared/data/mp_magnetic_ordering.csv
# Version of the bundled model: bump it with every retrained model that is committed.
MODEL_VERSION ?= 1.4.0
# The reported Curie and Néel temperatures the experiment head is trained on (not part of the
# repository either), and the version of the bundled experiment head.
EXPERIMENT_DATA ?= ../shared/data/experimental_magnetic.csv
EXPERIMENT_VERSION ?= 1.3.0
# Version of the bundled density estimator (trained on $(DATA), for formulas sent without one).
DENSITY_VERSION ?= 1.0.1

.DEFAULT_GOAL := help

.PHONY: help serve test lint typecheck unit bench bench-quick bench-cli load-test docker-check model experiment-model density-model lock clean

## help: list these targets (what `make` alone does)
help:
	@sed -n 's/^## \([a-z-]*\): \(.*\)/\1\t\2/p' $(MAKEFILE_LIST) | awk -F '\t' '{ printf "  make %-18s %s\n", $$1, $$2 }'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.installed-serve: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) install -c $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-train: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) install -c $(CONSTRAINTS) -e '.[train,fetch]'
	touch $@ $(VENV)/.installed-serve

$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) install -c $(CONSTRAINTS) -e '.[dev]'
	touch $@ $(VENV)/.installed-serve $(VENV)/.installed-train

# The image's own flags (see Dockerfile): magorder's HTTP protocol (deadlines for headers and
# bodies, a header size cap, connection and request limits: app/server/http_protocol.py),
# SIGTERM waits at most 20 s for requests in flight, idle keep-alive connections close after 5 s.
UVICORN_FLAGS ?= --http app.server.http_protocol:GuardedHttpToolsProtocol --timeout-graceful-shutdown 20 --timeout-keep-alive 5

## serve: set up and run the service on the committed model (http://$(HOST):$(PORT))
serve: $(VENV)/.installed-serve
	$(BIN)/uvicorn app.main:app --host $(HOST) --port $(PORT) $(UVICORN_FLAGS)

## test: set up, then lint, type-check and run the test suite
test: lint typecheck unit

## lint: ruff (check and format), hadolint and shellcheck
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile
	$(BIN)/shellcheck .ci/run scripts/*.sh

## typecheck: mypy --strict
typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

## unit: the pytest suite alone
unit: $(VENV)/.installed-dev
	$(BIN)/pytest

## bench: speed benchmarks (latency vs the stack's floor, batch, featurizer, model, cold start, structures); needs wrk
bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench.speed
	$(BIN)/python -m bench.structures

## bench-quick: a short run of the benchmarks, to check that they work (CI runs it)
bench-quick: $(VENV)/.installed-dev
	$(BIN)/python -m bench.speed --quick
	$(BIN)/python -m bench.cli_speed --quick
	$(BIN)/python -m bench.structures --quick

## bench-cli: `magorder predict` on 10,000 to 200,000 distinct formulas, in-process and via a server
bench-cli: $(VENV)/.installed-dev
	$(BIN)/python -m bench.cli_speed

## load-test: bounded loopback load test of a real uvicorn; prints a Markdown report
load-test: $(VENV)/.installed-dev
	$(BIN)/python -m bench.load_test

## docker-check: build the image without Docker Hub and check it, alone and via docker-compose (root, apt)
docker-check:
	bash scripts/docker-check.sh

## model: train and score every model on $(DATA), write the model card, export the bundled model
model: $(VENV)/.installed-train
	$(BIN)/python -m model_training evaluate --data $(DATA) --model-dir artifacts/model \
		--version $(MODEL_VERSION)

## experiment-model: train and score the experiment head on $(EXPERIMENT_DATA), write its card, export it into artifacts/model/experiment
experiment-model: $(VENV)/.installed-train
	$(BIN)/python -m model_training experiment --data $(EXPERIMENT_DATA) --mp-data $(DATA) \
		--model-dir artifacts/model --run-dir runs/experiment --version $(EXPERIMENT_VERSION)

## density-model: train and score the density estimator on $(DATA), write its card, export it into artifacts/model/density
density-model: $(VENV)/.installed-train
	$(BIN)/python -m model_training density --data $(DATA) --model-dir artifacts/model \
		--run-dir runs/density --version $(DENSITY_VERSION)

## lock: re-resolve the newest allowed versions and record them in constraints.txt
lock:
	rm -rf $(VENV)-lock
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install --quiet --upgrade pip
	$(VENV)-lock/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# Versions CI and the Docker image install; regenerate with 'make lock'."; \
	  $(VENV)-lock/bin/python -m pip freeze --exclude-editable; } > $(CONSTRAINTS)
	rm -rf $(VENV)-lock

## clean: remove the virtual environment and the tools' caches
clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
