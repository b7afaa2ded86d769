# Two commands for a newcomer: `make demo` and `make test`. Both create .venv on first use and
# afterwards reinstall only when a pyproject.toml or constraints.txt changed (editable installs pick up code
# edits). The distributions declare dependency ranges; this repository's own environment gets the exact,
# tested versions: the torch build below and constraints.txt (`make constraints` rewrites it from .venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.miro-installed
PLUGIN_PROJECTS := $(sort $(wildcard plugins/*/pyproject.toml))
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(PLUGIN_PROJECTS))
PYTEST_ARGS ?=
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
CONSTRAINTS := constraints.txt
LINT_PATHS := miro_core cli plugins tests benchmarks configs scripts

.PHONY: install browser demo test lint bench clean-venv constraints wheels-test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml $(PLUGIN_PROJECTS) $(CONSTRAINTS)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[test,ui]" $(addprefix -e ,$(PLUGIN_DIRS))
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
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(PY) -m pytest -n 2 -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(PY) scripts/distributions.py check

# The wheel test alone (`make test` runs it too, as tests/test_wheels.py): build every distribution's wheel,
# install them (not editable) into a fresh venv that reuses .venv's torch & co, run miro there.
wheels-test: install
	$(PY) scripts/distributions.py wheels

# Record the exact versions of .venv (after the suite passed) for `make install` and the wheel test.
constraints: install
	$(PY) scripts/distributions.py constraints

bench: install
	$(PY) benchmarks/train_step_overhead.py

clean-venv:
	rm -rf $(VENV)
