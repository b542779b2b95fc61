"""`import admn_core` caps OpenMP's spin before torch loads (admn_core/__init__), and the CPU fast path splits its
front over several threads only where that cap took effect."""

import os
import subprocess
import sys

import pytest
import torch

import admn_core
from admn_core.bench import random_bundle
from admn_core.fastpath import FastPath

from model_fixtures import micro_config


def _fresh_python(code: str, **env) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"} | env
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                          check=True).stdout.strip()


REPORT = "import os, admn_core; print(os.environ.get('GOMP_SPINCOUNT'), admn_core.OPENMP_SPIN_CAPPED)"


def test_admn_core_sets_the_spin_cap_before_torch_and_keeps_a_users_value():
    assert _fresh_python(REPORT) == f"{admn_core.SPIN_COUNT} True"
    assert _fresh_python(REPORT, GOMP_SPINCOUNT="123") == "123 True"
    # torch (and libgomp) loaded first: the variable is still set for child processes, but this process is uncapped.
    assert _fresh_python("import torch; " + REPORT) == f"{admn_core.SPIN_COUNT} False"


def test_front_threads_default_follows_the_cap_and_the_environment(monkeypatch):
    model = random_bundle(micro_config(), (6,), seed=3).model.eval()
    monkeypatch.delenv("ADMN_FASTPATH_FRONT_THREADS", raising=False)
    monkeypatch.setattr(admn_core, "OPENMP_SPIN_CAPPED", True)
    assert FastPath(model, onnx="off", tune=False).front_threads == torch.get_num_threads()
    monkeypatch.setattr(admn_core, "OPENMP_SPIN_CAPPED", False)
    assert FastPath(model, onnx="off", tune=False).front_threads == 1
    monkeypatch.setenv("ADMN_FASTPATH_FRONT_THREADS", "3")
    assert FastPath(model, onnx="off", tune=False).front_threads == 3
    assert FastPath(model, onnx="off", tune=False, front_threads=2).front_threads == 2


def test_front_threads_environment_zero_means_unset_and_bad_values_are_refused(monkeypatch):
    model = random_bundle(micro_config(), (6,), seed=3).model.eval()
    monkeypatch.setattr(admn_core, "OPENMP_SPIN_CAPPED", False)
    monkeypatch.setenv("ADMN_FASTPATH_FRONT_THREADS", "0")
    assert FastPath(model, onnx="off", tune=False).front_threads == 1
    monkeypatch.setenv("ADMN_FASTPATH_FRONT_THREADS", "-1")
    with pytest.raises(ValueError, match="front_threads must be at least 1"):
        FastPath(model, onnx="off", tune=False)
    monkeypatch.setenv("ADMN_FASTPATH_FRONT_THREADS", "two")
    with pytest.raises(ValueError, match="ADMN_FASTPATH_FRONT_THREADS must be an integer, got 'two'"):
        FastPath(model, onnx="off", tune=False)
