"""The per-run bookkeeping every training stage shares: resume, per-epoch CSV row, progress line, checkpoint."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from admn_core.train.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from admn_core.train.config import to_dict
from admn_core.train.loop import DistInfo, MetricsLog, epoch_line

logger = logging.getLogger(__name__)


class TrainingSession:
    """Resumes from `<run_dir>/checkpoint.safetensors` when present (and `resume`), then per finished epoch:
    appends the metrics row to `metrics.csv`, logs one progress line and saves the checkpoint (rank 0 only).

    `run_dir=None` trains without writing anything (tests, notebooks)."""

    def __init__(self, stage: str, run_dir: str | Path | None, train_config: Any, info: DistInfo,
                 modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer, scheduler: Any = None,
                 resume: bool = True, epochs: int | None = None):
        self.stage = stage
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.config = train_config
        self.info = info
        self.modules, self.optimizer, self.scheduler = modules, optimizer, scheduler
        self.epochs = epochs if epochs is not None else train_config.epochs
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        path = None if self.run_dir is None else checkpoint_path(self.run_dir)
        if resume and path is not None and path.exists():
            state = load_checkpoint(path, modules=modules, optimizer=optimizer, scheduler=scheduler)
            if state["extra"].get("stage") != stage:
                raise RuntimeError(f"{path} is a {state['extra'].get('stage')!r} checkpoint, not {stage!r}")
            self.start_epoch = state["epoch"] + 1
            self.history = state["extra"].get("history", [])[: self.start_epoch]
        if self.run_dir is not None and info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / f"{stage}_config.json").write_text(json.dumps(to_dict(train_config), indent=2))
        self.log = MetricsLog(self.run_dir, info.is_main, self.start_epoch)
        self._started = time.perf_counter()

    def epochs_to_run(self) -> range:
        return range(self.start_epoch, self.epochs)

    def begin_epoch(self) -> None:
        self._started = time.perf_counter()

    def end_epoch(self, epoch: int, metrics: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        row = {"epoch": epoch, **metrics, "seconds": time.perf_counter() - self._started}
        self.history.append(row)
        if self.info.is_main:
            self.log.write(row)
            if self.config.progress:
                logger.info(epoch_line(self.stage, epoch, self.epochs, row, self._started))
            last = epoch == self.epochs - 1
            if self.run_dir is not None and ((epoch + 1) % self.config.checkpoint_every == 0 or last):
                save_checkpoint(checkpoint_path(self.run_dir), epoch=epoch, modules=self.modules,
                                optimizer=self.optimizer, scheduler=self.scheduler,
                                extra={"stage": self.stage, "history": self.history, **(extra or {})})
        if self.info.distributed and dist.is_initialized():
            dist.barrier()  # nobody races ahead into a resume from a half-written epoch
        return row
