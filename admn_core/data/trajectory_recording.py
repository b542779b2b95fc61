"""One world trajectory recorded over time: what `admn world-bag` writes, and the training samples it stands for.

`TrajectoryRecording(world, duration_s, seed, camera_rate_hz, episodes)` drives one random trajectory (seeded by
`seed`) for `duration_s` with corruption episodes. `frames()` renders the camera and depth frames at the camera rate
(their corruption plan and the car's state with each); `audio()` then renders every microphone continuously over the
whole duration, corrupted per audio episode. The two draw from one generator in that order, so a recording is the same
wherever it is consumed: the bag writer serialises it, `trajectory_samples` turns it into training samples.

`trajectory_samples(recording)` gives, per frame, the sample and target the frame pipeline forms from the bag:
camera and depth as rendered, and per microphone the window ending at the newest audio chunk stamped at or before
the frame (zeros where no audio was recorded yet), the rule of admn_ros.msgs.audio.AudioRingBuffer. A cache of these
samples and one built from the written bag through admn_node's pipeline are the same bit for bit
(test/test_train_from_bags.py): train/serve parity by construction.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from admn_core.data.corruptions import CorruptionSpec, apply_corruption
from admn_core.data.trajectory import CarState, Trajectory, car_state
from admn_core.data.world import Sample, World

AUDIO_CHUNK = 320  # samples per audio message: 20 ms at 16 kHz
TRAJECTORY_OFFSET_S = 2.0  # recording time 0 = this instant along the trajectory (so audio history exists)


@dataclass(frozen=True)
class Episode:
    """A corruption active on [start_s, end_s) of recording time for one sensor kind on some views (None = all).

    With `ramp`, the strength follows a trapezoid (30 % rise, hold, 30 % fall): lowlight gamma goes 1 → peak
    geometrically (lights dimming), rain intensity 0 → peak. Other categories switch on and off.
    """

    start_s: float
    end_s: float
    kind: str  # rgb | depth | audio
    category: str
    peak: float
    views: tuple[str, ...] | None = None
    ramp: bool = False
    description: str = ""

    def strength(self, t: float) -> float:
        if not self.start_s <= t < self.end_s:
            return 0.0
        if not self.ramp:
            return 1.0
        phase = (t - self.start_s) / (self.end_s - self.start_s)
        return min(1.0, phase / 0.3, (1.0 - phase) / 0.3)

    def spec_at(self, t: float) -> CorruptionSpec | None:
        strength = self.strength(t)
        if strength <= 0:
            return None
        if self.category == "lowlight":
            gamma = self.peak ** strength
            return None if gamma < 1.5 else CorruptionSpec("lowlight", 1 if gamma < 20 else 2, gamma)
        if self.category == "rain":
            return CorruptionSpec("rain", 1, max(0.05, self.peak * strength))
        severity = 2 if self.category == "blur" and self.peak > 100 else 1
        return CorruptionSpec(self.category, severity, self.peak)


def default_episodes(duration_s: float, views: tuple[str, ...]) -> tuple[Episode, ...]:
    first, second, third = (views + views + views)[:3]
    d = duration_s
    return (
        Episode(0.12 * d, 0.40 * d, "rgb", "lowlight", 100.0, ramp=True, description="lights dimming"),
        Episode(0.45 * d, 0.50 * d, "rgb", "blur", 51, (first,), description="blur burst (k 51)"),
        Episode(0.52 * d, 0.55 * d, "rgb", "blur", 201, (third,), description="blur burst (k 201)"),
        Episode(0.60 * d, 0.78 * d, "rgb", "rain", 1.0, ramp=True, description="rain"),
        Episode(0.80 * d, 0.88 * d, "depth", "dropout", 1.0, (third,), description="depth sensor dropout"),
        Episode(0.55 * d, 0.95 * d, "audio", "fan", -10.0, (second,), description="microphone going noisy"),
    )


def active_plan(world: World, episodes, t: float, kinds: tuple[str, ...]) -> dict[tuple[str, str], CorruptionSpec]:
    """{(view, modality): spec} of the episodes of `kinds` active at recording time `t`."""
    plan = {}
    for episode in episodes:
        if episode.kind not in kinds or episode.kind not in world.kind_to_name:
            continue
        spec = episode.spec_at(t)
        if spec is None:
            continue
        modality = world.kind_to_name[episode.kind]
        for view in episode.views or world.config.views:
            plan[(view, modality)] = spec
    return plan


@dataclass
class RecordedFrame:
    t_s: float  # recording time
    state: CarState
    sample: Sample  # camera and depth of every view (no audio)
    plan: dict  # {(view, modality): CorruptionSpec} active at t_s, audio included


class TrajectoryRecording:
    def __init__(self, world: World, duration_s: float, seed: int = 0, camera_rate_hz: float | None = None,
                 episodes: tuple[Episode, ...] | None = None):
        self.world, self.duration_s = world, duration_s
        self.camera_rate_hz = camera_rate_hz or world.config.camera_rate_hz
        self.episodes = default_episodes(duration_s, world.config.views) if episodes is None else episodes
        self.rng = np.random.default_rng([seed, 2**31])
        self.trajectory = Trajectory.random(self.rng, world.config.track)
        self.frame_count = int(math.floor(duration_s * self.camera_rate_hz))
        self.audio_samples = int(math.floor(duration_s * world.config.audio.sample_rate / AUDIO_CHUNK)) * AUDIO_CHUNK
        self._frames_done = False

    def frames(self) -> Iterator[RecordedFrame]:
        """Every camera frame in time order (call once, before `audio`)."""
        world = self.world
        for frame in range(self.frame_count):
            t = frame / self.camera_rate_hz
            state = car_state(self.trajectory, TRAJECTORY_OFFSET_S + t)
            sample, scene_depth = world.render_cameras(state.position, state.heading, 1.0, self.rng)
            plan = active_plan(world, self.episodes, t, ("rgb", "depth"))
            sample = world.corrupt(sample, plan, self.rng, scene_depth)
            yield RecordedFrame(t, state, sample, {**plan, **active_plan(world, self.episodes, t, ("audio",))})
        self._frames_done = True

    def audio(self) -> dict[tuple[str, str], np.ndarray]:
        """{(view, microphone): float32 [audio_samples]} over the whole recording (after `frames`)."""
        if not self._frames_done:
            raise RuntimeError("render the frames first: audio draws from the generator after them")
        world, name = self.world, self.world.kind_to_name.get("audio")
        if name is None:
            return {}
        sample_rate = world.config.audio.sample_rate
        gains = world.node_gains(self.rng)
        offset_samples = int(round(TRAJECTORY_OFFSET_S * sample_rate))
        audio = world.render_audio(self.trajectory, (offset_samples + self.audio_samples) / sample_rate,
                                   node_gains=gains, n_samples=self.audio_samples)
        for episode in self.episodes:
            if episode.kind != "audio":
                continue
            first, last = (int(round(s * sample_rate)) for s in (episode.start_s, min(episode.end_s, self.duration_s)))
            for view in episode.views or world.config.views:
                segment = audio[(view, name)][first:last]
                if segment.size:
                    audio[(view, name)][first:last] = apply_corruption(
                        episode.spec_at(episode.start_s), "audio", segment, self.rng,
                        world.corruption_context(view, None))
        return audio

    def chunk_end_s(self, chunk: int) -> float:
        """Recording time of chunk `chunk`'s last sample (its stamp)."""
        return ((chunk + 1) * AUDIO_CHUNK - 1) / self.world.config.audio.sample_rate


def trajectory_samples(recording: TrajectoryRecording, start_time_s: float) -> Iterator[tuple[Sample, dict]]:
    """(sample, target) per frame as the frame pipeline forms them from the bag written with `start_time_s`:
    target = {"position", "heading", "speed", "time", "plan"}. Renders the whole recording."""
    frames = list(recording.frames())
    audio = recording.audio()
    window = recording.world.config.window_samples
    chunks = recording.audio_samples // AUDIO_CHUNK
    # Stamps as the bag holds them (integer ns of the same float expressions) decide which chunk is the newest.
    chunk_stamps = [stamp_ns(start_time_s + recording.chunk_end_s(chunk)) for chunk in range(chunks)]
    first_stamp = stamp_ns(start_time_s)
    for frame in frames:
        sample = dict(frame.sample)
        frame_stamp = stamp_ns(start_time_s + frame.t_s)
        newest = int(np.searchsorted(chunk_stamps, frame_stamp, side="right")) - 1
        end = (newest + 1) * AUDIO_CHUNK  # one past the newest chunk's last sample; 0 when none yet
        for key, wave in audio.items():
            samples = np.zeros(window, np.float32)
            available = wave[max(0, end - window):end]
            samples[window - available.size:] = available
            sample[key] = samples
        # time: since the first frame, from the integer stamps (as the bag dataset measures it)
        target = {"position": np.asarray(frame.state.position, np.float32), "heading": frame.state.heading,
                  "speed": frame.state.speed, "time": (frame_stamp - first_stamp) / 1e9, "plan": frame.plan}
        yield sample, target


def stamp_ns(seconds: float) -> int:
    return int(round(seconds * 1e9))
