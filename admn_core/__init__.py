"""ADMN core: models, training, evaluation and the inference engine (pure Python + PyTorch, no ROS).

Importing this package before torch caps how long PyTorch's OpenMP workers spin after each parallel region
(GOMP_SPINCOUNT, read once when libgomp loads; a value already in the environment wins). libgomp's default spin
(300 000 iterations, milliseconds of busy CPU) keeps a worker busy on a core long after the blocks
finished, so the CPU fast path's front, split over two threads (`FastPath.front_threads`), found its second core
taken and gains nothing. Capped at SPIN_COUNT the split front gains its second core, while the blocks, whose
parallel regions follow each other within microseconds, lose nothing (README, "FLOPs and latency").
"""

import os
import sys

SPIN_COUNT = "10000"
# Effective only where libgomp is not loaded yet: a process that imported torch first keeps its own setting.
OPENMP_SPIN_CAPPED = "GOMP_SPINCOUNT" in os.environ or "torch" not in sys.modules
os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)
