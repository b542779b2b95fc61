"""Test-wide settings.

The CPU fast path keeps an ONNX Runtime stage only where timing says it is faster (admn_core.onnx_cpu), so which
path a test would run could change with the machine's load. Tests pin PyTorch stages (ADMN_FASTPATH_ONNX=0, also
inherited by the nodes they start); test/test_onnx_cpu.py forces the ONNX stages with FastPath(onnx="always").
admn_core is imported before torch, as the entry points do, so OpenMP's spin is capped here too.
"""

import os

os.environ.setdefault("ADMN_FASTPATH_ONNX", "0")

import admn_core  # noqa: F401  (before any test imports torch: OpenMP's spin capped as in the entry points)
