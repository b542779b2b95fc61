"""Typed configuration: modality specs and the model config, with strict dict/YAML round trips.

Every shape in the network is derived from these dataclasses, so nothing downstream hard-codes
"12 layers", "2 modalities" or "768 wide" (the official code's main source of drift).
Unknown keys are rejected with the closest valid name, so a typo in a YAML file is an error, not a default.
Every size is bounded to a plausible range (the MAX_* limits) before anything is built from it: a config read from
a file (a bundle's metadata) cannot ask for a million blocks or a billion-wide layer, and JSON is parsed with
bounded size and nesting (`parse_json`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCKS_PER_BACKBONE = 12

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# AudioMAE's log-mel normalisation constants (AudioSet statistics), used as the audio default.
AUDIOSET_MEAN = (-4.2677393,)
AUDIOSET_STD = (4.5689974,)
READOUTS = ("cls", "mean", "grid")  # ModalitySpec.readout
FUSION_POOLINGS = ("mean", "flatten")  # FusionSpec.pooling

# Plausible ranges for every size (inclusive). Generous for real models (ViT-g is 40 blocks, 1408 wide, 16 heads;
# AudioMAE's input is 128 × 1024), small enough that no accepted config asks for an unbounded build.
MAX_BLOCKS = 64  # per backbone, fusion transformer and controller encoder
MAX_WIDTH = 8192  # embedding widths, hidden sizes, per-head sizes
MAX_HEADS = 256
MAX_SIDE = 8192  # input and controller-input height/width, patch and kernel sizes
MAX_CHANNELS = 64
MAX_VIEWS = 64
MAX_MODALITIES = 16
MAX_FRAMES = 256  # frames per view of a multi-frame modality (AVE: 8, MM-Fi: 15)
MAX_OUTPUTS = 100_000  # classes of a classification head, corruption outputs of a controller
MAX_JSON_CHARS = 1 << 20  # a paper-size config is ~3 kB
MAX_JSON_DEPTH = 32  # a config nests 4 levels deep


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the offending field."""


def check_ranges(owner: str, values: dict[str, Any], ranges: dict[str, tuple[float, float]]) -> None:
    """Each named value (every element of a tuple value) in its inclusive [low, high]; NaN is never in range."""
    for name, (low, high) in ranges.items():
        value = values[name]
        if not all(low <= item <= high for item in (value if isinstance(value, tuple) else (value,))):
            raise ConfigError(f"{owner}{name} must be in [{low}, {high}], got {reprlib.repr(value)}")


def parse_json(text: str, where: str) -> Any:
    """json.loads of at most MAX_JSON_CHARS characters nested at most MAX_JSON_DEPTH deep (json.loads itself
    recurses per level and raises RecursionError on deep nesting); any problem → ConfigError naming `where`."""
    if not isinstance(text, str):
        raise ConfigError(f"{where}: expected JSON text, got {type(text).__name__}")
    if len(text) > MAX_JSON_CHARS:
        raise ConfigError(f"{where}: JSON of {len(text)} characters exceeds the limit of {MAX_JSON_CHARS}")
    depth = 0
    for token in _JSON_STRING_OR_BRACKET.findall(text):  # whole strings are matched, so their brackets don't count
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(token, 0)
        if depth > MAX_JSON_DEPTH:
            raise ConfigError(f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or an integer literal beyond Python's digit limit
        raise ConfigError(f"{where}: not valid JSON: {exc}") from None


_JSON_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


@dataclass(frozen=True)
class AudioFrontend:
    """Waveform → log-mel spectrogram, computed by the engine (never by ROS code)."""

    sample_rate: int = 16000
    n_fft: int = 400  # 25 ms at 16 kHz, as AudioMAE's Kaldi fbank
    hop_length: int = 160  # 10 ms
    n_mels: int = 128

    def __post_init__(self) -> None:
        check_ranges("audio.", vars(self), {"sample_rate": (1, 384_000), "n_fft": (1, 1 << 16),
                                            "hop_length": (1, 1 << 16), "n_mels": (1, MAX_SIDE)})


@dataclass(frozen=True)
class ModalitySpec:
    """One sensor modality: its backbone and how raw sensor arrays become backbone input.

    `views` share this modality's backbone weights and its layer mask (GDTM: three sensor nodes).
    `input_size` is (H, W) of the backbone input; for audio it is (mel bins, frames).
    """

    name: str
    kind: str  # "rgb" | "depth" | "audio"
    views: tuple[str, ...]
    channels: int
    input_size: tuple[int, int]
    patch_size: int
    embed_dim: int
    num_heads: int
    depth: int = BLOCKS_PER_BACKBONE
    mlp_ratio: float = 4.0
    norm_mean: tuple[float, ...] = IMAGENET_MEAN
    norm_std: tuple[float, ...] = IMAGENET_STD
    layer_cost: int = 1  # budget units per block of this modality (paper Table 4: unequal costs)
    trainable_last_blocks: int = 1  # Stage-1 freezing: all backbone parameters but the last N blocks
    depth_max_range_m: float = 10.0  # depth: metres mapped to 1.0 after clipping
    audio: AudioFrontend | None = None
    controller_input_size: tuple[int, int] = (100, 100)  # QoI stem resize (official 100×100, audio 128×512)
    # Backbone embedding: "cls" = the CLS token after the final norm (official ADMN); "mean" = the final norm of
    # the mean patch token (MAE's fine-tuning default, `global_pool`); "grid" (ours) = the normed patch tokens
    # averaged over a readout_grid × readout_grid grid of image regions, concatenated and projected by one
    # Linear(G²·D → D): coarse *where* is given, fine position must still come from the blocks (README, training).
    readout: str = "cls"
    readout_grid: int = 4
    # Images per view per sample (AVE: 8 frames of a clip). Every frame runs through this modality's backbone with
    # the sample's one layer mask (official: the mask repeat-interleaved over frames); frame features are averaged
    # into one fusion token per view, and block costs scale with the frame count.
    frames: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("rgb", "depth", "audio"):
            raise ConfigError(f"modality {self.name!r}: kind must be rgb, depth or audio, got {self.kind!r}")
        if not self.views:
            raise ConfigError(f"modality {self.name!r}: needs at least one view")
        if len(self.views) > MAX_VIEWS:
            raise ConfigError(f"modality {self.name!r}: views: at most {MAX_VIEWS} views, got {len(self.views)}")
        check_ranges(f"modality {self.name!r}: ", vars(self), {
            "channels": (1, MAX_CHANNELS), "input_size": (1, MAX_SIDE), "patch_size": (1, MAX_SIDE),
            "embed_dim": (1, MAX_WIDTH), "num_heads": (1, MAX_HEADS), "depth": (1, MAX_BLOCKS),
            "mlp_ratio": (0.25, 64.0), "norm_mean": (-1e6, 1e6), "norm_std": (1e-6, 1e6), "layer_cost": (1, 1000),
            "depth_max_range_m": (1e-3, 1e4), "controller_input_size": (1, MAX_SIDE), "readout_grid": (1, MAX_SIDE),
            "frames": (1, MAX_FRAMES)})
        if self.kind == "audio" and self.frames != 1:
            raise ConfigError(f"modality {self.name!r}: an audio modality is one spectrogram per view (frames 1), "
                              f"got frames {self.frames}")
        if len(set(self.views)) != len(self.views):
            raise ConfigError(f"modality {self.name!r}: duplicate view names {self.views}")
        height, width = self.input_size
        if height % self.patch_size or width % self.patch_size:
            raise ConfigError(
                f"modality {self.name!r}: input_size {self.input_size} is not divisible by "
                f"patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"modality {self.name!r}: embed_dim {self.embed_dim} not divisible by num_heads {self.num_heads}")
        if len(self.norm_mean) != self.channels or len(self.norm_std) != self.channels:
            raise ConfigError(f"modality {self.name!r}: norm_mean/norm_std need {self.channels} values")
        if self.readout not in READOUTS:
            raise ConfigError(f"modality {self.name!r}: readout must be one of {READOUTS}, got {self.readout!r}")
        if self.readout == "grid" and not 1 <= self.readout_grid <= min(height, width) // self.patch_size:
            raise ConfigError(f"modality {self.name!r}: readout_grid must be in [1, patches per side "
                              f"{min(height, width) // self.patch_size}], got {self.readout_grid}")
        if not 0 <= self.trainable_last_blocks <= self.depth:
            raise ConfigError(f"modality {self.name!r}: trainable_last_blocks must be in [0, {self.depth}]")
        if self.kind == "audio" and self.audio is None:
            raise ConfigError(f"modality {self.name!r}: audio modality needs an `audio` frontend")
        if self.kind == "audio" and self.audio is not None and self.audio.n_mels != height:
            raise ConfigError(
                f"modality {self.name!r}: audio.n_mels {self.audio.n_mels} must equal input_size[0] {height}")

    @property
    def num_patches(self) -> int:
        return (self.input_size[0] // self.patch_size) * (self.input_size[1] // self.patch_size)

    @property
    def num_tokens(self) -> int:
        return self.num_patches + 1  # + CLS

    @property
    def images_per_sample(self) -> int:
        """Backbone inputs per sample: views × frames (the second axis of this modality's [B, V·T, C, H, W])."""
        return len(self.views) * self.frames

    @property
    def audio_window_samples(self) -> int:
        """Samples of the most recent audio that fill exactly input_size[1] spectrogram frames (no centring)."""
        if self.audio is None:
            raise ConfigError(f"modality {self.name!r} has no audio frontend")
        return (self.input_size[1] - 1) * self.audio.hop_length + self.audio.n_fft

    @property
    def audio_window_seconds(self) -> float:
        return self.audio_window_samples / self.audio.sample_rate


@dataclass(frozen=True)
class FusionSpec:
    """Fusion transformer over one token per (modality, view); official: 256-d, 6 layers, 4 heads, MLP 3×."""

    adapter_hidden: int = 512
    dim: int = 256
    depth: int = 6
    heads: int = 4
    dim_head: int = 64
    mlp_dim: int = 768
    # Fusion output → one vector: "mean" over tokens (official) or "flatten" (ours): the tokens concatenated in
    # their fixed (modality, view) order and projected by Linear(T·dim → dim), so which view saw what stays
    # explicit instead of having to be learnt through the positional encoding (see the README's training notes).
    pooling: str = "mean"

    def __post_init__(self) -> None:
        check_ranges("fusion.", vars(self), {
            "adapter_hidden": (1, MAX_WIDTH), "dim": (1, MAX_WIDTH), "depth": (1, MAX_BLOCKS),
            "heads": (1, MAX_HEADS), "dim_head": (1, MAX_WIDTH), "mlp_dim": (1, MAX_WIDTH)})
        if self.pooling not in FUSION_POOLINGS:
            raise ConfigError(f"fusion.pooling must be one of {FUSION_POOLINGS}, got {self.pooling!r}")


@dataclass(frozen=True)
class HeadSpec:
    """Task head. Localization predicts a 2-D Gaussian in `position_unit_m` units (paper: centimetres)."""

    task: str = "localization"  # "localization" | "classification"
    num_classes: int = 0
    position_unit_m: float = 0.01  # model units → metres; the paper trains in cm (NLL and the 1 cm² floor depend on it)
    mean_center: tuple[float, float] = (0.0, 0.0)  # model units; mean = center + tanh-like bound × half_range
    mean_half_range: tuple[float, float] = (200.0, 200.0)  # official: ±200 cm
    min_variance: float = 1.0  # cov = L Lᵀ + min_variance·I (official: + I in cm²)
    distance_weight: float = 0.05  # loss = NLL + weight · Euclidean distance (official)
    # Cholesky factor L = covariance_scale · [[softplus(a), 0], [c, softplus(b)]] (official: 1). In cm a fresh head
    # predicts σ ≈ 0.7 cm for errors of ~130 cm, and the NLL then spends the early steps growing σ instead of moving
    # the mean; a scale of the order of the expected error starts σ there (ours; see the README's training notes).
    covariance_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.task not in ("localization", "classification"):
            raise ConfigError(f"head.task must be localization or classification, got {self.task!r}")
        check_ranges("head.", vars(self), {
            "num_classes": (0, MAX_OUTPUTS), "position_unit_m": (1e-6, 1e3), "mean_center": (-1e9, 1e9),
            "mean_half_range": (1e-6, 1e9), "min_variance": (0.0, 1e9), "distance_weight": (0.0, 1e6),
            "covariance_scale": (1e-6, 1e6)})
        if self.task == "classification" and self.num_classes < 2:
            raise ConfigError("head.num_classes must be >= 2 for classification")


@dataclass(frozen=True)
class ControllerSpec:
    """QoI controller (official GDTM `ConvLayerController`): conv stems → CLS + TE → layer-logit MLP."""

    stem_channels: int = 6
    stem_kernels: tuple[int, int, int] = (10, 10, 5)
    stem_pool: int = 3
    embed_dim: int = 256
    depth: int = 4
    heads: int = 4
    dim_head: int = 64
    mlp_dim: int = 1024
    logit_hidden: int = 200
    logit_init_range: float = 0.005  # U(±0.005): initial logits nearly uniform (official)
    gumbel_scale: float = 0.1  # official code scales the Gumbel noise by 0.1 (not in the paper)
    temperature: float = 1.0

    def __post_init__(self) -> None:
        check_ranges("controller.", vars(self), {
            "stem_channels": (1, 1024), "stem_kernels": (1, MAX_SIDE), "stem_pool": (1, MAX_SIDE),
            "embed_dim": (1, MAX_WIDTH), "depth": (1, MAX_BLOCKS), "heads": (1, MAX_HEADS), "dim_head": (1, MAX_WIDTH),
            "mlp_dim": (1, MAX_WIDTH), "logit_hidden": (1, MAX_WIDTH), "logit_init_range": (0.0, 10.0),
            "gumbel_scale": (0.0, 100.0), "temperature": (1e-6, 1e6)})


@dataclass(frozen=True)
class LayerDropSpec:
    """Stage-1 LayerDrop (official): rate ramps by `step` on every epoch where epoch % every == every-1."""

    max_rate: float = 0.2
    step: float = 0.1
    every_epochs: int = 10
    full_backbone_drop: float = 0.1  # per modality per batch: keep only block 0
    per_sample: bool = False  # official: one mask per modality per batch, shared by every sample and view

    def __post_init__(self) -> None:
        check_ranges("layerdrop.", vars(self), {"max_rate": (0.0, 1.0), "step": (0.0, 1.0),
                                                "every_epochs": (1, 1_000_000), "full_backbone_drop": (0.0, 1.0)})

    def rate_at(self, epoch: int) -> float:
        return min(self.max_rate, self.step * ((epoch + 1) // self.every_epochs))


@dataclass(frozen=True)
class ModelConfig:
    name: str
    modalities: tuple[ModalitySpec, ...]
    fusion: FusionSpec = field(default_factory=FusionSpec)
    head: HeadSpec = field(default_factory=HeadSpec)
    controller: ControllerSpec = field(default_factory=ControllerSpec)
    layerdrop: LayerDropSpec = field(default_factory=LayerDropSpec)

    def __post_init__(self) -> None:
        names = [spec.name for spec in self.modalities]
        if not names:
            raise ConfigError("a model needs at least one modality")
        if len(names) > MAX_MODALITIES:
            raise ConfigError(f"at most {MAX_MODALITIES} modalities, got {len(names)}")
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate modality names: {names}")
        depths = {spec.depth for spec in self.modalities}
        if len(depths) != 1:
            # The controller emits one [M, depth] mask; mixed depths would need ragged masks.
            raise ConfigError(f"every modality backbone must have the same depth, got {sorted(depths)}")

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.modalities)

    @property
    def blocks_per_backbone(self) -> int:
        return self.modalities[0].depth

    @property
    def num_fusion_tokens(self) -> int:
        """One fusion token per (modality, view)."""
        return sum(len(spec.views) for spec in self.modalities)

    def modality(self, name: str) -> ModalitySpec:
        for spec in self.modalities:
            if spec.name == name:
                return spec
        raise KeyError(f"no modality named {name!r}; the model has {self.modality_names}")

    @property
    def sensor_keys(self) -> tuple[tuple[str, str], ...]:
        """Sample keys (view, modality) in token order: modality-major, then view (official order)."""
        return tuple((view, spec.name) for spec in self.modalities for view in spec.views)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return _from_plain(cls, data, "model")

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(parse_json(text, "config"))


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    return value


def _from_plain(cls: type, data: Any, where: str) -> Any:
    """Build dataclass `cls` from plain data, rejecting unknown keys with a did-you-mean hint."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}; valid keys: {sorted(known)}")
    kwargs = {key: _coerce(hints[key], value, f"{where}.{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ConfigError) as exc:  # a required key is missing, or a value out of range
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(non_none[0], value, where)
    if dataclasses.is_dataclass(hint):
        return _from_plain(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        number = float(value) if abs(value) < 1e308 else math.inf  # float(10**400) would raise OverflowError
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {reprlib.repr(value)}")
        return number
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def merge_overrides(base: dict, override: dict, where: str) -> dict:
    """`base` with `override`'s keys replaced, recursively; an unknown key is a ConfigError naming the closest."""
    merged = dict(base)
    for key, value in override.items():
        if key not in base:
            close = difflib.get_close_matches(str(key), list(base), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
        if isinstance(value, dict) and isinstance(base[key], dict):
            merged[key] = merge_overrides(base[key], value, f"{where}.{key}")
        else:
            merged[key] = value
    return merged


def save_model_config(config: ModelConfig, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
