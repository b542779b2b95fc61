"""Sensor corruptions (pure, seeded functions) and the dataset presets that mix them.

Every function takes sensor-unit arrays (RGB uint8 H×W×3, depth uint16 mm H×W, audio float32) plus severity
parameters and a `seed` (an int, a sequence of ints or a numpy Generator) and returns a new array; inputs are never
modified. `apply_corruption` dispatches a `CorruptionSpec`; `presets.py` draws specs per sample.
"""

from admn_core.data.corruptions.apply import CorruptionContext, apply_corruption
from admn_core.data.corruptions.labels import CATEGORIES, CLEAN, CorruptionSpec, category_id
from admn_core.data.corruptions.presets import PRESETS, CorruptionPreset, get_preset

__all__ = [
    "CATEGORIES",
    "CLEAN",
    "PRESETS",
    "CorruptionContext",
    "CorruptionPreset",
    "CorruptionSpec",
    "apply_corruption",
    "category_id",
    "get_preset",
]
