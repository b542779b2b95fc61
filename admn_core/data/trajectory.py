"""Smooth RC-car laps on a rounded-rectangle track, with varying speed and lane offset.

The track centreline is a superellipse |x/a|^p + |y/b|^p = 1 (p = 4: a rounded rectangle) centred on the world
origin; the car drives it at a speed that varies smoothly in time and weaves across the lane. Everything is a
closed-form function of time, so the arc length travelled (and therefore the motor's phase, see `audio.py`) is
exact at any instant and a trajectory can be sampled anywhere without integrating from the start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from admn_core.data.errors import WorldConfigError


@dataclass(frozen=True)
class TrackConfig:
    """Track geometry in metres. Defaults make a 3.0 m × 3.6 m track (x × y) like GDTM's."""

    centre_half_extent: tuple[float, float] = (1.05, 1.35)  # centreline semi-axes along x, y
    exponent: float = 4.0
    lane_half_width: float = 0.45  # centreline ± this = the track's outer/inner edges
    max_lane_offset: float = 0.2  # how far the car weaves from the centreline (+ the car's half width ≤ the lane)
    min_speed: float = 0.3
    max_speed: float = 1.6

    def __post_init__(self) -> None:
        if self.max_lane_offset >= self.lane_half_width:
            raise WorldConfigError("track.max_lane_offset must be smaller than track.lane_half_width")
        if not 0 < self.min_speed < self.max_speed:
            raise WorldConfigError("track speeds need 0 < min_speed < max_speed")

    @property
    def outer_half_extent(self) -> tuple[float, float]:
        return (self.centre_half_extent[0] + self.lane_half_width, self.centre_half_extent[1] + self.lane_half_width)


@lru_cache(maxsize=8)
def _centreline_table(track: TrackConfig, points: int = 4096) -> tuple[np.ndarray, np.ndarray, float]:
    """(cumulative arc length [points+1], xy [points+1, 2], perimeter) of the closed centreline."""
    a, b = track.centre_half_extent
    theta = np.linspace(0.0, 2 * math.pi, points + 1)
    power = 2.0 / track.exponent
    x = a * np.sign(np.cos(theta)) * np.abs(np.cos(theta)) ** power
    y = b * np.sign(np.sin(theta)) * np.abs(np.sin(theta)) ** power
    xy = np.stack([x, y], axis=-1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=-1))])
    return arc, xy, float(arc[-1])


@dataclass(frozen=True)
class Trajectory:
    """One car's motion: arc position s(t) along the centreline plus a lateral offset ℓ(s, t).

    speed(t) = mean_speed + Σ speed_amp·sin(speed_freq·t + speed_phase)  (rad/s frequencies)
    offset(s, t) = Σ offset_amp·sin(2π·offset_harmonic·s/perimeter + offset_phase + offset_drift·t)
    """

    track: TrackConfig
    direction: int  # +1 counter-clockwise, −1 clockwise
    start_arc: float
    mean_speed: float
    speed_amp: tuple[float, ...]
    speed_freq: tuple[float, ...]
    speed_phase: tuple[float, ...]
    offset_amp: tuple[float, ...]
    offset_harmonic: tuple[int, ...]
    offset_phase: tuple[float, ...]
    offset_drift: tuple[float, ...] = field(default=(0.0,))

    @classmethod
    def random(cls, rng: np.random.Generator, track: TrackConfig | None = None) -> Trajectory:
        track = track or TrackConfig()
        span = track.max_speed - track.min_speed
        mean_speed = track.min_speed + span * rng.uniform(0.35, 0.65)
        # Amplitudes sum to less than the distance to the nearest speed limit, so speed stays in range.
        headroom = min(mean_speed - track.min_speed, track.max_speed - mean_speed)
        speed_amp = tuple(headroom * rng.dirichlet([2.0, 2.0, 2.0]) * 0.95)
        offset_amp = tuple(track.max_lane_offset * rng.dirichlet([2.0, 2.0]) * 0.95)
        _, _, perimeter = _centreline_table(track)
        return cls(
            track=track,
            direction=int(rng.choice([-1, 1])),
            start_arc=float(rng.uniform(0, perimeter)),
            mean_speed=float(mean_speed),
            speed_amp=tuple(float(v) for v in speed_amp),
            speed_freq=tuple(float(v) for v in rng.uniform(0.2, 1.5, 3)),
            speed_phase=tuple(float(v) for v in rng.uniform(0, 2 * math.pi, 3)),
            offset_amp=tuple(float(v) for v in offset_amp),
            offset_harmonic=tuple(int(v) for v in rng.integers(1, 4, 2)),
            offset_phase=tuple(float(v) for v in rng.uniform(0, 2 * math.pi, 2)),
            offset_drift=tuple(float(v) for v in rng.uniform(-0.3, 0.3, 2)),
        )

    def speed(self, t) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        speed = np.full_like(t, self.mean_speed)
        for amp, freq, phase in zip(self.speed_amp, self.speed_freq, self.speed_phase):
            speed = speed + amp * np.sin(freq * t + phase)
        return speed

    def distance(self, t) -> np.ndarray:
        """Arc length travelled since t = 0 (exact integral of `speed`)."""
        t = np.asarray(t, dtype=np.float64)
        travelled = self.mean_speed * t
        for amp, freq, phase in zip(self.speed_amp, self.speed_freq, self.speed_phase):
            travelled = travelled + amp / freq * (math.cos(phase) - np.cos(freq * t + phase))
        return travelled

    def position(self, t) -> np.ndarray:
        """[..., 2] car position (x, y) in metres at time(s) t."""
        t = np.asarray(t, dtype=np.float64)
        arc_table, xy_table, perimeter = _centreline_table(self.track)
        s = np.mod(self.start_arc + self.direction * self.distance(t), perimeter)
        centre = np.stack([np.interp(s, arc_table, xy_table[:, 0]), np.interp(s, arc_table, xy_table[:, 1])], -1)
        ahead = np.mod(s + 1e-3, perimeter)
        tangent = np.stack([np.interp(ahead, arc_table, xy_table[:, 0]),
                            np.interp(ahead, arc_table, xy_table[:, 1])], -1) - centre
        tangent /= np.maximum(np.linalg.norm(tangent, axis=-1, keepdims=True), 1e-12)
        left_normal = np.stack([-tangent[..., 1], tangent[..., 0]], axis=-1)
        offset = np.zeros_like(s)
        for amp, harmonic, phase, drift in zip(self.offset_amp, self.offset_harmonic, self.offset_phase,
                                               self.offset_drift):
            offset = offset + amp * np.sin(2 * math.pi * harmonic * s / perimeter + phase + drift * t)
        return centre + offset[..., None] * left_normal

    def heading(self, t) -> np.ndarray:
        """Yaw (radians, about +z) of the direction of travel at time(s) t."""
        t = np.asarray(t, dtype=np.float64)
        step = 0.02
        delta = self.position(t + step) - self.position(t - step)
        return np.arctan2(delta[..., 1], delta[..., 0])


@dataclass(frozen=True)
class CarState:
    """Where the car is at one instant: the ground truth of a sample."""

    position: tuple[float, float]  # metres, world frame
    heading: float  # radians
    speed: float  # m/s
    time: float  # seconds along its trajectory


def car_state(trajectory: Trajectory, t: float) -> CarState:
    x, y = trajectory.position(t)
    return CarState(position=(float(x), float(y)), heading=float(trajectory.heading(t)),
                    speed=float(trajectory.speed(t)), time=float(t))
