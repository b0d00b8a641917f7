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
	# Byte-code first: the tests start the gateway and the CLI a few hundred times, and where
	# PYTHONDONTWRITEBYTECODE is set (as on these VMs) each start compiled every module again.
	$(VENV)/bin/python -m compileall -q -j 0 switchyard tests
	# Two processes, each module on one of them (its servers started once) and every test of the
	# real model on the same one (tests/conftest.py says why); then, alone, the few tests that
	# restart PostgreSQL or count Redis's calls. Both passes always run; pytest's exit status 5
	# means "no test selected" (PYTEST_ARGS chose none of that pass).
	$(VENV)/bin/python -m pytest -n 2 --dist loadgroup -m 'not alone' $(PYTEST_ARGS); a=$$?; \
	$(VENV)/bin/python -m pytest -m alone $(PYTEST_ARGS); b=$$?; \
	[ $$a -eq 0 -o $$a -eq 5 ] && [ $$b -eq 0 -o $$b -eq 5 ]

bench: $(STAMP)
	$(VENV)/bin/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache
