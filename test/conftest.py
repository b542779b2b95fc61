"""Test-wide settings.

The CPU fast path's stages run in PyTorch here (ADMN_FASTPATH_ONNX=0, the default of `FastPathOptions.onnx`, also
inherited by the nodes the tests start, which are configured only through the environment): exporting the ONNX
Runtime stages would add seconds to every node's start on a busy machine. test/test_onnx_cpu.py runs the ONNX stages
through `FastPathOptions(onnx=True)`. OpenMP's spin is capped before torch loads, as `admn bench` does
(admn_core.openmp_spin): idle OpenMP workers do not spin on the shared cores.
Every process gets the shipped Fast DDS profile, as launch and bring-up do: Fast DDS reads it once per process, when
its first participant starts, so a test that set it later (admn_ros.tools.soak's in-process driver) would keep the
default transports once an earlier test had started rclpy — and its best-effort camera frames, above the default 512 KB
shared-memory segment's reach, would be lost (the short soak would synchronize no set after test_admn_node.py).
"""

import os
from pathlib import Path

import pytest

from admn_core import openmp_spin  # torch-free: it must not load libgomp before the variable is set

os.environ.setdefault("ADMN_FASTPATH_ONNX", "0")
os.environ.setdefault(openmp_spin.VARIABLE, openmp_spin.SPIN_COUNT)
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE",
                      str(Path(__file__).resolve().parents[1] / "config" / "fastdds_large_data.xml"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): on 2 shared
    cores a second thread only adds contention."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """A 2 s world bag (15 Hz camera and depth, microphone, ground truth) for three views."""
    from admn_core.data.bag_writer import write_trajectory_bag

    return write_trajectory_bag(tmp_path_factory.mktemp("bags") / "world", duration_s=2.0, seed=3)
