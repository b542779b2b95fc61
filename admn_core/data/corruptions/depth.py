"""Depth corruptions on uint16 millimetre frames (0 = no return)."""

from __future__ import annotations

import numpy as np

from admn_core.data.corruptions.image import occlusion_boxes
from admn_core.data.corruptions.labels import as_generator
from admn_core.data.errors import CorruptionError


def _check_depth(depth_mm: np.ndarray) -> np.ndarray:
    depth_mm = np.asarray(depth_mm)
    if depth_mm.dtype != np.uint16 or depth_mm.ndim != 2:
        raise CorruptionError(
            f"expected a uint16 H×W depth frame in millimetres, got {depth_mm.dtype} {depth_mm.shape}")
    return depth_mm


def gaussian_noise_depth(depth_mm: np.ndarray, sigma: float, full_scale_mm: float, seed) -> np.ndarray:
    """Add N(0, σ) on depth scaled to [0, 1] by `full_scale_mm`, then clamp to [0, full scale].

    Sensor-unit equivalent of the paper's σ_depth ∈ {0, .25, .5, .75}: noise σ·full_scale_mm millimetres.
    `full_scale_mm` is the engine's depth normalisation (ModalitySpec.depth_max_range_m · 1000).
    """
    depth_mm = _check_depth(depth_mm)
    if sigma < 0 or full_scale_mm <= 0:
        raise CorruptionError(f"need sigma >= 0 and full_scale_mm > 0, got {sigma}, {full_scale_mm}")
    if sigma == 0:
        return depth_mm.copy()
    noise = as_generator(seed).standard_normal(depth_mm.shape, dtype=np.float32) * np.float32(sigma * full_scale_mm)
    return np.clip(depth_mm + noise + 0.5, 0, min(full_scale_mm, 65535)).astype(np.uint16)


def occlude_depth(depth_mm: np.ndarray, fraction: float, seed, near_mm: tuple[int, int] = (250, 700)) -> np.ndarray:
    """Rectangles of something close to the sensor: a flat near depth, with the sensor's usual no-return holes."""
    depth_mm = _check_depth(depth_mm)
    rng = as_generator(seed)
    mask = occlusion_boxes(depth_mm.shape[0], depth_mm.shape[1], fraction, rng)
    out = depth_mm.copy()
    out[mask] = int(rng.integers(*near_mm))
    return out


def saturate(depth_mm: np.ndarray, saturated_frame: np.ndarray) -> np.ndarray:
    """Replace the frame by a sunlight-saturated IR frame (the official code swaps in a fixed recorded frame)."""
    depth_mm = _check_depth(depth_mm)
    saturated_frame = _check_depth(saturated_frame)
    if saturated_frame.shape != depth_mm.shape:
        raise CorruptionError(f"saturated frame {saturated_frame.shape} does not match depth {depth_mm.shape}")
    return saturated_frame.copy()
