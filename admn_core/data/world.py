"""The simulated GDTM-like world: an indoor track, an RC car, three RGB-D + microphone nodes.

`World.generate(index, preset, seed)` returns one corrupted three-view sample and its target. Samples are
independent: each index gets its own random trajectory and instant (seeded by (seed, index)), so any subset
can be generated in any order, in parallel, and always comes out the same.

Sample (shared contract): {(view, modality): array} in sensor units — rgb uint8 [H, W, 3]; depth uint16 mm [H, W]
(z-depth, aligned to the RGB camera, 0 = no return); mic float32 [window·16000], the most recent audio.
Target: {"position": float32 [2] metres (world frame, REP-103), "heading", "speed", "time",
"corruption": {modality: label}} where a label is described in `corruption_labels`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from admn_core.data.audio import AudioConfig, render_microphones
from admn_core.data.car import CarModel, draw_car
from admn_core.data.corruptions import CorruptionContext, CorruptionPreset, CorruptionSpec, apply_corruption
from admn_core.data.corruptions.labels import CATEGORIES
from admn_core.data.corruptions.presets import get_preset
from admn_core.data.errors import WorldConfigError
from admn_core.data.geometry import PinholeCamera
from admn_core.data.scene import RoomConfig, render_background
from admn_core.data.sensors import depth_sensor, rgb_sensor, saturated_ir_frame
from admn_core.data.trajectory import CarState, TrackConfig, Trajectory, car_state

DEFAULT_VIEWS = ("node_1", "node_2", "node_3")
DEFAULT_MODALITIES = (("rgb", "rgb"), ("depth", "depth"), ("mic", "audio"))  # (modality name, sensor kind)

Sample = dict[tuple[str, str], np.ndarray]

# The official GDTM noise path: σ on the 480×270 ZED frame, then Resize(224×224) and ViT-B/16 patches (§4.3).
GDTM_NATIVE_NOISE_DRAWS_PER_PATCH = 480 * 270 / (224 * 224) * 16 * 16  # ≈ 661


def native_noise_factor(patch_size: int) -> int:
    """k such that a patch of `patch_size` image pixels averages about as many native noise draws as GDTM's."""
    return max(1, round(math.sqrt(GDTM_NATIVE_NOISE_DRAWS_PER_PATCH) / patch_size))


@dataclass(frozen=True)
class WorldConfig:
    image_size: tuple[int, int] = (64, 64)  # (H, W) of both the RGB and the aligned depth image
    horizontal_fov_deg: float = 90.0
    views: tuple[str, ...] = DEFAULT_VIEWS
    modalities: tuple[tuple[str, str], ...] = DEFAULT_MODALITIES
    window_seconds: float = 0.655  # audio per sample: tiny preset, 64 frames = 63 hops of 10 ms + one 25 ms window
    camera_rate_hz: float = 15.0  # GDTM records 15 Hz
    depth_full_scale_m: float = 10.0  # depth σ scaling (the engine's depth_max_range_m)
    depth_max_range_m: float = 9.0  # the simulated sensor's range limit
    # RGB Gaussian noise is added at the camera's native resolution, k × k native pixels per image pixel, then
    # area-resized (`gaussian_noise_rgb`). [paper-matched] The official loader adds σ to 480×270 ZED frames and
    # resizes to 224×224 for ViT-B/16: ≈ 660 native noise draws per 16×16 patch. At 64×64 with 8×8 patches, k = 3
    # gives 576. With k = 1 every σ ≥ 1 level erases the RGB (the probe's error reaches chance).
    rgb_noise_native_factor: int = 3
    node_radius_m: float = 2.7
    node_height_m: float = 1.6
    node_angles_deg: tuple[float, ...] = (-90.0, 30.0, 150.0)  # node k sits at this bearing around the origin
    max_time_s: float = 600.0  # samples pick an instant in [window, max_time] along a random trajectory
    seed: int = 0  # the room's textures, noise beds and saturated frames
    track: TrackConfig = field(default_factory=TrackConfig)
    room: RoomConfig = field(default_factory=RoomConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    car: CarModel = field(default_factory=CarModel)

    def __post_init__(self) -> None:
        height, width = self.image_size
        if height < 8 or width < 8:
            raise WorldConfigError(f"image_size must be at least 8×8, got {self.image_size}")
        if not isinstance(self.rgb_noise_native_factor, int) or self.rgb_noise_native_factor < 1:
            raise WorldConfigError(
                f"rgb_noise_native_factor must be an integer >= 1, got {self.rgb_noise_native_factor!r}")
        if len(self.node_angles_deg) != len(self.views):
            raise WorldConfigError(f"need one node angle per view: {len(self.views)} views, "
                                   f"{len(self.node_angles_deg)} angles")
        kinds = [kind for _, kind in self.modalities]
        if any(kind not in ("rgb", "depth", "audio") for kind in kinds) or len(set(kinds)) != len(kinds):
            raise WorldConfigError(
                f"modalities must map names to distinct kinds rgb/depth/audio, got {self.modalities}")
        if self.window_seconds * self.audio.sample_rate < 400:
            raise WorldConfigError("window_seconds must hold at least one 25 ms audio frame")

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.audio.sample_rate))

    @property
    def sensor_kinds(self) -> dict[str, str]:
        return dict(self.modalities)

    @classmethod
    def from_model_config(cls, model_config, **overrides) -> WorldConfig:
        """Match a ModelConfig: views, modality names/kinds, image size, audio window and depth scale."""
        specs = model_config.modalities
        views = specs[0].views
        image_specs = [s for s in specs if s.kind in ("rgb", "depth")]
        audio_specs = [s for s in specs if s.kind == "audio"]
        depth_specs = [s for s in specs if s.kind == "depth"]
        values = dict(views=views, modalities=tuple((s.name, s.kind) for s in specs),
                      node_angles_deg=tuple(-90.0 + 120.0 * i for i in range(len(views))))
        if image_specs:
            values["image_size"] = tuple(image_specs[0].input_size)
        if audio_specs:
            spec = audio_specs[0]
            window = getattr(spec, "audio_window_seconds", None) or spec.audio.window_seconds  # config API moved
            values["window_seconds"] = float(window)
            values["audio"] = AudioConfig(sample_rate=spec.audio.sample_rate)
        if depth_specs:
            values["depth_full_scale_m"] = depth_specs[0].depth_max_range_m
        camera_specs = [s for s in specs if s.kind == "rgb"]
        if camera_specs:
            values["rgb_noise_native_factor"] = native_noise_factor(camera_specs[0].patch_size)
        values.update(overrides)
        return cls(**values)


@dataclass
class CleanRender:
    sample: Sample
    scene_depth: dict[str, np.ndarray]  # {view: [H, W] float32 true z-depth in metres}, for haze
    state: CarState
    rng: np.random.Generator


class World:
    """Cameras, the pre-rendered empty room per camera, microphones and the saturated IR frames."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config = config or WorldConfig()
        height, width = config.image_size
        self.cameras: dict[str, PinholeCamera] = {}
        self.microphones: dict[str, np.ndarray] = {}
        for view, angle in zip(config.views, config.node_angles_deg):
            bearing = math.radians(angle)
            ground = np.array([config.node_radius_m * math.cos(bearing), config.node_radius_m * math.sin(bearing)])
            self.cameras[view] = PinholeCamera.look_at((*ground, config.node_height_m), (0.0, 0.0, 0.0), width, height,
                                                       config.horizontal_fov_deg)
            self.microphones[view] = np.array([*ground, config.audio.mic_height])
        self.ray_dirs = {view: cam.ray_directions() for view, cam in self.cameras.items()}
        self.backgrounds = {view: render_background(cam, config.room, config.track, seed=config.seed)
                            for view, cam in self.cameras.items()}
        self.saturated_depth = {view: saturated_ir_frame(height, width, (config.seed, 7, index))
                                for index, view in enumerate(config.views)}
        self.kind_to_name = {kind: name for name, kind in config.modalities}

    # ---------------------------------------------------------------- rendering (clean)
    def render_cameras(self, position, heading: float, light: float, rng: np.random.Generator):
        """Clean RGB + depth of every view → (partial Sample, {view: true z-depth [H, W] float32 metres})."""
        sample: Sample = {}
        scene_depth = {}
        rgb_name, depth_name = self.kind_to_name.get("rgb"), self.kind_to_name.get("depth")
        for view, camera in self.cameras.items():
            background = self.backgrounds[view]
            radiance = background.radiance * np.float32(light)
            depth_m = background.depth_m.copy()
            car_mask = np.zeros(depth_m.shape, dtype=bool)
            draw_car(radiance, depth_m, car_mask, camera, self.ray_dirs[view], background, self.config.room,
                     self.config.car, position, heading, light)
            if rgb_name:
                sample[(view, rgb_name)] = rgb_sensor(radiance, 1.0, rng)
            if depth_name:
                dropout = background.dropout_probability
                if car_mask.any():  # the car's dark tyre band and silhouette edges also lose returns
                    dropout = dropout.copy()
                    dropout[car_mask] = np.where(radiance[car_mask].mean(axis=-1) < 0.06, 0.6, 0.02)
                sample[(view, depth_name)] = depth_sensor(depth_m, dropout, rng, self.config.depth_max_range_m)
            scene_depth[view] = depth_m
        return sample, scene_depth

    def node_gains(self, rng: np.random.Generator) -> dict[str, float]:
        jitter = self.config.audio.node_gain_jitter_db
        return {view: float(10 ** (rng.uniform(-jitter, jitter) / 20)) for view in self.config.views}

    def render_audio(self, trajectory: Trajectory, end_time: float, motor_phase: float = 0.0,
                     node_gains: dict[str, float] | None = None, n_samples: int | None = None) -> Sample:
        """Clean microphone windows ending at `end_time` (seconds along the trajectory)."""
        name = self.kind_to_name.get("audio")
        if name is None:
            return {}
        rate = self.config.audio.sample_rate
        waves = render_microphones(trajectory, int(round(end_time * rate)), n_samples or self.config.window_samples,
                                   self.microphones, self.config.audio, seed=self.config.seed + 11,
                                   motor_phase=motor_phase, node_gains=node_gains)
        return {(view, name): wave for view, wave in waves.items()}

    # ---------------------------------------------------------------- corruption
    def corruption_context(self, view: str, scene_depth: dict[str, np.ndarray] | None) -> CorruptionContext:
        return CorruptionContext(
            depth_full_scale_mm=self.config.depth_full_scale_m * 1000.0,
            rgb_noise_native_factor=self.config.rgb_noise_native_factor,
            reference_rms=self.config.audio.reference_rms,
            sample_rate=self.config.audio.sample_rate,
            scene_depth_m=None if scene_depth is None else scene_depth.get(view),
            saturated_depth=self.saturated_depth.get(view))

    def corrupt(self, sample: Sample, plan: dict[tuple[str, str], CorruptionSpec], rng: np.random.Generator,
                scene_depth: dict[str, np.ndarray] | None = None) -> Sample:
        """Apply `plan` ({(view, modality): spec}) to every array; each array gets an independent noise draw."""
        kinds = self.config.sensor_kinds
        out = {}
        for key, array in sample.items():
            spec = plan.get(key)
            if spec is None or spec.category == "clean":
                out[key] = array
                continue
            view, modality = key
            child = np.random.default_rng(rng.integers(0, 2**63))
            out[key] = apply_corruption(spec, kinds[modality], array, child,
                                        self.corruption_context(view, scene_depth))
        return out

    def corruption_labels(self, plan: dict[tuple[str, str], CorruptionSpec]) -> dict[str, dict]:
        """Per modality: the most severe view's category/severity/value, plus per-view arrays (views order).

        {modality: {"category": str, "category_id": int, "severity": int, "value": float32,
                    "view_category_id": int64 [V], "view_severity": int64 [V], "view_value": float32 [V]}}
        """
        labels = {}
        for modality, _ in self.config.modalities:
            specs = [plan.get((view, modality), CorruptionSpec()) for view in self.config.views]
            worst = max(specs, key=lambda spec: spec.severity)
            labels[modality] = {
                "category": worst.category,
                "category_id": worst.category_id,
                "severity": worst.severity,
                "value": np.float32(worst.value),
                "view_category_id": np.array([s.category_id for s in specs], dtype=np.int64),
                "view_severity": np.array([s.severity for s in specs], dtype=np.int64),
                "view_value": np.array([s.value for s in specs], dtype=np.float32),
            }
        return labels

    # ---------------------------------------------------------------- samples
    def random_moment(self, rng: np.random.Generator) -> tuple[Trajectory, CarState, float]:
        trajectory = Trajectory.random(rng, self.config.track)
        t = float(rng.uniform(self.config.window_seconds + 0.1, self.config.max_time_s))
        return trajectory, car_state(trajectory, t), float(rng.uniform(0.85, 1.1))

    def render_clean(self, index: int, seed: int = 0) -> CleanRender:
        """The uncorrupted sample `index`; its generator continues into the corruption draw of `generate`."""
        if index < 0:
            raise WorldConfigError(f"sample index must be >= 0, got {index}")
        rng = np.random.default_rng([seed, index])
        trajectory, state, light = self.random_moment(rng)
        sample, scene_depth = self.render_cameras(state.position, state.heading, light, rng)
        sample.update(self.render_audio(trajectory, state.time, motor_phase=float(rng.uniform(0, 2 * math.pi)),
                                        node_gains=self.node_gains(rng)))
        return CleanRender(sample=sample, scene_depth=scene_depth, state=state, rng=rng)

    def generate(self, index: int, preset: CorruptionPreset | str = "clean", seed: int = 0,
                 plan: dict[tuple[str, str], CorruptionSpec] | None = None,
                 redraw: int | None = None) -> tuple[Sample, dict]:
        """Sample `index` of the dataset (seed, preset): deterministic, independent of other indices.

        `plan` overrides the preset's draw (e.g. to show one condition on a contact sheet). `redraw` = k keeps the
        car and the clean render of (seed, index) but draws the corruption (condition and noise) from
        (seed, index, k) instead of continuing the render's generator: a new corruption per training epoch.
        """
        preset = get_preset(preset) if isinstance(preset, str) else preset
        clean = self.render_clean(index, seed)
        rng = clean.rng if redraw is None else np.random.default_rng([seed, index, redraw, 1])
        drawn = preset.draw(rng, self.config.sensor_kinds, self.config.views)
        plan = drawn if plan is None else plan
        sample = self.corrupt(clean.sample, plan, rng, clean.scene_depth)
        return {key: sample[key] for key in self.sample_keys if key in sample}, self.target(clean.state, plan)

    def target(self, state: CarState, plan: dict[tuple[str, str], CorruptionSpec]) -> dict:
        return {
            "position": np.asarray(state.position, dtype=np.float32),
            "heading": np.float32(state.heading),
            "speed": np.float32(state.speed),
            "time": np.float32(state.time),
            "corruption": self.corruption_labels(plan),
        }

    @property
    def sample_keys(self) -> tuple[tuple[str, str], ...]:
        """(view, modality) keys in token order: modality-major, then view (as ModelConfig.sensor_keys)."""
        return tuple((view, name) for name, _ in self.config.modalities for view in self.config.views)

    def array_spec(self, modality: str) -> tuple[tuple[int, ...], np.dtype]:
        kind = self.config.sensor_kinds[modality]
        height, width = self.config.image_size
        if kind == "rgb":
            return (height, width, 3), np.dtype(np.uint8)
        if kind == "depth":
            return (height, width), np.dtype(np.uint16)
        return (self.config.window_samples,), np.dtype(np.float32)


__all__ = ["CATEGORIES", "DEFAULT_MODALITIES", "DEFAULT_VIEWS", "Sample", "World", "WorldConfig"]
