# The two commands: `make serve` starts the gateway with embedded defaults; `make test` runs every test.
# Each creates the virtual environment and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: serve test bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# One install step: llama-cpp-python compiles llama.cpp here (about 7 min on 2 cores, measured).
	# GGML_NATIVE=OFF builds it for any x86-64 with AVX2 instead of -march=native: the native
	# build crashed (general protection fault in libggml-cpu) on the first generation on an
	# AVX-512 EPYC. --no-cache-dir so that a wheel pip cached from an earlier native build,
	# possibly made on another CPU, is never reused.
	CMAKE_ARGS="-DGGML_NATIVE=OFF $(CMAKE_ARGS)" $(VENV)/bin/pip install --no-cache-dir --progress-bar on -e '.[dev]'
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
