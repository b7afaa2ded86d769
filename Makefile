# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use and
# afterwards reinstall only when a pyproject.toml changed (editable installs pick up code edits).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.miro-installed
PLUGIN_PROJECTS := $(sort $(wildcard plugins/*/pyproject.toml))
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(PLUGIN_PROJECTS))
PYTEST_ARGS ?=

.PHONY: install demo test lint bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml $(PLUGIN_PROJECTS)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[test]" $(addprefix -e ,$(PLUGIN_DIRS))
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/miro demo --out runs/demo

test: install
	$(VENV)/bin/ruff check miro_core cli plugins tests benchmarks
	$(PY) -m pytest -n 2 -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check miro_core cli plugins tests benchmarks

bench: install
	$(PY) benchmarks/train_step_overhead.py

clean-venv:
	rm -rf $(VENV)
