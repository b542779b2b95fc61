# The README's two commands: `make run` (the main job) and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
REQUIREMENTS := requirements/constraints.txt requirements/runtime.txt requirements/ros-pip.txt requirements/dev.txt
# DDS isolation for tests: loopback discovery only (Kilted ignores ROS_LOCALHOST_ONLY), a private ROS_HOME.
TEST_ENV := ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_HOME=$(CURDIR)/.test-ros-home PYTHONDONTWRITEBYTECODE=1
# Upstream launch, launch_ros, ros2cli and message_filters as wheels (not on PyPI): where present, tests run a real
# `ros2 launch` and compare the builtin synchronizer with message_filters; without them those tests skip.
ROS_TOOLS := ../shared/ros-tools
# Training-dynamics tests under other CPU kernels than this machine's best (numerics differ between CPUs).
KERNEL_TESTS := test/test_train_controllers.py test/test_train_stage1.py test/test_mae.py test/test_eval_baselines.py \
	test/test_properties.py

.PHONY: run test test-slow test-kernels lint bench clean venv
venv: $(STAMP)

$(STAMP): $(REQUIREMENTS) setup.py $(wildcard launch/* config/* models/*)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt \
		-r requirements/runtime.txt -r requirements/ros-pip.txt -r requirements/dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m admn_ros.tools.ament_register --prefix $(VENV)
	@if [ -x $(ROS_TOOLS)/install.sh ]; then $(ROS_TOOLS)/install.sh $(VENV); \
	else echo "note: $(ROS_TOOLS) not found: tests needing ros2cli, launch or message_filters will skip"; fi
	@touch $(STAMP)

# The main job: the shipped reference model (no training), a corrupted trajectory bag, Naive Allocation evaluated
# offline at the thermal budgets, admn_node + thermal_monitor on the bag's /clock, the bag replayed live with ADMN's
# and Naive's error side by side; summary, CSVs and PNG under artifacts/demo/.
# Extra options: make run DEMO_ARGS="--bundle my.safetensors" (or --retrain, --random-bundle, --duration 30)
run: $(STAMP)
	ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST PYTHONDONTWRITEBYTECODE=1 $(PY) -m admn_ros.tools.demo $(DEMO_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	@mkdir -p .test-ros-home
	$(TEST_ENV) $(PY) -m pytest -m "not slow" -q

test-kernels: $(STAMP)
	@mkdir -p .test-ros-home
	for capability in default avx2; do \
		ATEN_CPU_CAPABILITY=$$capability $(TEST_ENV) $(PY) -m pytest -m "not slow" -q $(KERNEL_TESTS) || exit 1; done

test-slow: $(STAMP)
	@mkdir -p .test-ros-home
	$(TEST_ENV) $(PY) -m pytest -m slow -q

# Per-budget FLOPs, batch-1 latency (eager and fast path), grouped batching of 16 samples vs a per-sample loop,
# memory for the tiny and paper presets on CPU, then admn_node's overhead (figures, not a pass/fail test).
# On a GPU: scripts/gpu_bench.sh (paper preset, eager fp32 vs fast path bf16).
bench: $(STAMP)
	$(PY) -m admn_core.cli bench --presets tiny paper --fast --batch 16 --json bench-results.json
	$(VENV)/bin/admn_node_benchmark --preset tiny --budget 12 --repeats 40

clean:
	rm -rf $(VENV) .test-ros-home .pytest_cache .ruff_cache build *.egg-info
