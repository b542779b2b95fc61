"""Microphone simulation and audio helpers (16 kHz mono float32, full scale ±1).

The car's motor whines at f0 = base + slope·speed with decaying harmonics, plus speed-dependent gear/tyre hiss.
Each microphone hears the source delayed by distance/c and attenuated as 1/distance, over a node-specific room tone.
Because f0 is linear in speed, the motor phase is 2π(base·t + slope·distance_travelled(t)): closed form from the
trajectory, so any window (a dataset sample or one 20 ms chunk of a bag) is phase-continuous with its neighbours.

Noise beds (room tone, gear hiss, wind, fan) are synthesised by shaping white noise in the frequency domain.
`log_mel_spectrogram` is a small numpy log-mel for display and the probe; the engine owns the real frontend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from admn_core.data.errors import CorruptionError
from admn_core.data.trajectory import Trajectory

NOISE_KINDS = ("room", "gear", "wind", "fan")


@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int = 16000
    speed_of_sound: float = 343.0
    motor_base_hz: float = 140.0
    motor_hz_per_mps: float = 160.0
    harmonic_amplitudes: tuple[float, ...] = (1.0, 0.6, 0.45, 0.3, 0.2, 0.12)
    motor_level: float = 0.12  # peak amplitude of the fundamental at 1 m
    gear_level: float = 0.04  # RMS of the hiss at 1 m and 1 m/s
    room_tone_level: float = 0.0015  # RMS, independent per microphone
    mic_height: float = 1.45  # metres (just below the node's cameras)
    min_distance: float = 0.3  # clamp for the 1/r law
    reference_distance: float = 2.5  # SNRs are defined against the motor level at this distance (see snr note)
    bed_seconds: float = 8.0  # length of the looping noise beds
    directivity: float = 0.2  # gain 1 + directivity·cos(angle between heading and the direction to the mic)
    node_gain_jitter_db: float = 1.0  # per-sample random gain of each microphone (calibration, body shadowing)

    @property
    def reference_rms(self) -> float:
        """RMS of the clean motor sound at `reference_distance` and 1 m/s: the fixed "signal" of every SNR.

        SNRs use this fixed reference, never the level a microphone actually receives: scaling the noise to each
        microphone's own signal would write the car's distance into the noise level and leak the position.
        """
        tonal = self.motor_level * math.sqrt(sum(a * a for a in self.harmonic_amplitudes) / 2)
        return math.hypot(tonal, self.gear_level) / self.reference_distance


def shaped_noise(n_samples: int, sample_rate: int, kind: str, seed) -> np.ndarray:
    """Unit-RMS float32 noise of a given character, deterministic by seed.

    room: pink-ish (1/f) with a low rumble; gear: 1.5–6 kHz band; wind: brown-ish below ~500 Hz with gusts;
    fan: broadband 1/f plus a blade-pass hum (≈ 95 Hz and harmonics) and 2 Hz amplitude wobble.
    """
    if kind not in NOISE_KINDS:
        raise CorruptionError(f"unknown noise kind {kind!r}; choose one of {NOISE_KINDS}")
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n_samples))
    freqs = np.fft.rfftfreq(n_samples, 1.0 / sample_rate)
    f = np.maximum(freqs, 1.0)
    if kind == "room":
        shape = 1.0 / np.sqrt(f / 50.0 + 1.0)
    elif kind == "gear":
        shape = np.exp(-0.5 * ((f - 3500.0) / 1200.0) ** 2)
    elif kind == "wind":
        shape = 1.0 / (1.0 + (f / 350.0) ** 1.2) * (f > 15)
    else:  # fan
        shape = 1.0 / np.sqrt(f / 200.0 + 1.0)
    signal = np.fft.irfft(spectrum * shape, n_samples)
    t = np.arange(n_samples) / sample_rate
    if kind == "wind":
        # Gusts: a slow random envelope (0.2–1.5 Hz content) between 0.2 and 1.8.
        gust = np.fft.irfft(np.fft.rfft(rng.standard_normal(n_samples)) * (freqs < 1.5), n_samples)
        gust = gust / (np.abs(gust).max() + 1e-9)
        signal = signal * (1.0 + 0.8 * gust)
    if kind == "fan":
        signal = signal / (np.sqrt(np.mean(signal**2)) + 1e-12)
        blade = rng.uniform(85.0, 105.0)
        hum = sum(amp * np.sin(2 * math.pi * blade * k * t + rng.uniform(0, 2 * math.pi))
                  for k, amp in ((1, 1.4), (2, 0.8), (3, 0.5), (4, 0.3)))
        signal = (signal + hum) * (1.0 + 0.15 * np.sin(2 * math.pi * 2.0 * t))
    return (signal / (np.sqrt(np.mean(signal**2)) + 1e-12)).astype(np.float32)


@lru_cache(maxsize=32)
def noise_bed(kind: str, sample_rate: int, seconds: float, seed: int) -> np.ndarray:
    """A looping unit-RMS bed; read-only so a cached bed can never be modified by a caller."""
    bed = shaped_noise(int(seconds * sample_rate), sample_rate, kind, seed)
    bed.setflags(write=False)
    return bed


def loop_slice(bed: np.ndarray, start: int, length: int) -> np.ndarray:
    """bed[start : start + length] with wrap-around (the bed loops)."""
    size = bed.shape[0]
    start %= size
    if start + length <= size:
        return bed[start:start + length]
    return bed[(start + np.arange(length)) % size]


def _upsample_linear(coarse: np.ndarray, step: int, length: int) -> np.ndarray:
    """[..., K] values on a grid every `step` samples → [..., length] linear interpolation (K ≥ length/step + 1)."""
    fraction = np.arange(step, dtype=np.float32) / np.float32(step)
    start, slope = coarse[..., :-1], coarse[..., 1:] - coarse[..., :-1]
    fine = start[..., None] + slope[..., None] * fraction  # [..., K−1, step]
    return fine.reshape(*coarse.shape[:-1], -1)[..., :length]


def render_microphones(trajectory: Trajectory, end_sample: int, n_samples: int,
                       mic_positions: dict[str, np.ndarray], config: AudioConfig, seed: int,
                       motor_phase: float = 0.0, node_gains: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """Audio of every microphone for absolute samples [end_sample − n_samples, end_sample) at t = index / rate.

    Returns {view: float32 [n_samples]}. `seed` picks the noise beds (fixed per world), so consecutive windows
    are continuous: a bag can be written chunk by chunk. `node_gains` multiplies each microphone (jitter).
    The motor is louder in front of the car (directivity), so levels depend on heading as well as distance.
    """
    rate = config.sample_rate
    first = end_sample - n_samples
    step = 32  # delay, gain and speed change slowly: evaluate every 2 ms and interpolate
    coarse_index = first + step * np.arange(n_samples // step + 2, dtype=np.float64)
    car_xy = trajectory.position(coarse_index / rate)
    heading = trajectory.heading(coarse_index / rate)
    heading_xy = np.stack([np.cos(heading), np.sin(heading)], axis=-1)
    harmonics = np.asarray(config.harmonic_amplitudes, dtype=np.float32)
    gear_bed = noise_bed("gear", rate, config.bed_seconds, seed)
    room_bed = noise_bed("room", rate, config.bed_seconds, seed + 1)
    out = {}
    for view_number, (view, mic) in enumerate(mic_positions.items()):
        offset = car_xy - mic[:2]
        distance = np.sqrt(np.sum(offset**2, axis=-1) + (mic[2] - 0.07) ** 2)
        facing = -np.sum(offset * heading_xy, axis=-1) / np.maximum(np.linalg.norm(offset, axis=-1), 1e-6)
        level = (1.0 + config.directivity * facing) / np.maximum(distance, config.min_distance)
        level = level * (1.0 if node_gains is None else node_gains[view])
        delay_s = distance / config.speed_of_sound
        emitted_t = coarse_index / rate - delay_s  # retarded time: when the sound now arriving left the car
        cycles = config.motor_base_hz * emitted_t + config.motor_hz_per_mps * trajectory.distance(emitted_t)
        # Whole cycles are dropped in float64 before going to float32 (absolute phase reaches ~1e6 rad).
        relative_phase = 2 * math.pi * (cycles - math.floor(cycles[0])) + motor_phase
        coarse = np.stack([relative_phase, level,
                           trajectory.speed(emitted_t)]).astype(np.float32)
        phase, gain, speed = _upsample_linear(coarse, step, n_samples)
        # sin(kφ) by the Chebyshev recurrence: two transcendental calls instead of one per harmonic.
        sin1, cos1 = np.sin(phase), np.cos(phase)
        twice_cos = 2 * cos1
        previous, current = np.zeros_like(phase), sin1
        tonal = harmonics[0] * sin1
        for amplitude in harmonics[1:]:
            previous, current = current, twice_cos * current - previous
            tonal += amplitude * current
        delay_samples = int(round(float(delay_s.mean()) * rate))
        hiss = loop_slice(gear_bed, first - delay_samples, n_samples) * (np.float32(config.gear_level) * speed)
        source = np.float32(config.motor_level) * tonal + hiss
        room = loop_slice(room_bed, first + 7919 * (view_number + 1), n_samples) * np.float32(config.room_tone_level)
        out[view] = (gain * source + room).astype(np.float32)
    return out


@lru_cache(maxsize=8)
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] triangular HTK-mel filters."""
    def hz_to_mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    def mel_to_hz(mel):
        return 700.0 * (10 ** (np.asarray(mel) / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(20.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel_spectrogram(wave: np.ndarray, sample_rate: int = 16000, n_fft: int = 400, hop_length: int = 160,
                        n_mels: int = 64) -> np.ndarray:
    """[n_mels, frames] natural-log mel power of a mono waveform (Hann window, no padding)."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1 or wave.shape[0] < n_fft:
        raise ValueError(f"log_mel_spectrogram needs a 1-D waveform of at least {n_fft} samples, got {wave.shape}")
    frames = 1 + (wave.shape[0] - n_fft) // hop_length
    index = np.arange(n_fft)[None, :] + hop_length * np.arange(frames)[:, None]
    windowed = (wave - wave.mean())[index] * np.hanning(n_fft).astype(np.float32)
    power = np.abs(np.fft.rfft(windowed, axis=-1)) ** 2
    return np.log(mel_filterbank(n_fft, n_mels, sample_rate) @ power.T + 1e-10)
