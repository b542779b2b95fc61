"""How long OpenMP's workers spin after each parallel region, capped for the processes that run the CPU fast path.

libgomp (PyTorch's OpenMP runtime) reads GOMP_SPINCOUNT once, when torch loads it. Its default, 300 000
iterations (milliseconds of busy CPU), keeps a worker spinning on a core long after PyTorch's blocks finished, so
the CPU fast path's front, split over two threads (`FastPathOptions.front_threads`), finds its second core taken
and gains nothing. Capped at SPIN_COUNT the split front gains its second core, while the blocks, whose parallel
regions follow each other within microseconds, lose nothing (docs/performance.md, "OpenMP's spin").

Importing this module changes nothing: a process is capped only by an environment set before torch loads — by the
command that starts it, or by `relaunch_with_spin_cap` at the top of an entry point.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

VARIABLE = "GOMP_SPINCOUNT"
SPIN_COUNT = "10000"


def spin_capped(environment: Mapping[str, str]) -> dict[str, str]:
    """A copy of `environment` with OpenMP's spin capped; a value already there wins."""
    return {VARIABLE: SPIN_COUNT, **environment}


def relaunch_with_spin_cap(arguments: Sequence[str]) -> None:
    """Replace this process by `python *arguments` (e.g. ["-m", "admn_core.cli", "bench"]) with the cap, unless
    GOMP_SPINCOUNT is already set (then return): torch is loaded by now, so only a new process can take the cap."""
    if VARIABLE in os.environ:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *arguments], spin_capped(os.environ))
