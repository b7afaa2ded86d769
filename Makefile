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

.PHONY: install browser demo test lint bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml $(PLUGIN_PROJECTS)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[test,ui]" $(addprefix -e ,$(PLUGIN_DIRS))
	touch $(STAMP)

install: $(STAMP)

# The web UI's browser test drives Debian's chromium (never a downloaded browser). Install it when it is
# missing and we are root with apt-get; otherwise go on, and the test skips saying why.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; the browser test will be skipped"; \
	  else \
	    echo "note: no /usr/bin/chromium, and no root apt-get to install it; the browser test will be skipped"; \
	  fi; \
	fi

demo: install
	$(VENV)/bin/miro demo --out runs/demo

test: install browser
	$(VENV)/bin/ruff check miro_core cli plugins tests benchmarks
	$(PY) -m pytest -n 2 -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check miro_core cli plugins tests benchmarks

bench: install
	$(PY) benchmarks/train_step_overhead.py

clean-venv:
	rm -rf $(VENV)
