# One entry point for setting up, testing and demonstrating the project.
# `make test` and `make demo` work on a fresh machine: they build .venv first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REQUIREMENTS := container_train/requirements.txt container_serve/requirements.txt requirements-dev.txt constraints.txt
DATA ?=
DEMO_DIR ?= build/demo

.PHONY: venv test lint demo bench clean

venv: $(VENV)/.installed

# Reinstall only when a requirements file changes.
$(VENV)/.installed: $(REQUIREMENTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint docker/*.Dockerfile
	$(BIN)/shellcheck *.sh .ci/run

test: lint
	$(BIN)/pytest

demo: venv
	$(BIN)/python scripts/demo.py --work-dir $(DEMO_DIR) $(if $(DATA),--data $(DATA))

bench: venv
	$(BIN)/python bench/train_speed.py
	$(BIN)/python bench/pipeline_speed.py
	$(BIN)/python bench/serve_speed.py

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache .mypy_cache
