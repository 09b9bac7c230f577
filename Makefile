# exaharness: the two commands.
#   make run    set up .venv and run the acceptance job on this machine (harness accept hardware=auto)
#   make test   set up .venv with the dev extras, Chromium and a local Slurm, run the tests
#
# Torch is installed first, on its own, so that the build that fits the machine is used:
#   here the CPU build (the default); on a CUDA cluster, for example
#   make run TORCH_SPEC='torch==2.13.0' TORCH_PIP_ARGS='--index-url <your CUDA wheel index>'

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
PYTEST_ARGS ?=
RUN_ARGS ?=

.PHONY: install run test browser lint unit integration bench-overhead slurm-up slurm-down clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(PIP) install -q $(TORCH_SPEC) $(TORCH_PIP_ARGS)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.installed
	$(PIP) install -q -e '.[dev]'
	touch $@

# Only the environment (a login node of a cluster: nothing is measured there).
install: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/harness accept hardware=auto $(RUN_ARGS)

# Debian's Chromium renders the acceptance report in a test (headless; no network needed).
browser:
	@command -v chromium >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get update -qq >/dev/null; \
		apt-get install -y -qq chromium >/dev/null; }

test: $(VENV)/.dev browser
	bash slurm/local/start.sh
	SLURM_CONF=$${HARNESS_SLURM_DIR:-/tmp/exaharness-slurm}/slurm.conf PATH=$(CURDIR)/$(BIN):$$PATH \
		$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; bash slurm/local/stop.sh; exit $$rc

unit: $(VENV)/.dev
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: $(VENV)/.dev
	bash slurm/local/start.sh
	SLURM_CONF=$${HARNESS_SLURM_DIR:-/tmp/exaharness-slurm}/slurm.conf PATH=$(CURDIR)/$(BIN):$$PATH \
		$(BIN)/pytest -m integration $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench-overhead: $(VENV)/.installed
	$(BIN)/python benchmarks/overhead.py

slurm-up:
	bash slurm/local/start.sh

slurm-down:
	bash slurm/local/stop.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
