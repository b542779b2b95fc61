"""Preprocess an evaluation (or small training) set once: every method and budget reuses the same tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from admn_core.config import ModelConfig
from admn_core.preprocess import preprocess_batch
from admn_core.train.batching import CorruptionTargets, task_targets


@dataclass
class TensorSet:
    """inputs {modality: [N, V, C, H, W]}, targets [N, 2] (model units) or [N] labels, raw target dicts."""

    inputs: dict[str, torch.Tensor]
    targets: torch.Tensor
    raw_targets: list
    corruption: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.targets.shape[0]

    def batches(self, batch_size: int):
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            yield start, {k: v[start:stop] for k, v in self.inputs.items()}, self.targets[start:stop]

    def subset(self, count: int) -> TensorSet:
        return TensorSet({k: v[:count] for k, v in self.inputs.items()}, self.targets[:count],
                         self.raw_targets[:count], None if self.corruption is None else self.corruption[:count])


def tensor_set(config: ModelConfig, dataset: Dataset, limit: int = 0, batch: int = 64,
               corruption: CorruptionTargets | None = None) -> TensorSet:
    count = len(dataset) if not limit else min(limit, len(dataset))
    parts: dict[str, list[torch.Tensor]] = {spec.name: [] for spec in config.modalities}
    raw = []
    for start in range(0, count, batch):
        items = [dataset[i] for i in range(start, min(start + batch, count))]
        for name, tensor in preprocess_batch(config, [s for s, _ in items]).items():
            parts[name].append(tensor)
        raw.extend(t for _, t in items)
    labels = corruption.labels(raw) if corruption is not None else None
    return TensorSet({k: torch.cat(v) for k, v in parts.items()}, task_targets(config, raw), raw, labels)
