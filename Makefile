# One entry point for setting up, testing and demonstrating the project.
# `make test` and `make demo` work on a fresh machine: they build .venv first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REQUIREMENTS := container_train/requirements.txt container_serve/requirements.txt container_serve/requirements-cpu.txt requirements-dev.txt requirements-launch-sdk2.txt constraints.txt
# This project's packages: the shared model artifact, the two containers, the launch tools.
PACKAGES := artifact container_train container_serve .
PIP := $(BIN)/pip --quiet --disable-pip-version-check
DATA ?=
DEMO_DIR ?= build/demo
# The launch tools on SageMaker Python SDK 3.x (the project's .venv has 2.x): their own
# environment, without torch, and the tests that run in it (the launch flow, both notebooks).
VENV_SDK3 := .venv-sdk3
BIN_SDK3 := $(VENV_SDK3)/bin
REQUIREMENTS_SDK3 := requirements-sdk3.txt requirements-launch-sdk3.txt constraints-sdk3.txt
SDK3_TESTS := tests/cloud/test_cloud_sagemaker.py tests/cloud/test_cloud_hosting.py \
	tests/cloud/test_cloud_cli.py tests/cloud/test_notebooks.py

.PHONY: venv venv-sdk3 test test-images lint demo bench clean

venv: $(VENV)/.installed $(VENV)/.serving-frontend

venv-sdk3: $(VENV_SDK3)/.installed

# Reinstall only when a requirements file or a package definition changes. The pinned
# files first, then this project's packages (editable) without resolving anything more.
$(VENV)/.installed: $(REQUIREMENTS) $(addsuffix /pyproject.toml,$(PACKAGES))
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -r requirements-dev.txt -c constraints.txt
	$(PIP) install --no-deps --no-build-isolation $(addprefix --editable ,$(PACKAGES))
	$(PIP) check
	touch $@

# The project's packages without their dependencies: the launch tools import only their
# light modules (hyperparameter rules, metric names, content types), never torch.
$(VENV_SDK3)/.installed: $(REQUIREMENTS_SDK3) $(addsuffix /pyproject.toml,$(PACKAGES))
	test -x $(BIN_SDK3)/python || $(PYTHON) -m venv $(VENV_SDK3)
	$(BIN_SDK3)/pip --quiet --disable-pip-version-check install \
		-r requirements-sdk3.txt -c constraints-sdk3.txt
	$(BIN_SDK3)/pip --quiet --disable-pip-version-check install --no-deps \
		--no-build-isolation $(addprefix --editable ,$(PACKAGES))
	touch $@

# serve's JVM frontend extension (needs a JDK's javac) and its class-data archive.
# multi-model-server runs on that JDK's JRE; Debian's JDK is installed when javac is missing.
$(VENV)/.serving-frontend: $(VENV)/.installed $(shell find container_serve/serving/java -name '*.java')
	command -v javac >/dev/null || scripts/install-jdk.sh
	$(BIN)/python -m serving.frontend_build build
	touch $@

# hadolint and shellcheck run as tests (tests/unit/test_docker_files.py), on every file.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Everything on SDK 2.x, then the launch tests again on SDK 3.x (without tests/conftest.py,
# whose fixtures train models with torch); tests/cloud/test_sdk_generations.py compares
# what the two generations send.
test: lint $(VENV_SDK3)/.installed
	$(BIN)/pytest
	$(BIN_SDK3)/pytest --confcutdir=tests/cloud -p support.aws_fixtures $(SDK3_TESTS)

# Both images built from docker/ on a private Docker engine, and the container tests run
# against them (Debian 12, as root, about 30 GB of free disk): see docs/development.md.
test-images: venv
	docker/test-images.sh $(BIN)/pytest -m images --durations=10

demo: venv
	$(BIN)/python -m launch.demo --work-dir $(DEMO_DIR) $(if $(DATA),--data $(DATA))

bench: venv
	$(BIN)/python bench/train_speed.py
	$(BIN)/python bench/pipeline_speed.py
	$(BIN)/python bench/serve_speed.py

clean:
	rm -rf $(VENV) $(VENV_SDK3) build .pytest_cache .ruff_cache .mypy_cache
