# The README's two commands: `make run` (the main job) and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
REQUIREMENTS := requirements/constraints.txt requirements/runtime.txt requirements/ros-pip.txt requirements/dev.txt
# DDS isolation for tests: loopback discovery only (Kilted ignores ROS_LOCALHOST_ONLY), a private ROS_HOME.
TEST_ENV := ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_HOME=$(CURDIR)/.test-ros-home PYTHONDONTWRITEBYTECODE=1

.PHONY: run test test-slow lint bench clean venv
venv: $(STAMP)

$(STAMP): $(REQUIREMENTS) setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt \
		-r requirements/runtime.txt -r requirements/ros-pip.txt -r requirements/dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# The main job (until the end-to-end demo lands): the tiny model's per-budget FLOPs and a real latency run.
run: $(STAMP)
	$(PY) -m admn_core.cli flops --preset tiny
	$(PY) -m admn_core.cli bench --presets tiny --repeats 20

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	@mkdir -p .test-ros-home
	$(TEST_ENV) $(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP)
	@mkdir -p .test-ros-home
	$(TEST_ENV) $(PY) -m pytest -m slow -q

# Per-budget FLOPs and batch-1 latency for the tiny and paper presets on CPU (figures, not a pass/fail test).
bench: $(STAMP)
	$(PY) -m admn_core.cli bench --presets tiny paper --json bench-results.json

clean:
	rm -rf $(VENV) .test-ros-home .pytest_cache .ruff_cache build *.egg-info
