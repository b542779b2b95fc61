"""Test-wide settings.

The CPU fast path keeps an ONNX Runtime stage only where timing says it is faster (admn_core.onnx_cpu), so which
path a test would run could change with the machine's load. Tests pin PyTorch stages (ADMN_FASTPATH_ONNX=0, also
inherited by the nodes they start); test/test_onnx_cpu.py forces the ONNX stages with FastPath(onnx="always").
admn_core is imported before torch, as the entry points do, so OpenMP's spin is capped here too.
Every process gets the shipped Fast DDS profile, as launch and bring-up do: Fast DDS reads it once per process, when
its first participant starts, so a test that set it later (admn_ros.soak's in-process driver) would keep the default
transports once an earlier test had started rclpy — and its best-effort camera frames, above the default 512 KB
shared-memory segment's reach, would be lost (the short soak would synchronize no set after test_admn_node.py).
"""

import os
from pathlib import Path

os.environ.setdefault("ADMN_FASTPATH_ONNX", "0")
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE",
                      str(Path(__file__).resolve().parents[1] / "config" / "fastdds_large_data.xml"))

import admn_core  # noqa: F401  (before any test imports torch: OpenMP's spin capped as in the entry points)
