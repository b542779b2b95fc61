"""RGB corruptions on uint8 H×W×3 images (RGB channel order)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from admn_core.data.corruptions.labels import as_generator
from admn_core.data.errors import CorruptionError

# The official GDTM corruption scripts run on 224×224 images; kernel sizes refer to that width.
BLUR_REFERENCE_WIDTH = 224


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise CorruptionError(f"expected an RGB uint8 H×W×3 image, got {image.dtype} {image.shape}")
    return image


def gaussian_noise_rgb(image: np.ndarray, sigma: float, seed, native_factor: int = 1) -> np.ndarray:
    """Add N(0, σ) on the [0, 1] scale, then clamp (paper A.3: σ ∈ {0, 1, 2, 3}); in uint8 σ·255 DN, rounded.

    `native_factor` k > 1: the camera's native frame has k × k pixels per pixel of `image`, and the noise is added
    and clamped there, then each k × k block is averaged (an area resize to this size). The official GDTM loader
    does exactly this order — noise on the 480×270 ZED frame, clamp, then resize to 224×224 — so
    the noise a model sees depends on how many native pixels each of its pixels averages. The clean native frame
    is taken constant within a block (the model cannot see finer detail either way).
    """
    image = _check_rgb(image)
    if sigma < 0:
        raise CorruptionError(f"sigma must be >= 0, got {sigma}")
    if not isinstance(native_factor, (int, np.integer)) or native_factor < 1:
        raise CorruptionError(f"native_factor must be an integer >= 1, got {native_factor!r}")
    if sigma == 0:
        return image.copy()
    draws = (*image.shape, native_factor * native_factor)  # [H, W, 3, k²]: one draw per native pixel
    noise = as_generator(seed).standard_normal(draws, dtype=np.float32) * np.float32(sigma * 255.0)
    native = np.clip(image[..., None] + noise, 0, 255)  # clamp per native pixel, before the resize
    return np.clip(native.mean(axis=-1) + 0.5, 0, 255).astype(np.uint8)


def lowlight(image: np.ndarray, gamma: float, seed, noise_std: float = 25.0, contrast: float = 0.5,
             brightness: float = 10.0, blue_boost: float = 30.0) -> np.ndarray:
    """The official `simulate_low_light`, step by step in the 0–255 scale:

    1. gamma curve out = (in/255)^gamma · 255 (gamma 5: medium, 100: severe — nearly black);
    2. + N(0, noise_std) (int16, clipped); 3. |contrast·x + brightness| saturated (cv2.convertScaleAbs);
    4. + blue_boost on the blue channel (the official code works in BGR, channel 0 there = channel 2 here).
    """
    image = _check_rgb(image)
    if gamma <= 0:
        raise CorruptionError(f"lowlight gamma must be > 0, got {gamma}")
    lut = (np.power(np.arange(256) / 255.0, gamma) * 255.0).astype(np.uint8)  # cv2.LUT of a float→uint8 table
    dark = lut[image].astype(np.int16)
    noise = np.round(as_generator(seed).standard_normal(image.shape, dtype=np.float32) * noise_std).astype(np.int16)
    noisy = np.clip(dark + noise, 0, 255).astype(np.float32)
    scaled = np.clip(np.round(np.abs(contrast * noisy + brightness)), 0, 255)
    scaled[..., 2] = np.minimum(scaled[..., 2] + blue_boost, 255)
    return scaled.astype(np.uint8)


def blur_sigma_pixels(kernel_size: int, width: int, reference_width: int = BLUR_REFERENCE_WIDTH) -> float:
    """OpenCV's σ for a k×k kernel (σ = 0.3((k−1)/2 − 1) + 0.8), rescaled from `reference_width` to `width`.

    k = 51 → σ 8.0 px, k = 201 → σ 30.5 px at 224 wide, i.e. 3.6 % and 13.6 % of the width at any resolution.
    """
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise CorruptionError(f"blur kernel size must be odd and >= 3, got {kernel_size}")
    return (0.3 * ((kernel_size - 1) / 2 - 1) + 0.8) * width / reference_width


@lru_cache(maxsize=64)
def _blur_matrix(length: int, sigma: float, radius: int) -> np.ndarray:
    """[length, length] matrix applying a 1-D Gaussian with BORDER_REFLECT_101 (OpenCV's default border)."""
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    source = np.arange(length)[:, None] + offsets[None, :]
    if length > 1:
        period = 2 * length - 2
        source = np.mod(source, period)
        source = np.where(source < length, source, period - source)
    else:
        source = np.zeros_like(source)
    matrix = np.zeros((length, length), dtype=np.float64)
    np.add.at(matrix, (np.repeat(np.arange(length), offsets.size), source.ravel()), np.tile(weights, length))
    return matrix.astype(np.float32)


def gaussian_blur(image: np.ndarray, kernel_size: int, reference_width: int = BLUR_REFERENCE_WIDTH) -> np.ndarray:
    """cv2.GaussianBlur(img, (k, k), 0) as applied at `reference_width`, rescaled to this image's width.

    Kernel radius and σ both scale with width/reference_width (so the blur covers the same fraction of the scene).
    Deterministic: no seed needed. Implemented as two matrix products (exact reflect-101 borders).
    """
    image = _check_rgb(image)
    height, width = image.shape[:2]
    sigma = blur_sigma_pixels(kernel_size, width, reference_width)
    radius = max(1, int(round((kernel_size - 1) / 2 * width / reference_width)))
    rows = _blur_matrix(height, sigma, radius)
    cols = _blur_matrix(width, sigma, radius)
    pixels = image.astype(np.float32)
    vertical = (rows @ pixels.reshape(height, width * 3)).reshape(height, width, 3)
    both = (vertical.transpose(0, 2, 1) @ cols.T).transpose(0, 2, 1)  # [H, 3, W] @ [W, W] → back to [H, W, 3]
    return np.clip(both + 0.5, 0, 255).astype(np.uint8)


def rain_streaks(height: int, width: int, intensity: float, seed) -> np.ndarray:
    """[H, W] float32 streak layer in [0, 1]: sparse drops smeared along one slanted direction.

    Streak length ≈ 2–12 % of the width and density grow with `intensity` ∈ (0, 1]; the angle is random (±25°).
    """
    rng = as_generator(seed)
    length = max(2, int(round(width * (0.04 + 0.08 * intensity))))
    angle = rng.uniform(-25.0, 25.0) * math.pi / 180.0
    drops = (rng.random((height, width), dtype=np.float32) < 0.004 + 0.025 * intensity)
    drops = drops * rng.uniform(0.25, 0.6, (height, width)).astype(np.float32)
    streaks = np.zeros((height, width), dtype=np.float32)
    for step in range(length):
        shift = (int(round(step * math.cos(angle))), int(round(step * math.sin(angle))))
        streaks += np.roll(drops, shift, axis=(0, 1))
    return np.clip(streaks, 0.0, 1.0)


def rain_and_haze(image: np.ndarray, depth_m: np.ndarray | None, intensity: float, seed,
                  airlight: float = 0.85, default_depth_m: float = 3.0) -> np.ndarray:
    """Heavy-rain model of Li et al. 2019: O = T·(J + S) + (1 − T)·A with transmission T = exp(−β·depth).

    J: the clean image on [0, 1]; S: rain streaks; A: grey airlight; β = 0.45·intensity per metre (heavy rain
    veils the far side of the room). `depth_m` [H, W] is the scene depth (the world passes its clean depth);
    without it a uniform `default_depth_m` is used. `intensity` ∈ (0, 1].
    """
    image = _check_rgb(image)
    if not 0 < intensity <= 1:
        raise CorruptionError(f"rain intensity must be in (0, 1], got {intensity}")
    height, width = image.shape[:2]
    depth = np.full((height, width), default_depth_m, np.float32) if depth_m is None else np.asarray(depth_m)
    if depth.shape != (height, width):
        raise CorruptionError(f"rain depth map shape {depth.shape} does not match the image {image.shape[:2]}")
    transmission = np.exp(-0.45 * intensity * np.minimum(depth, 20.0)).astype(np.float32)[..., None]
    streaks = rain_streaks(height, width, intensity, seed)[..., None]
    clean = image.astype(np.float32) / 255.0
    rainy = transmission * (clean + streaks) + (1.0 - transmission) * airlight
    return np.clip(rainy * 255.0 + 0.5, 0, 255).astype(np.uint8)


def occlusion_boxes(height: int, width: int, fraction: float, seed) -> np.ndarray:
    """[H, W] bool mask of 1–3 random rectangles covering about `fraction` of the frame."""
    if not 0 <= fraction <= 1:
        raise CorruptionError(f"occlusion fraction must be in [0, 1], got {fraction}")
    rng = as_generator(seed)
    mask = np.zeros((height, width), dtype=bool)
    count = int(rng.integers(1, 4))
    for _ in range(count):
        area = fraction / count
        aspect = rng.uniform(0.5, 2.0)
        box_h = min(height, max(1, int(round(height * math.sqrt(area * aspect)))))
        box_w = min(width, max(1, int(round(width * math.sqrt(area / aspect)))))
        top = int(rng.integers(0, height - box_h + 1))
        left = int(rng.integers(0, width - box_w + 1))
        mask[top:top + box_h, left:left + box_w] = True
    return mask


def occlude_rgb(image: np.ndarray, fraction: float, seed) -> np.ndarray:
    """Paint rectangles (something close to the lens: a hand, a person) in a flat dark colour."""
    image = _check_rgb(image)
    rng = as_generator(seed)
    mask = occlusion_boxes(image.shape[0], image.shape[1], fraction, rng)
    out = image.copy()
    out[mask] = rng.integers(20, 90, 3).astype(np.uint8)
    return out


def drop_frame(image: np.ndarray) -> np.ndarray:
    """Sensor dropout: the driver delivers an all-zero frame of the same shape and dtype."""
    return np.zeros_like(np.asarray(image))
