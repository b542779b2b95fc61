"""A dataset folder → training, validation and test sets shaped for a model config, with corruptions applied.

`open_split(dataset, root, split, config)` builds the reader from the config (frames, the audio window, view names)
and checks that the reader and the config agree; `CorruptedSplit` corrupts its samples with a world corruption
preset, levels relative to the data: image noise on the [0, 1] scale, depth noise on the model's depth range, audio
noise at an SNR against the clean training audio's RMS (`reference_audio_rms`). Targets gain the world's
`corruption` labels, so controller supervision (CorruptionTargets) works on a dataset as on the world.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from admn_core.config import ConfigError, ModelConfig
from admn_core.data.corruptions import CLEAN, CorruptionContext, CorruptionSpec, apply_corruption, get_preset
from admn_core.data.corruptions.audio_noise import signal_rms
from admn_core.data.errors import DatasetFileError

logger = logging.getLogger(__name__)

DATASETS = ("ave", "mmfi", "gdtm")
# Categories whose corruption needs something only the simulated world has (its sunlight-saturated IR frame).
WORLD_ONLY_CATEGORIES = {"saturation"}


def dataset_classes(dataset: str, root: str | Path, classes: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The class names of a classification dataset: `classes` if given, else the dataset's own list."""
    if classes:
        return tuple(classes)
    if dataset == "ave":
        from admn_core.data.readers.ave import dataset_classes as ave_classes

        return ave_classes(Path(root))
    if dataset == "mmfi":
        from admn_core.data.readers.mmfi import MMFI_ACTIONS

        return MMFI_ACTIONS
    if dataset == "cache":  # a sample cache records indices only: the classes are named by them, 0 .. max
        from admn_core.data.cache import WorldCache

        return tuple(str(index) for index in range(int(WorldCache(root).class_labels().max()) + 1))
    raise ConfigError(f"dataset {dataset!r} has no classes (it is not a classification dataset)")


def open_split(dataset: str, root: str | Path, split: str, config: ModelConfig, classes: tuple[str, ...] = (),
               audio_anchor: str = "event", seed: int = 0):
    """The reader of `split` with the config's frames, audio window and views; raises ConfigError on a mismatch."""
    if dataset == "ave":
        from admn_core.data.readers.ave import AVEReader

        rgb, audio = _modality(config, "rgb", dataset), _modality(config, "audio", dataset)
        reader = AVEReader(root, split=split, frames=rgb.frames, sample_rate=audio.audio.sample_rate,
                           view=rgb.views[0], classes=classes or None, audio_seconds=audio.audio_window_seconds,
                           audio_anchor=audio_anchor)
    elif dataset == "mmfi":
        from admn_core.data.readers.mmfi import MMFiReader

        specs = [_modality(config, name, dataset) for name in config.modality_names]
        frames = {spec.frames for spec in specs}
        if len(frames) != 1:
            raise ConfigError(f"MM-Fi reads the same frames of every modality; the config has frames {frames}")
        stride = 2  # official: a 30-frame window subsampled by 2
        reader = MMFiReader(root, split=split, modalities=config.modality_names, window=frames.pop() * stride,
                            stride=stride, seed=seed, view=specs[0].views[0],
                            **({"classes": tuple(classes)} if classes else {}))
    elif dataset == "gdtm":
        from admn_core.data.readers.gdtm import GDTMReader

        mic = next((spec for spec in config.modalities if spec.kind == "audio"), None)
        reader = GDTMReader(Path(root) / split, views=config.modalities[0].views,
                            mic_source="mic_waveform" if mic is not None else None,
                            depth_source="zed_camera_depth" if "depth" in config.modality_names else None,
                            **({"window_seconds": mic.audio_window_seconds} if mic is not None else {}))
    else:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    check_reader_matches(config, reader[0][0] if len(reader) else {}, f"{dataset} {split}")
    return reader


def _modality(config: ModelConfig, name: str, dataset: str):
    try:
        return config.modality(name)
    except KeyError:
        raise ConfigError(f"preset {config.name!r} has no modality {name!r}, which the {dataset} reader yields; "
                          f"use a preset made for it (admn_core.presets.DATASET_PRESETS)") from None


def check_reader_matches(config: ModelConfig, sample: dict, where: str) -> None:
    """Every (view, modality) of the config is in the reader's sample, with the config's frame count."""
    for spec in config.modalities:
        for view in spec.views:
            if (view, spec.name) not in sample:
                raise ConfigError(f"{where}: the reader yields {sorted(sample)}, the preset {config.name!r} needs "
                                  f"{(view, spec.name)}")
            array = np.asarray(sample[(view, spec.name)])
            image_dims = {"rgb": 3, "depth": 2}.get(spec.kind)
            frames = array.shape[0] if image_dims is not None and array.ndim == image_dims + 1 else 1
            if image_dims is not None and frames != spec.frames:
                raise ConfigError(f"{where}: {(view, spec.name)} has {frames} frames per sample, the preset "
                                  f"{config.name!r} takes {spec.frames} (ModalitySpec.frames)")


def reference_audio_rms(reader, config: ModelConfig, limit: int = 200) -> float:
    """RMS of the clean audio of up to `limit` evenly spaced samples of `reader` (the training split): the level
    the audio corruption's SNR is measured against."""
    keys = [(view, spec.name) for spec in config.modalities if spec.kind == "audio" for view in spec.views]
    if not keys or not len(reader):
        return CorruptionContext().reference_rms
    indices = np.unique(np.linspace(0, len(reader) - 1, min(limit, len(reader))).astype(int))
    waves = [np.asarray(reader[int(i)][0][key]) for i in indices for key in keys]
    return signal_rms(waves)


class CorruptedSplit:
    """`reader`'s samples corrupted by a corruption preset: sample i of epoch e draws from (seed, i, e), so each
    epoch sees a new corruption (`set_epoch`, called by the training loops) and evaluation a fixed one."""

    def __init__(self, reader, config: ModelConfig, preset: str, seed: int, context: CorruptionContext) -> None:
        self.reader, self.config, self.seed, self.context = reader, config, seed, context
        self.preset = get_preset(preset)
        self.kinds = {spec.name: spec.kind for spec in config.modalities}
        self.views = tuple(dict.fromkeys(view for spec in config.modalities for view in spec.views))
        self.epoch = 0
        self._check_applicable()

    def _check_applicable(self) -> None:
        probe = np.random.default_rng(self.seed)
        plans = [self.preset.expand(c, self.kinds, self.views) for c in self.preset.showcase]
        plans += [self.preset.draw(probe, self.kinds, self.views) for _ in range(64)]
        needs_world = {spec.category for plan in plans for spec in plan.values()} & WORLD_ONLY_CATEGORIES
        if needs_world:
            raise ConfigError(f"corruption preset {self.preset.name!r} uses {sorted(needs_world)}, which only the "
                              "simulated world can render; choose another preset for a dataset")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.reader, "set_epoch"):
            self.reader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int):
        sample, target = self.reader[index]
        rng = np.random.default_rng([self.seed, index, self.epoch])
        plan = self.preset.draw(rng, self.kinds, self.views)
        corrupted = dict(sample)
        for (view, modality), spec in plan.items():
            if (view, modality) in sample and spec.category != "clean":
                corrupted[(view, modality)] = self._corrupt(spec, self.kinds[modality], sample[(view, modality)],
                                                            rng)
        labels = {}
        for modality in self.kinds:
            specs = [plan.get((view, modality), CLEAN) for view in self.views]
            worst = max(specs, key=lambda spec: spec.severity)
            labels[modality] = worst.as_label()
        return corrupted, {**target, "corruption": labels}

    def _corrupt(self, spec: CorruptionSpec, kind: str, array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One array, or each frame of a [T, H, W(, 3)] stack with its own noise draw."""
        single = {"rgb": 3, "depth": 2}.get(kind)
        if single is not None and array.ndim == single + 1:
            return np.stack([apply_corruption(spec, kind, frame, rng, self.context) for frame in array])
        return apply_corruption(spec, kind, array, rng, self.context)


def corruption_context(config: ModelConfig, reference_rms: float) -> CorruptionContext:
    """Levels relative to the data: depth σ on the model's depth range, audio SNR against `reference_rms`."""
    depth = next((spec for spec in config.modalities if spec.kind == "depth"), None)
    audio = next((spec for spec in config.modalities if spec.kind == "audio"), None)
    return CorruptionContext(
        depth_full_scale_mm=1000.0 * (depth.depth_max_range_m if depth is not None else 10.0),
        reference_rms=reference_rms,
        sample_rate=audio.audio.sample_rate if audio is not None else CorruptionContext().sample_rate)


def open_dataset(dataset: str, root: str | Path, config: ModelConfig, preset: str, seed: int,
                 classes: tuple[str, ...] = (), audio_anchor: str = "event") -> dict[str, CorruptedSplit]:
    """{"train", "test" and, when the dataset has one, "val"} → corrupted splits sharing one corruption context."""
    splits = {}
    for split in ("train", "val", "test"):
        try:
            splits[split] = open_split(dataset, root, split, config, classes, audio_anchor, seed)
        except DatasetFileError as exc:
            if split != "val":
                raise
            logger.info(f"{dataset}: no validation split ({exc}); Stage 1 reports no validation metrics")
    rms = reference_audio_rms(splits["train"], config)
    if any(spec.kind == "audio" for spec in config.modalities):
        logger.info(f"{dataset}: audio noise levels relative to the training audio's RMS {rms:.4g}")
    context = corruption_context(config, rms)
    # Each split its own corruption draws: the test set never repeats a training draw.
    return {split: CorruptedSplit(reader, config, preset, seed + offset, context)
            for offset, (split, reader) in enumerate(splits.items())}
