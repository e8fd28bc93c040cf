# Two commands, each doing its own setup on a fresh clone:
#   make run    the main job (synthetic dataset, CPU): generate data, train, evaluate
#   make test   the test suite
# and for the supported range of numpy/OpenCV (setup.py's lower bounds up to the newest releases):
#   make test-pins      the suite in two more venvs: the oldest checked set (numpy 1.26.4,
#                       opencv-contrib-python-headless 4.11.0.86) and the newest releases
#   make test-old-pins  the oldest checked set on all but the training tests
PYTHON ?= python3
VENV ?= .venv
# current: the newest numpy/OpenCV that setup.py admits; old: the oldest checked set.
PINS ?= current
PY := $(VENV)/bin/python

.PHONY: setup run test test-pins test-old-pins bench clean-venv

setup:
	@PYTHON=$(PYTHON) VENV=$(VENV) PINS=$(PINS) bash tools/setup_env.sh

run: setup
	$(PY) tools/main_job.py

test: setup
	$(PY) -m pytest -q tests

# About 2 x (2 min setup + 6 min tests) on 2 cores, and 2 x 6 GB of venvs (torch's CUDA build).
test-pins:
	$(MAKE) test VENV=.venv-pins-old PINS=old
	$(MAKE) test VENV=.venv-pins-current PINS=current

# The oldest checked numpy/OpenCV on the tests that use them, i.e. all but the model-training
# runs (about 6 minutes with its setup); `make test` has the newest releases.
PINS_SKIP := test_modeling.py test_model_cooperation.py test_train_net.py test_engine_inference.py
test-old-pins:
	$(MAKE) setup VENV=.venv-pins-old PINS=old
	.venv-pins-old/bin/python -m pytest -q tests $(addprefix --ignore=tests/,$(PINS_SKIP))

bench: setup
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
