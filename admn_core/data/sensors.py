"""Sensor models: how scene radiance and geometry become an RGB camera's and a depth camera's raw frames."""

from __future__ import annotations

import numpy as np

# Linear radiance quantised to 12 bits → display-gamma value in DN (a lookup is ~5× faster than np.power).
_DISPLAY_GAMMA_LUT = (np.power(np.arange(4096) / 4095.0, 1 / 2.2) * 255.0).astype(np.float32)


def rgb_sensor(radiance: np.ndarray, exposure: float, rng: np.random.Generator,
               read_noise_dn: float = 2.0) -> np.ndarray:
    """[H, W, 3] linear radiance → uint8 RGB: exposure, display gamma (1/2.2), read noise, quantisation."""
    levels = (np.clip(radiance * np.float32(exposure * 4095.0), 0.0, 4095.0)).astype(np.int16)
    encoded = _DISPLAY_GAMMA_LUT[levels]
    encoded += rng.standard_normal(encoded.shape, dtype=np.float32) * np.float32(read_noise_dn)
    return np.clip(encoded + 0.5, 0, 255).astype(np.uint8)


def depth_sensor(depth_m: np.ndarray, dropout_probability: np.ndarray, rng: np.random.Generator,
                 max_range_m: float) -> np.ndarray:
    """[H, W] true z-depth (m) → uint16 millimetres with time-of-flight-like behaviour.

    Noise σ = 1 mm + 2.5 mm·z² (z in metres) grows with range; a pixel returns 0 ("no return") with the
    background's dropout probability (dark, grazing or edge pixels) and beyond `max_range_m`.
    """
    sigma_mm = np.float32(1.0) + np.float32(2.5) * depth_m * depth_m
    measured = depth_m * np.float32(1000.0) + rng.standard_normal(depth_m.shape, dtype=np.float32) * sigma_mm
    missing = (rng.random(depth_m.shape, dtype=np.float32) < dropout_probability) | (depth_m > max_range_m)
    measured[missing] = 0.0
    return np.clip(measured + 0.5, 0, 65535).astype(np.uint16)


def saturated_ir_frame(height: int, width: int, seed) -> np.ndarray:
    """A depth frame from an IR sensor blinded by direct sunlight: mostly no returns, blotches of garbage.

    The official code swaps in one recorded frame (`lidar_frame.npy`, not released); this makes an equivalent one
    from a seed: ~75 % zeros, the rest clustered spurious near/far returns, no relation to the scene.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.random((max(2, height // 8), max(2, width // 8)))
    rows = np.linspace(0, coarse.shape[0] - 1, height)
    cols = np.linspace(0, coarse.shape[1] - 1, width)
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    r1, c1 = np.minimum(r0 + 1, coarse.shape[0] - 1), np.minimum(c0 + 1, coarse.shape[1] - 1)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    blobs = (coarse[r0][:, c0] * (1 - fr) * (1 - fc) + coarse[r1][:, c0] * fr * (1 - fc)
             + coarse[r0][:, c1] * (1 - fr) * fc + coarse[r1][:, c1] * fr * fc)
    speckle = rng.random((height, width))
    returns = (blobs > 0.62) & (speckle < 0.7) | (speckle < 0.03)
    garbage = np.where(rng.random((height, width)) < 0.7, rng.uniform(150, 900, (height, width)),
                       rng.uniform(6000, 9500, (height, width)))
    return np.where(returns, garbage, 0).astype(np.uint16)
