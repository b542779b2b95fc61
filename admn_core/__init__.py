"""ADMN core: models, training, evaluation and the inference engine (pure Python + PyTorch, no ROS).

Importing this package before torch caps how long PyTorch's OpenMP workers spin after each parallel region
(GOMP_SPINCOUNT, read once when libgomp loads; a value already in the environment wins). libgomp's default spin
(300 000 iterations, milliseconds on this project's VM) keeps a worker busy on a core long after the blocks
finished, so the CPU fast path's front, split over two threads (`FastPath.front_threads`), found its second core
taken and gained nothing; capped at SPIN_COUNT it gains ≈ 20 % at the tiny preset's budget 6 while the blocks,
whose parallel regions follow each other within microseconds, are as fast as before (README, "FLOPs and latency").
"""

import os
import sys

SPIN_COUNT = "10000"
# Effective only where libgomp is not loaded yet: a process that imported torch first keeps its own setting.
OPENMP_SPIN_CAPPED = "GOMP_SPINCOUNT" in os.environ or "torch" not in sys.modules
os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
