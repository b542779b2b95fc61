"""What a corruption is: its category (a fixed vocabulary with stable ids), severity level and physical value."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from admn_core.data.errors import CorruptionError

# Ids are part of the cache format (manifest.json repeats this list): append, never reorder.
CATEGORIES = ("clean", "gaussian", "lowlight", "saturation", "blur", "rain", "occlusion", "dropout", "wind", "fan")


def category_id(name: str) -> int:
    try:
        return CATEGORIES.index(name)
    except ValueError:
        raise CorruptionError(f"unknown corruption category {name!r}; choose one of {CATEGORIES}") from None


@dataclass(frozen=True)
class CorruptionSpec:
    """One corruption for one (view, modality).

    category: a name from CATEGORIES. severity: 0 = clean, higher = worse (the level index within the preset).
    value: the physical parameter the label carries for corruption-aware supervision — σ on [0, 1]-scaled data
    (gaussian), gamma (lowlight), kernel size at the reference width (blur), rain intensity, occluded fraction,
    SNR in dB (wind/fan; +inf when clean). params: extra keyword arguments for the corruption function.
    """

    category: str = "clean"
    severity: int = 0
    value: float = 0.0
    params: tuple[tuple[str, float], ...] = field(default=())

    def __post_init__(self) -> None:
        category_id(self.category)
        if self.severity < 0:
            raise CorruptionError(f"severity must be >= 0, got {self.severity}")

    @property
    def category_id(self) -> int:
        return category_id(self.category)

    def as_label(self) -> dict:
        return {"category": self.category, "category_id": self.category_id, "severity": self.severity,
                "value": float(self.value)}


CLEAN = CorruptionSpec()


def as_generator(seed) -> np.random.Generator:
    """An int / int sequence / SeedSequence / Generator → Generator (a Generator is used as-is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)
