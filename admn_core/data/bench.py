"""Throughput benchmark: fully corrupted three-view samples per second, in parallel worker processes."""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor

from admn_core.data.world import World, WorldConfig


def _worker_rate(config: WorldConfig, preset: str, seconds: float, worker: int, workers: int) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second of this process)."""
    world = World(config)
    for index in range(5):  # warm-up: noise beds, blur matrices
        world.generate(index, preset)
    count, index = 0, worker
    started, cpu_started = time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        world.generate(index, preset, seed=1)
        index += workers
        count += 1
    return count / (time.perf_counter() - started), count / max(time.process_time() - cpu_started, 1e-9)


def benchmark(seconds: float = 3.0, workers: int | None = None, preset: str = "mixed",
              world_config: WorldConfig | None = None, cpu_rate: bool = False) -> float:
    """Samples/s summed over `workers` processes (default: min(2, CPUs)), each generating for `seconds`.

    With `cpu_rate`, the rate per CPU-second instead of per wall second: what `workers` otherwise idle cores
    deliver, unaffected by other processes competing for the CPUs during the measurement.
    """
    config = world_config or WorldConfig()
    workers = workers or min(2, os.cpu_count() or 1)
    if workers == 1:
        rates = [_worker_rate(config, preset, seconds, 0, 1)]
    else:
        with ProcessPoolExecutor(workers) as pool:
            futures = [pool.submit(_worker_rate, config, preset, seconds, w, workers) for w in range(workers)]
            rates = [f.result() for f in futures]
    return sum(rate[1 if cpu_rate else 0] for rate in rates)
