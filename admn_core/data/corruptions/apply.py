"""Dispatch a `CorruptionSpec` to the pure function for the sensor kind (rgb / depth / audio)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from admn_core.data.corruptions import audio_noise, depth, image
from admn_core.data.corruptions.labels import CorruptionSpec, as_generator
from admn_core.data.errors import CorruptionError


@dataclass(frozen=True)
class CorruptionContext:
    """What some corruptions need besides the array itself.

    depth_full_scale_mm: depth σ scaling (engine's max range). rgb_noise_native_factor: where RGB Gaussian noise is
    added (see `image.gaussian_noise_rgb`). reference_rms/sample_rate: audio SNR reference.
    scene_depth_m: [H, W] clean scene depth for the rain haze (None → uniform). saturated_depth: the world's
    sunlight-saturated IR frame for this view (needed by the `saturation` category).
    """

    depth_full_scale_mm: float = 10000.0
    rgb_noise_native_factor: int = 1  # native camera pixels per side per image pixel (`image.gaussian_noise_rgb`)
    reference_rms: float = 0.01
    sample_rate: int = 16000
    blur_reference_width: int = image.BLUR_REFERENCE_WIDTH
    scene_depth_m: np.ndarray | None = None
    saturated_depth: np.ndarray | None = None


VALID = {
    "rgb": {"clean", "gaussian", "lowlight", "blur", "rain", "occlusion", "dropout"},
    "depth": {"clean", "gaussian", "saturation", "occlusion", "dropout"},
    "audio": {"clean", "wind", "fan", "dropout"},
}


def apply_corruption(spec: CorruptionSpec, kind: str, array: np.ndarray, seed,
                     context: CorruptionContext | None = None) -> np.ndarray:
    """Return a corrupted copy of `array` (a sensor of `kind`: rgb, depth or audio)."""
    if kind not in VALID:
        raise CorruptionError(f"sensor kind must be one of {sorted(VALID)}, got {kind!r}")
    if spec.category not in VALID[kind]:
        raise CorruptionError(f"corruption {spec.category!r} does not apply to {kind}; valid: {sorted(VALID[kind])}")
    context = context or CorruptionContext()
    params = dict(spec.params)
    rng = as_generator(seed)
    category = spec.category
    if category == "clean":
        return np.array(array, copy=True)
    if category == "dropout":
        return audio_noise.silence(array) if kind == "audio" else image.drop_frame(array)
    if kind == "rgb":
        if category == "gaussian":
            return image.gaussian_noise_rgb(array, spec.value, rng, context.rgb_noise_native_factor)
        if category == "lowlight":
            return image.lowlight(array, spec.value, rng)
        if category == "blur":
            return image.gaussian_blur(array, int(spec.value), context.blur_reference_width)
        if category == "rain":
            rainy = image.rain_and_haze(array, context.scene_depth_m, spec.value, rng)
            gamma = params.get("gamma", 0.0)
            return image.lowlight(rainy, gamma, rng) if gamma > 0 else rainy
        return image.occlude_rgb(array, spec.value, rng)
    if kind == "depth":
        if category == "gaussian":
            return depth.gaussian_noise_depth(array, spec.value, context.depth_full_scale_mm, rng)
        if category == "saturation":
            if context.saturated_depth is None:
                raise CorruptionError("the saturation corruption needs context.saturated_depth (made by the world)")
            return depth.saturate(array, context.saturated_depth)
        return depth.occlude_depth(array, spec.value, rng)
    return audio_noise.background_noise(array, category, spec.value, context.reference_rms, context.sample_rate, rng,
                                        gain_jitter_db=params.get("gain_jitter_db", 6.0))
