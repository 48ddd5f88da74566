# `make serve` and `make test` each set up everything they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= ../shared/data
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=

BIN := $(VENV)/bin
SERVE_STAMP := $(VENV)/.serve-installed
DEV_STAMP := $(VENV)/.dev-installed

.PHONY: serve test models lint clean help

help:
	@echo "make serve   set up and serve the models in models/ on \$$HOST:\$$PORT (default $(HOST):$(PORT))"
	@echo "make test    set up (with the training extras) and run the test suite"
	@echo "make models  retrain and export the bundled default models into models/ (data: \$$DATA_DIR, default $(DATA_DIR))"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The serving install has no torch in it.
$(SERVE_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[cpu]'
	touch $@

# torch is pinned and installed first: a bare `torch` requirement would pull a multi-GB CUDA build.
$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e '.[cpu,train,test]'
	touch $@ $(SERVE_STAMP)

serve: $(SERVE_STAMP)
	SERVE_HOST=$(HOST) SERVE_PORT=$(PORT) $(BIN)/python -m app

# System tools of the deployment checks (promtool, docker-compose, podman): installed with apt when root.
# The tests of the shared server then run again against 2 worker processes, and against 2 workers feeding one
# inference process (SERVE_SHARED_INFERENCE): about 20 s each.
test: $(DEV_STAMP)
	scripts/install-check-tools.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	MODELSERVER_TEST_WORKERS=2 $(BIN)/python -m pytest $(PYTEST_ARGS) tests/serving -m shared_server
	MODELSERVER_TEST_WORKERS=2 MODELSERVER_TEST_SHARED_INFERENCE=true \
		$(BIN)/python -m pytest $(PYTEST_ARGS) tests/serving -m shared_server

models: $(DEV_STAMP)
	$(BIN)/python -m training default-models --models-dir models --data-dir $(DATA_DIR)

clean:
	rm -rf $(VENV) .pytest_cache runs
