"""Sensor arrays → backbone input tensors, driven only by the model config.

ROS messages, rosbags and datasets all hand the engine the same Sample: a dict keyed by
(view, modality) of numpy arrays in sensor units — RGB uint8 H×W×3, depth uint16 millimetres or float32
metres (H×W), audio float32 samples (N, or C×N). Everything model-specific happens here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from admn_core.config import ModalitySpec, ModelConfig

Sample = Mapping[tuple[str, str], np.ndarray]


class InputError(ValueError):
    """A sample array cannot be used for its modality; the message names the (view, modality) and why."""


def preprocess_batch(config: ModelConfig, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
    """[samples] → {modality: float32 [B, V·T, C, H, W]} on the CPU (T = `ModalitySpec.frames`, view-major: rows
    v·T … v·T+T−1 are view v's frames; T = 1 gives [B, V, C, H, W])."""
    batch: dict[str, torch.Tensor] = {}
    for spec in config.modalities:
        per_sample = [torch.cat([_view_frames(spec, sample, view) for view in spec.views]) for sample in samples]
        batch[spec.name] = torch.stack(per_sample)
    return batch


def _view_frames(spec: ModalitySpec, sample: Sample, view: str) -> torch.Tensor:
    """One view's array → [T, C, H, W]: a single image (frames 1) or a stack [T, H, W(, 3)] of exactly T frames."""
    key = (view, spec.name)
    if key not in sample:
        raise InputError(f"sample has no {key}; it has {sorted(sample)}")
    array = sample[key]
    if spec.frames == 1 or not isinstance(array, np.ndarray):
        return _view_tensor(spec, array, key)[None]
    image_dims = 3 if spec.kind == "rgb" else 2  # H×W×3 or H×W
    if array.ndim != image_dims + 1 or array.shape[0] != spec.frames:
        raise InputError(f"{key}: modality {spec.name!r} takes {spec.frames} frames per view "
                         f"([{spec.frames}, H, W{', 3' if spec.kind == 'rgb' else ''}]), got {array.dtype} "
                         f"{array.shape}")
    return torch.stack([_view_tensor(spec, frame, key) for frame in array])


def _view_tensor(spec: ModalitySpec, array, key: tuple[str, str]) -> torch.Tensor:
    if not isinstance(array, np.ndarray):
        raise InputError(f"{key}: expected a numpy array, got {type(array).__name__}")
    if array.size == 0:
        raise InputError(f"{key}: empty array")
    if spec.kind == "rgb":
        return rgb_tensor(spec, array, key)
    if spec.kind == "depth":
        return depth_tensor(spec, array, key)
    return audio_tensor(spec, array, key)


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[C, H, W] → [C, *size], bilinear with antialiasing when shrinking."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def _normalize(spec: ModalitySpec, image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(spec.norm_mean, dtype=image.dtype).view(-1, 1, 1)
    std = torch.tensor(spec.norm_std, dtype=image.dtype).view(-1, 1, 1)
    return (image - mean) / std


def rgb_tensor(spec: ModalitySpec, array: np.ndarray, key=("?", "rgb")) -> torch.Tensor:
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        hint = (f" ({array.shape[0]} frames: a multi-frame modality needs `frames: {array.shape[0]}` in its "
                f"ModalitySpec, e.g. the tiny_ave / paper_ave presets)"
                if array.ndim == 4 and array.shape[-1] == 3 else "")
        raise InputError(f"{key}: RGB must be uint8 H×W×3, got {array.dtype} {array.shape}{hint}")
    image = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    # Resize while still uint8: torch's uint8 antialiased kernel is ~40× faster than the float one at 640×480.
    return _normalize(spec, _resize(image, spec.input_size).float().div_(255.0))


def depth_tensor(spec: ModalitySpec, array: np.ndarray, key=("?", "depth")) -> torch.Tensor:
    """uint16 mm or float metres → [1, H, W] in [0, 1] of `depth_max_range_m`; NaN/Inf/negative = no return = 0."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise InputError(f"{key}: depth must be H×W, got shape {array.shape}")
    if array.dtype == np.uint16:
        metres = torch.from_numpy(array.astype(np.float32)).div_(1000.0)
    elif array.dtype in (np.float32, np.float64):
        metres = torch.from_numpy(np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0))
        metres.clamp_(min=0.0)
    else:
        raise InputError(f"{key}: depth must be uint16 millimetres or float32 metres, got {array.dtype}")
    scaled = metres.clamp_(max=spec.depth_max_range_m).div_(spec.depth_max_range_m)[None]
    return _normalize(spec, _area_resize(scaled, spec.input_size))


def _area_resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[C, H, W] float → [C, *size]: area averaging when shrinking (adaptive average pooling: cheap, and the
    metric mean of the covered pixels), bilinear when growing."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    if image.shape[-2] >= size[0] and image.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(image[None], size)[0]
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


def audio_tensor(spec: ModalitySpec, array: np.ndarray, key=("?", "audio")) -> torch.Tensor:
    """Samples (N or C×N, float) → normalised log-mel [1, n_mels, frames] of the most recent window (a live
    stream's rule). A recorded clip is cut to its window first (`clip_audio_window`: around the annotated event or
    the clip's centre), by the dataset readers, so this rule never picks a clip's last fraction of a second."""
    if array.ndim == 2:
        array = array.mean(axis=0)  # channels-first multi-channel → mono
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{key}: audio must be float samples (N or C×N), got {array.dtype} {array.shape}")
    needed = spec.audio_window_samples
    samples = np.nan_to_num(array[-needed:].astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if samples.shape[0] < needed:  # too little audio yet: silence before the first sample
        samples = np.concatenate([np.zeros(needed - samples.shape[0], np.float32), samples])
    mel = log_mel(samples, spec)
    return _normalize(spec, mel[None])


def clip_audio_window(samples: np.ndarray, sample_rate: int, seconds: float, centre_s: float) -> np.ndarray:
    """A recorded clip [N] → the `seconds` long window centred on `centre_s` (seconds from the clip's start),
    float32, zero-padded where it reaches past either end of the clip."""
    length = int(round(seconds * sample_rate))
    start = int(round(centre_s * sample_rate)) - length // 2
    window = np.zeros(length, np.float32)
    lo, hi = max(start, 0), min(start + length, samples.shape[0])
    if hi > lo:
        window[lo - start:hi - start] = samples[lo:hi]
    return window


def log_mel(samples: np.ndarray, spec: ModalitySpec) -> torch.Tensor:
    """[N] → [n_mels, frames] float32: Hann-windowed power STFT (no centring), HTK mel filterbank, natural log.

    Computed in float64 and cast after the log: the power of finite but huge samples (3e38, a faulty driver) is far
    beyond float32 (max 3.4e38) but within float64 (1.8e308) for every finite float32 input, so the log-mel stays
    finite (at most ≈ 2·ln(3.4e38·n_fft) ≈ 190) instead of becoming inf and poisoning the whole output."""
    audio = spec.audio
    frames = np.lib.stride_tricks.sliding_window_view(samples.astype(np.float64), audio.n_fft)[:: audio.hop_length]
    power = np.abs(np.fft.rfft(frames * _hann(audio.n_fft), axis=-1)) ** 2  # [frames, n_fft/2 + 1] float64
    filters = mel_filterbank(audio.sample_rate, audio.n_fft, audio.n_mels)  # [n_fft/2 + 1, n_mels]
    # The product runs in torch, not numpy: alternating OpenBLAS's and torch's thread pools made every switch
    # spin-wait, many times the product's own cost on a few cores. Operands contiguous for the same reason.
    mel = torch.from_numpy(np.ascontiguousarray(power)) @ filters.double()  # [frames, n_mels]
    return mel.add_(1e-6).log_().float().T.contiguous()


@lru_cache(maxsize=8)
def _hann(length: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)).astype(np.float32)  # periodic Hann


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> torch.Tensor:
    """[n_fft/2 + 1, n_mels] triangular HTK-mel filters from 20 Hz to Nyquist (as Kaldi fbank's defaults)."""
    def hz_to_mel(hz):
        return 1127.0 * np.log1p(np.asarray(hz) / 700.0)

    def mel_to_hz(mel):
        return 700.0 * np.expm1(np.asarray(mel) / 1127.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(20.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - lower) / np.maximum(centre - lower, 1e-9)
    falling = (upper - bins) / np.maximum(upper - centre, 1e-9)
    return torch.from_numpy(np.ascontiguousarray(np.clip(np.minimum(rising, falling), 0.0, None).T, np.float32))


def missing_input(spec: ModalitySpec) -> np.ndarray:
    """What a sensor that saw nothing sends, in sensor units: a black frame, depth without a single return (0 mm),
    a silent audio window. Stands in for an input rejected as hostile or broken, so the set still runs and the
    controller can spend the budget on the modalities that are there (as with a blind depth camera or a dead
    microphone)."""
    frames = (spec.frames,) if spec.frames > 1 else ()
    if spec.kind == "rgb":
        return np.zeros((*frames, *spec.input_size, 3), np.uint8)
    if spec.kind == "depth":
        return np.zeros((*frames, *spec.input_size), np.uint16)
    return np.zeros(spec.audio_window_samples, np.float32)


def synthetic_sample(config: ModelConfig, seed: int = 0) -> dict[tuple[str, str], np.ndarray]:
    """A random Sample in sensor units for every (view, modality) — for benchmarks, smoke runs and tests."""
    rng = np.random.default_rng(seed)
    sample = {}
    for spec in config.modalities:
        for view in spec.views:
            image = ((spec.frames,) if spec.frames > 1 else ()) + tuple(spec.input_size)
            if spec.kind == "rgb":
                sample[(view, spec.name)] = rng.integers(0, 256, (*image, 3), dtype=np.uint8)
            elif spec.kind == "depth":
                sample[(view, spec.name)] = rng.integers(500, 6000, image, dtype=np.uint16)
            else:
                seconds = math.ceil(spec.audio_window_seconds * 100) / 100
                count = int(seconds * spec.audio.sample_rate)
                sample[(view, spec.name)] = (0.1 * rng.standard_normal(count)).astype(np.float32)
    return sample
