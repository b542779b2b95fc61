"""Dataset items → training batches: preprocessed inputs, task targets in model units, corruption labels.

A dataset item is `(sample, target)`: `sample` = {(view, modality): numpy array in sensor
units}, exactly what the engine's `preprocess_batch` takes; `target` = a dict with
- localization: `position_m` (float [2], metres, world frame) — `position` is accepted too (the simulated world's
  key) — divided by `config.head.position_unit_m` (the paper trains in centimetres);
- classification: `label` (int);
- corruption labels under `target["corruption"]` = {modality: label}, a label being a dict with `value` (physical
  parameter, e.g. σ), `severity` (level index, 0 = clean), `category_id`, … (admn_core.data.corruptions) or a
  bare number; or a bare int category for the whole sample.
`CorruptionTargets` says which of these become the corruption-supervision tensor and how they are scored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from admn_core.config import ConfigError, ModelConfig
from admn_core.preprocess import preprocess_batch

POSITION_KEYS = ("position_m", "position")


@dataclass(frozen=True)
class CorruptionTargets:
    """How corruption labels become the controller's corruption-supervision targets and loss.

    kind "regression" (quantifiable corruption, official GDTM/MM-Fi Noise): one output per entry of `modalities`;
    σ̂ = sigmoid(output)·scale [code: ×5]; loss = Σ_m weight_m · mean|σ̂_m − σ_m| [code: weighted L1; the paper
    says "MSE" but writes |·|]. The label read is `field` (default the physical `value`), overridable per
    modality in `fields` (e.g. the microphone's `value` is an SNR in dB, +inf when clean: use its `severity`).
    Default weights = official GDTM Gaussian noise: L1(img) + 20·L1(depth); unlisted modalities weigh 1.

    kind "category" (e.g. lowlight condition, AVE noise type): one joint class per sample, from the per-modality
    labels (`field`, default `severity`) as a mixed-radix number with `classes[i]` classes for `modalities[i]`
    (labels clipped to classes−1: classes 2 turns "severity" into corrupted-or-not). K = Π classes outputs;
    cross-entropy, weighted by `category_weight` [code: lowlight 1, AVE 0.2]. A bare int under `key` is taken
    as the class directly (then `classes` = (K,)).
    """

    kind: str = "regression"  # "regression" | "category"
    modalities: tuple[str, ...] = ("rgb", "depth")  # [code] GDTM order (σ_img, σ_depth)
    field: str = ""  # "" → "value" for regression, "severity" for category
    fields: tuple[tuple[str, str], ...] = ()  # per-modality overrides of `field`
    weights: tuple[tuple[str, float], ...] = (("depth", 20.0),)  # [code] GDTM Noise (MM-Fi: 3, 3-mod: 10/10)
    scale: float = 5.0  # [code] σ̂ = sigmoid·5
    classes: tuple[int, ...] = ()  # category: classes per modality (mixed radix)
    category_weight: float = 1.0
    key: str = "corruption"

    def __post_init__(self) -> None:
        if self.kind not in ("regression", "category"):
            raise ConfigError(f"CorruptionTargets.kind must be regression or category, got {self.kind!r}")
        if not self.modalities:
            raise ConfigError("CorruptionTargets.modalities must name at least one modality")
        if self.kind == "category":
            if len(self.classes) != len(self.modalities) or any(c < 1 for c in self.classes):
                raise ConfigError("CorruptionTargets.classes needs one class count >= 1 per modality")
            if self.num_outputs < 2:
                raise ConfigError("a categorical corruption target needs at least 2 classes")
        if self.scale <= 0:
            raise ConfigError("CorruptionTargets.scale must be > 0")

    @property
    def num_outputs(self) -> int:
        """Width of the controller's corruption head (QoIController(config, corruption_outputs=...))."""
        return len(self.modalities) if self.kind == "regression" else math.prod(self.classes)

    def field_for(self, modality: str) -> str:
        overrides = dict(self.fields)
        if modality in overrides:
            return overrides[modality]
        return self.field or ("value" if self.kind == "regression" else "severity")

    def weight_vector(self) -> torch.Tensor:
        weights = dict(self.weights)
        return torch.tensor([float(weights.get(m, 1.0)) for m in self.modalities])

    def check(self, config: ModelConfig) -> None:
        unknown = [m for m in self.modalities if m not in config.modality_names]
        if unknown:
            raise ConfigError(f"CorruptionTargets names modalities {unknown} the model lacks {config.modality_names}")

    # ------------------------------------------------------------------ labels
    def labels(self, targets: Sequence[Mapping]) -> torch.Tensor:
        """Per-sample targets → float [B, M'] (regression) or long [B] (category)."""
        rows = [self._label_row(t) for t in targets]
        if self.kind == "regression":
            return torch.tensor(np.asarray(rows, dtype=np.float32))
        return torch.tensor(rows, dtype=torch.long)

    def _label_row(self, target: Mapping):
        if self.key not in target:
            raise KeyError(f"target has no {self.key!r} corruption labels; keys: {sorted(target)}")
        labels = target[self.key]
        if self.kind == "category" and _is_integer(labels):
            value = int(labels)
            if not 0 <= value < self.num_outputs:
                raise ValueError(f"corruption class {value} outside [0, {self.num_outputs})")
            return value
        values = []
        for modality in self.modalities:
            if modality not in labels:
                raise KeyError(f"corruption labels lack modality {modality!r}; they have {sorted(labels)}")
            label = labels[modality]
            name = self.field_for(modality)
            value = label[name] if isinstance(label, Mapping) else label
            value = float(np.asarray(value).max()) if np.ndim(value) else float(value)
            if not math.isfinite(value):
                raise ValueError(f"corruption label {modality}.{name} = {value} is not finite; choose another "
                                 "field for it (e.g. fields=(('mic', 'severity'),))")
            values.append(value)
        if self.kind == "regression":
            return values
        index = 0
        for value, count in zip(values, self.classes):
            index = index * count + min(max(int(round(value)), 0), count - 1)
        return index

    # ------------------------------------------------------------------ loss
    def predict(self, head_output: torch.Tensor) -> torch.Tensor:
        """Corruption head output → σ̂ [B, M'] (regression) or class probabilities [B, K]."""
        if self.kind == "regression":
            return torch.sigmoid(head_output) * self.scale
        return torch.softmax(head_output, dim=-1)

    def loss(self, head_output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.kind == "regression":
            error = (self.predict(head_output) - labels).abs().mean(dim=0)  # [M'] mean |σ̂ − σ| per modality
            return (error * self.weight_vector().to(error)).sum()
        return self.category_weight * F.cross_entropy(head_output, labels)


def _is_integer(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]  # {modality: [B, V, C, H, W]}
    target: torch.Tensor  # [B, 2] model units (localization) or long [B] (classification)
    corruption: torch.Tensor | None = None  # CorruptionTargets.labels, or None

    def __len__(self) -> int:
        return self.target.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        return Batch({k: v.to(device, non_blocking=True) for k, v in self.inputs.items()},
                     self.target.to(device, non_blocking=True),
                     None if self.corruption is None else self.corruption.to(device, non_blocking=True))


class BatchCollator:
    """DataLoader `collate_fn`: [(sample, target)] → Batch (picklable, so it works with worker processes)."""

    def __init__(self, config: ModelConfig, corruption: CorruptionTargets | None = None):
        if corruption is not None:
            corruption.check(config)
        self.config = config
        self.corruption = corruption

    def __call__(self, items: Sequence[tuple[Mapping, Mapping]]) -> Batch:
        samples = [sample for sample, _ in items]
        targets = [target for _, target in items]
        inputs = preprocess_batch(self.config, samples)
        corruption = self.corruption.labels(targets) if self.corruption is not None else None
        return Batch(inputs, task_targets(self.config, targets), corruption)


def task_targets(config: ModelConfig, targets: Sequence[Mapping]) -> torch.Tensor:
    """Localization: metres → model units [B, 2] float32; classification: labels → long [B]."""
    if config.head.task == "classification":
        try:
            return torch.tensor([int(t["label"]) for t in targets], dtype=torch.long)
        except KeyError:
            raise KeyError(f"classification targets need 'label'; got keys {sorted(targets[0])}") from None
    rows = []
    for target in targets:
        key = next((k for k in POSITION_KEYS if k in target), None)
        if key is None:
            raise KeyError(f"localization targets need one of {POSITION_KEYS}; got keys {sorted(target)}")
        position = np.asarray(target[key], dtype=np.float64).reshape(-1)
        if position.shape[0] < 2:
            raise ValueError(f"target {key!r} needs 2 coordinates, got {position.shape[0]}")
        rows.append(position[:2] / config.head.position_unit_m)
    return torch.tensor(np.asarray(rows), dtype=torch.float32)


def blank_random_modality(inputs: dict[str, torch.Tensor], probability: float,
                          generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Modality dropout (ModDrop): per sample, with `probability`, one uniformly chosen modality's inputs (every
    view of {modality: [B, V, C, H, W]}) become zeros — the normalised mean, a sensor that shows nothing.
    Draws from `generator` (CPU) → new tensors; the inputs are not modified."""
    names = list(inputs)
    size = next(iter(inputs.values())).shape[0]
    dropped = torch.rand(size, generator=generator) < probability  # [B]
    which = torch.randint(len(names), (size,), generator=generator)  # [B]
    out = {}
    for index, name in enumerate(names):
        tensor = inputs[name]
        keep = ~(dropped & (which == index))
        out[name] = tensor * keep.to(tensor.device, tensor.dtype).view(size, *([1] * (tensor.dim() - 1)))
    return out
