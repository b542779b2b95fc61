"""Microphone corruptions on float32 mono waveforms."""

from __future__ import annotations

import math

import numpy as np

from admn_core.data.audio import loop_slice, noise_bed
from admn_core.data.corruptions.labels import as_generator
from admn_core.data.errors import CorruptionError

# Recorded-noise stand-ins: one long synthesised bed per kind, read at a random offset per call (like mixing a
# random excerpt of a noise recording, which is what PyDub did in the paper).
NOISE_BED_SECONDS = 60.0
NOISE_BED_SEEDS = {"wind": 1001, "fan": 1002}


def background_noise(wave: np.ndarray, kind: str, snr_db: float, reference_rms: float, sample_rate: int, seed,
                     gain_jitter_db: float = 6.0) -> np.ndarray:
    """Mix synthesised background noise (`wind` or `fan`) at `snr_db` relative to `reference_rms`.

    The noise level is set against a fixed reference signal level (the clean motor at a reference distance),
    not the wave's own level, which would leak the car's distance into the noise. Each call (each microphone)
    also scales its noise by a random ±`gain_jitter_db` (wind hits each node differently), so the relative
    levels between nodes — what localizes the car — are scrambled too.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise CorruptionError(f"expected a mono waveform, got shape {wave.shape}")
    if kind not in ("wind", "fan"):
        raise CorruptionError(f"background noise kind must be wind or fan, got {kind!r}")
    if reference_rms <= 0:
        raise CorruptionError(f"reference_rms must be > 0, got {reference_rms}")
    if math.isinf(snr_db) and snr_db > 0:
        return wave.copy()
    rng = as_generator(seed)
    bed = noise_bed(kind, sample_rate, NOISE_BED_SECONDS, NOISE_BED_SEEDS[kind])
    noise = loop_slice(bed, int(rng.integers(0, bed.shape[0])), wave.shape[0])
    jitter_db = rng.uniform(-gain_jitter_db, gain_jitter_db)
    noise_rms = reference_rms * 10 ** ((jitter_db - snr_db) / 20.0)
    return np.clip(wave + noise * np.float32(noise_rms), -1.0, 1.0).astype(np.float32)


def silence(wave: np.ndarray) -> np.ndarray:
    """Microphone dropout: the driver delivers zeros."""
    return np.zeros_like(np.asarray(wave, dtype=np.float32))


def signal_rms(waves) -> float:
    """RMS over every sample of some clean recordings: the reference level for SNRs on real data (a dataset's
    training audio), as the clean motor level is on the simulated world. Silent recordings give a tiny floor."""
    total = sum(float(np.sum(np.square(np.asarray(wave, np.float64)))) for wave in waves)
    count = sum(int(np.asarray(wave).size) for wave in waves)
    return max(math.sqrt(total / count) if count else 0.0, 1e-6)
