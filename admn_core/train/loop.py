"""Shared training-loop plumbing: distributed context, devices, seeds, data loaders, metric reduction, logs.

Distributed training: launch with `torchrun --nproc_per_node N …`; the training functions call
`init_distributed()`, which joins the process group when the torchrun environment (WORLD_SIZE > 1) is present
(backend nccl on CUDA, gloo otherwise) and is a no-op for a single process. Every rank reads its shard through a
DistributedSampler; only rank 0 writes checkpoints, CSV logs and progress lines.

Determinism: data order comes from DistributedSampler(seed, epoch) and every random draw of a step (LayerDrop
masks, Gumbel noise, universal budgets) from a generator seeded by (seed, epoch, rank, stream), so an epoch's
randomness does not depend on what ran before it — a resumed run repeats an uninterrupted one.
"""

from __future__ import annotations

import csv
import math
import os
import random
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the torchrun process group if the environment asks for one (idempotent); → this process's DistInfo."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(device: str, info: DistInfo) -> torch.device:
    """The configured device; under multi-process CUDA, the local rank's GPU."""
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None and info.distributed:
        resolved = torch.device("cuda", info.local_rank)
    if resolved.type == "cuda" and resolved.index is not None:
        torch.cuda.set_device(resolved)
    return resolved


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device), as the official scripts do."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_generator(seed: int, epoch: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    """A CPU generator for one epoch's draws, independent of all earlier epochs (exact resumption)."""
    mixed = np.random.SeedSequence([seed, epoch, rank, stream]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed) & (2**63 - 1))


def make_loader(dataset: Dataset, collate, batch_size: int, info: DistInfo, seed: int, shuffle: bool = True,
                num_workers: int = 0, drop_last: bool = False) -> tuple[DataLoader, DistributedSampler]:
    """DataLoader over this rank's shard. Call `start_epoch(loader, sampler, epoch)` before iterating each epoch."""
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed,
                                 drop_last=drop_last)
    # An epoch-aware dataset's epoch must reach the workers each epoch, so its workers are re-created per epoch
    # (they copy the dataset when an epoch's iterator starts).
    persistent = num_workers > 0 and epoch_aware_dataset(dataset) is None
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers,
                        drop_last=drop_last, persistent_workers=persistent)
    return loader, sampler


def epoch_aware_dataset(dataset: Dataset) -> Dataset | None:
    """The dataset behind `dataset` (through Subsets) whose samples depend on the epoch (`set_epoch`, e.g.
    FreshCorruptionDataset: a new corruption draw per epoch), or None."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset if hasattr(dataset, "set_epoch") else None


def start_epoch(loader: DataLoader, sampler: DistributedSampler, epoch: int) -> None:
    """Set `epoch`'s data order and, for an epoch-aware dataset, its per-epoch draws. Call before iterating."""
    sampler.set_epoch(epoch)
    dataset = epoch_aware_dataset(loader.dataset)
    if dataset is not None:
        dataset.set_epoch(epoch)


class MeanMeter:
    """Sample-weighted running means, all-reduced across ranks on `result()`."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, count: int, **values: float) -> None:
        self.count += count
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value) * count

    def result(self, device: torch.device | None = None) -> dict[str, float]:
        names = sorted(self.sums)
        totals = torch.tensor([self.sums[n] for n in names] + [float(self.count)], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            backend_device = device if device is not None and dist.get_backend() == "nccl" else torch.device("cpu")
            totals = totals.to(backend_device)
            dist.all_reduce(totals)
            totals = totals.cpu()
        count = max(totals[-1].item(), 1.0)
        return {name: totals[i].item() / count for i, name in enumerate(names)}


class MetricsLog:
    """One CSV row per epoch in `<run_dir>/metrics.csv` (rank 0 only). Resuming drops rows at/after the resume
    epoch, so a crash between the CSV write and the checkpoint never duplicates an epoch."""

    def __init__(self, run_dir: Path | None, enabled: bool, resume_epoch: int = 0):
        self.path = None if run_dir is None or not enabled else Path(run_dir) / "metrics.csv"
        self.rows: list[dict] = []
        if self.path is not None and self.path.exists():
            with self.path.open(newline="") as handle:
                self.rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) < resume_epoch]
            self._rewrite()

    def write(self, row: dict) -> None:
        self.rows.append({k: _fmt(v) for k, v in row.items()})
        if self.path is not None:
            self._rewrite()

    def _rewrite(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        temporary = self.path.with_name(self.path.name + ".partial")
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns or ["epoch"])
            writer.writeheader()
            writer.writerows(self.rows)
        temporary.replace(self.path)


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, float) else value


def progress(iterable: Iterable, enabled: bool, description: str, total: int | None = None):
    """A per-batch tqdm bar when enabled and stderr is a terminal; the bare iterable otherwise (logs, CI)."""
    if not enabled or not sys.stderr.isatty():
        return iterable
    return tqdm(iterable, desc=description, total=total, leave=False)


def epoch_line(stage: str, epoch: int, epochs: int, metrics: dict, started: float) -> str:
    shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                     if isinstance(v, float) and k not in ("epoch", "seconds"))
    return f"[{stage}] epoch {epoch + 1}/{epochs} {shown} ({time.perf_counter() - started:.1f}s)"


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


def wrap_ddp(module: torch.nn.Module, device: torch.device, info: DistInfo) -> torch.nn.Module:
    """DDP wrapper when distributed (find_unused_parameters: LayerDrop and warm-up epochs leave parameters unused)."""
    if not info.distributed:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=True)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float):
    """Per-step LR factor: linear 1/W … 1 over the first W = fraction·total steps, then cosine from 1 to 0."""
    warmup = max(1, round(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
