# The two commands: `make serve` starts the gateway with embedded defaults; `make test` runs every test.
# Each creates the virtual environment and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: serve test bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# One install step: llama-cpp-python compiles llama.cpp here (~4 min on 2 cores; pip caches the wheel).
	$(VENV)/bin/pip install --progress-bar on -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/switchyard serve

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache
