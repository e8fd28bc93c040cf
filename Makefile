# Two commands, each doing its own setup on a fresh clone:
#   make run    the main job (synthetic dataset, CPU): generate data, train, evaluate
#   make test   the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test bench clean-venv

setup:
	@PYTHON=$(PYTHON) VENV=$(VENV) bash tools/setup_env.sh

run: setup
	$(PY) tools/main_job.py

test: setup
	$(PY) -m pytest -q tests

bench: setup
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
