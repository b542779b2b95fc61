"""On-disk cache of world samples (format `admn-world-cache`, version 1). Also described in FORMAT.md.

Layout of a cache directory::

    manifest.json                        format, format_version, num_samples, views, modalities (name, kind,
                                         dtype, per-sample shape), categories, preset, seed, world settings
    arrays/<view>__<modality>.npy        [N, *shape] sensor arrays in sensor units (see the Sample contract)
    targets/position.npy                 [N, 2] float32 metres, world frame (REP-103)
    targets/{heading,speed,time}.npy     [N] float32 (radians, m/s, seconds along the trajectory)
    targets/label.npy                    [N] int64 class index: only in caches of classified samples (manifest
                                         "task": "classification"), which have time but no position/heading/speed
    labels/<modality>__category_id.npy   [N, V] int16, index into manifest "categories" (V = len(views))
    labels/<modality>__severity.npy      [N, V] int16, 0 = clean
    labels/<modality>__value.npy         [N, V] float32, σ / gamma / kernel / intensity / fraction / SNR dB

Every .npy is a plain NumPy file, opened with np.load(mmap_mode="r"), so a Dataset streams samples without
reading the whole cache. A cache is written into `<dir>.partial/` and renamed when complete: a directory
without manifest.json is never a valid cache.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from admn_core.data.corruptions.labels import CATEGORIES, CLEAN
from admn_core.data.corruptions.presets import get_preset
from admn_core.data.errors import CacheFormatError
from admn_core.data.world import World, WorldConfig

logger = logging.getLogger(__name__)

FORMAT_NAME = "admn-world-cache"
FORMAT_VERSION = 1
TARGET_FIELDS = ("heading", "speed", "time")
LOCALIZATION_TARGETS = ("position", *TARGET_FIELDS)
CLASSIFICATION_TARGETS = ("label", "time")
LABEL_FIELDS = (("category_id", np.int16), ("severity", np.int16), ("value", np.float32))


def target_names(task: str) -> tuple[str, ...]:
    """The target files of a cache of `task` (targets/<name>.npy)."""
    return CLASSIFICATION_TARGETS if task == "classification" else LOCALIZATION_TARGETS


def array_file(view: str, modality: str) -> str:
    return f"arrays/{view}__{modality}.npy"


def label_file(modality: str, field: str) -> str:
    return f"labels/{modality}__{field}.npy"


def world_settings(config: WorldConfig) -> dict:
    """The world parameters a cache records in its manifest (a cache is reused only when they match). The RGB noise
    factor is recorded only when ≠ 1, so caches written before it existed (noise at image resolution) match k = 1."""
    return {"image_size": list(config.image_size), "horizontal_fov_deg": config.horizontal_fov_deg,
            "window_seconds": config.window_seconds, "sample_rate": config.audio.sample_rate,
            "depth_full_scale_m": config.depth_full_scale_m, "world_seed": config.seed,
            "node_angles_deg": list(config.node_angles_deg), "track": asdict(config.track),
            "car": asdict(config.car), **({"rgb_noise_native_factor": config.rgb_noise_native_factor}
                                          if config.rgb_noise_native_factor != 1 else {})}


def _create_files(root: Path, world: World, num_samples: int) -> None:
    views = world.config.views
    for view, modality in world.sample_keys:
        shape, dtype = world.array_spec(modality)
        np.lib.format.open_memmap(root / array_file(view, modality), "w+", dtype, (num_samples, *shape))
    np.lib.format.open_memmap(root / "targets/position.npy", "w+", np.float32, (num_samples, 2))
    for name in TARGET_FIELDS:
        np.lib.format.open_memmap(root / f"targets/{name}.npy", "w+", np.float32, (num_samples,))
    for modality, _ in world.config.modalities:
        for field, dtype in LABEL_FIELDS:
            np.lib.format.open_memmap(root / label_file(modality, field), "w+", dtype, (num_samples, len(views)))


def _fill(root: Path, config: WorldConfig, preset_name: str, seed: int, start: int, stop: int) -> int:
    """Generate samples [start, stop) into the cache files at `root` (runs in a worker process)."""
    world = World(config)
    preset = get_preset(preset_name)
    arrays = {key: np.load(root / array_file(*key), mmap_mode="r+") for key in world.sample_keys}
    position = np.load(root / "targets/position.npy", mmap_mode="r+")
    scalars = {name: np.load(root / f"targets/{name}.npy", mmap_mode="r+") for name in TARGET_FIELDS}
    labels = {(modality, field): np.load(root / label_file(modality, field), mmap_mode="r+")
              for modality, _ in config.modalities for field, _ in LABEL_FIELDS}
    for index in range(start, stop):
        sample, target = world.generate(index, preset, seed)
        for key, array in sample.items():
            arrays[key][index] = array
        position[index] = target["position"]
        for name in TARGET_FIELDS:
            scalars[name][index] = target[name]
        for (modality, field), store in labels.items():
            store[index] = target["corruption"][modality][f"view_{field}"]
    for store in (*arrays.values(), position, *scalars.values(), *labels.values()):
        store.flush()
    return stop - start


def write_cache(out: str | Path, num_samples: int, preset: str = "mixed", seed: int = 0,
                world_config: WorldConfig | None = None, workers: int = 1, overwrite: bool = False) -> Path:
    """Generate `num_samples` world samples with a corruption preset into a cache directory at `out`."""
    if num_samples < 1:
        raise CacheFormatError(out, f"num_samples must be >= 1, got {num_samples}")
    get_preset(preset)  # fail before creating anything
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise CacheFormatError(out, "already exists (pass overwrite=True / --overwrite to replace it)")
        shutil.rmtree(out)
    config = world_config or WorldConfig()
    world = World(config)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for sub in ("arrays", "targets", "labels"):
        (partial / sub).mkdir(parents=True)
    _create_files(partial, world, num_samples)
    started = time.perf_counter()
    workers = max(1, min(workers, num_samples))
    bounds = np.linspace(0, num_samples, workers * 4 + 1 if workers > 1 else 2).astype(int)
    chunks = [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]
    if workers == 1:
        for start, stop in chunks:
            _fill(partial, config, preset, seed, start, stop)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_fill, *zip(*[(partial, config, preset, seed, a, b) for a, b in chunks])))
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "num_samples": num_samples,
        "views": list(config.views),
        "modalities": [{"name": name, "kind": kind, "dtype": world.array_spec(name)[1].str,
                        "shape": list(world.array_spec(name)[0])} for name, kind in config.modalities],
        "categories": list(CATEGORIES),
        "preset": preset,
        "seed": seed,
        "world": world_settings(config),
        "generation_seconds": round(time.perf_counter() - started, 3),
    }
    (partial / "manifest.json").write_text(json.dumps(manifest, indent=2))
    os.replace(partial, out)
    logger.info(f"wrote {num_samples} samples ({preset}) to {out} in {manifest['generation_seconds']} s")
    return out


class SampleCacheWriter:
    """A cache from given samples (e.g. recorded ones), written as they come, without holding them in memory.

    `add(sample, target)` takes {(view, modality): array} and the task's target — localization: {"position": [2],
    "heading", "speed", "time"}; classification: {"label": class index, "time"} — plus, optionally, "plan":
    {(view, modality): CorruptionSpec}, the corruption each input is known to carry (e.g. a recording's labels);
    inputs without one are labelled clean. Every sample must have the first one's keys, dtypes and shapes.
    `finish()` writes the .npy files and manifest.json (with `task` and `source`, e.g. where the samples came from
    and a fingerprint) and renames `<out>.partial` to `<out>`; `abort()` removes the partial write."""

    def __init__(self, out: str | Path, views: tuple[str, ...], modalities: tuple[tuple[str, str], ...],
                 source: dict, task: str = "localization") -> None:
        if task not in ("localization", "classification"):
            raise ValueError(f"task must be localization or classification, got {task!r}")
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.views, self.modalities, self.source, self.task = tuple(views), tuple(modalities), source, task
        self.keys = tuple((view, name) for name, _ in self.modalities for view in self.views)
        self.specs: dict = {}  # key -> (dtype, shape) of the first sample
        self.targets: dict = {name: [] for name in target_names(task)}
        self.labels: dict = {(name, field): [] for name, _ in self.modalities for field, _ in LABEL_FIELDS}
        shutil.rmtree(self.partial, ignore_errors=True)
        for sub in ("arrays", "targets", "labels"):
            (self.partial / sub).mkdir(parents=True)
        self._raw = {key: open(self._raw_path(key), "wb") for key in self.keys}  # closed in finish / abort
        self.num_samples = 0

    def _raw_path(self, key) -> Path:
        return self.partial / (array_file(*key) + ".raw")

    def add(self, sample: dict, target: dict) -> None:
        missing = [key for key in self.keys if key not in sample]
        if missing:
            raise CacheFormatError(self.partial, f"sample {self.num_samples} lacks {missing}")
        for key in self.keys:
            array = np.ascontiguousarray(sample[key])
            spec = self.specs.setdefault(key, (array.dtype, array.shape))
            if (array.dtype, array.shape) != spec:
                raise CacheFormatError(self.partial, f"sample {self.num_samples}: {key} is {array.dtype} "
                                                     f"{array.shape}, the first sample's is {spec[0]} {spec[1]}")
            self._raw[key].write(array.tobytes())
        absent = [name for name in self.targets if name not in target]
        if absent:
            raise CacheFormatError(self.partial, f"sample {self.num_samples}: a {self.task} target needs {absent}")
        for name, values in self.targets.items():
            if name == "label":
                values.append(int(target[name]))
            else:
                values.append(np.asarray(target[name], dtype=np.float32))
        plan = target.get("plan") or {}
        for name, _ in self.modalities:
            specs = [plan.get((view, name), CLEAN) for view in self.views]
            self.labels[(name, "category_id")].append([spec.category_id for spec in specs])
            self.labels[(name, "severity")].append([spec.severity for spec in specs])
            self.labels[(name, "value")].append([spec.value for spec in specs])
        self.num_samples += 1

    def finish(self) -> Path:
        if not self.num_samples:
            self.abort()
            raise CacheFormatError(self.out, "no samples to write")
        n = self.num_samples
        for key in self.keys:
            self._raw[key].close()
            dtype, shape = self.specs[key]
            raw = np.memmap(self._raw_path(key), dtype=dtype, mode="r", shape=(n, *shape))
            store = np.lib.format.open_memmap(self.partial / array_file(*key), "w+", dtype, (n, *shape))
            store[:] = raw
            store.flush()
            del raw, store
            self._raw_path(key).unlink()
        for name, values in self.targets.items():
            dtype = np.int64 if name == "label" else np.float32
            np.save(self.partial / f"targets/{name}.npy", np.asarray(values, dtype=dtype))
        for name, _ in self.modalities:
            for field, dtype in LABEL_FIELDS:
                np.save(self.partial / label_file(name, field), np.asarray(self.labels[(name, field)], dtype))
        manifest = {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "num_samples": n, "views": list(self.views),
            "modalities": [{"name": name, "kind": kind, "dtype": self.specs[(self.views[0], name)][0].str,
                            "shape": list(self.specs[(self.views[0], name)][1])} for name, kind in self.modalities],
            "categories": list(CATEGORIES), "preset": "clean", "seed": None, "source": self.source,
            **({"task": self.task} if self.task != "localization" else {}),
        }
        (self.partial / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.partial, self.out)
        logger.info(f"wrote {n} samples to {self.out}")
        return self.out

    def abort(self) -> None:
        for file in self._raw.values():
            file.close()
        shutil.rmtree(self.partial, ignore_errors=True)


class WorldCache:
    """Read access to a cache directory; arrays are memory-mapped on first use."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest_path = self.root / "manifest.json"
        if not self.root.is_dir():
            raise CacheFormatError(self.root, "not a directory (expected a world cache)")
        if not manifest_path.is_file():
            partial = " (an interrupted write?)" if self.root.name.endswith(".partial") else ""
            raise CacheFormatError(manifest_path, f"missing: not a complete world cache{partial}")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CacheFormatError(manifest_path, f"not valid JSON: {exc}") from None
        if manifest.get("format") != FORMAT_NAME:
            raise CacheFormatError(manifest_path, f"format is {manifest.get('format')!r}, expected {FORMAT_NAME!r}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise CacheFormatError(manifest_path, f"format_version {manifest.get('format_version')} is not supported "
                                                  f"(this code reads version {FORMAT_VERSION}); regenerate the cache")
        self.manifest = manifest
        self.num_samples = int(manifest["num_samples"])
        self.views = tuple(manifest["views"])
        self.modalities = tuple(m["name"] for m in manifest["modalities"])
        self.categories = tuple(manifest["categories"])
        self.task = manifest.get("task", "localization")
        if self.task not in ("localization", "classification"):
            raise CacheFormatError(manifest_path, f"task {self.task!r} is neither localization nor classification")
        self._arrays: dict | None = None

    def __len__(self) -> int:
        return self.num_samples

    @property
    def sample_keys(self) -> tuple[tuple[str, str], ...]:
        return tuple((view, modality) for modality in self.modalities for view in self.views)

    def _load(self, relative: str, shape_prefix: tuple[int, ...], dtype: str | None = None) -> np.ndarray:
        path = self.root / relative
        if not path.is_file():
            raise CacheFormatError(path, "missing from the cache")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise CacheFormatError(path, f"not a readable .npy file: {exc}") from None
        if array.shape[: len(shape_prefix)] != shape_prefix or (dtype and array.dtype.str != dtype):
            raise CacheFormatError(path, f"shape {array.shape} / dtype {array.dtype.str} does not match the manifest "
                                         f"(expected {shape_prefix}… / {dtype or 'any'})")
        return array

    @property
    def arrays(self) -> dict:
        if self._arrays is None:
            n, v = self.num_samples, len(self.views)
            arrays = {}
            for spec in self.manifest["modalities"]:
                for view in self.views:
                    arrays[(view, spec["name"])] = self._load(array_file(view, spec["name"]), (n, *spec["shape"]),
                                                              spec["dtype"])
                for field, _ in LABEL_FIELDS:
                    arrays[("label", spec["name"], field)] = self._load(label_file(spec["name"], field), (n, v))
            for name in target_names(self.task):
                arrays[name] = self._load(f"targets/{name}.npy", (n, 2) if name == "position" else (n,))
            self._arrays = arrays
        return self._arrays

    def sample(self, index: int) -> dict[tuple[str, str], np.ndarray]:
        self._check_index(index)
        return {key: np.array(self.arrays[key][index]) for key in self.sample_keys}

    def target(self, index: int) -> dict:
        """Same structure as World.target: position, heading, speed, time, corruption labels per modality (a
        classification cache: label, time and the corruption labels)."""
        self._check_index(index)
        arrays = self.arrays
        corruption = {}
        for modality in self.modalities:
            ids = np.array(arrays[("label", modality, "category_id")][index], dtype=np.int64)
            severity = np.array(arrays[("label", modality, "severity")][index], dtype=np.int64)
            value = np.array(arrays[("label", modality, "value")][index], dtype=np.float32)
            worst = int(np.argmax(severity))
            corruption[modality] = {"category": self.categories[ids[worst]], "category_id": int(ids[worst]),
                                    "severity": int(severity[worst]), "value": np.float32(value[worst]),
                                    "view_category_id": ids, "view_severity": severity, "view_value": value}
        target = {}
        for name in target_names(self.task):
            if name == "label":
                target[name] = int(arrays[name][index])
            elif name == "position":
                target[name] = np.array(arrays[name][index], dtype=np.float32)
            else:
                target[name] = np.float32(arrays[name][index])
        target["corruption"] = corruption
        return target

    def class_labels(self) -> np.ndarray:
        """[N] int64 class index of every sample (a classification cache)."""
        if self.task != "classification":
            raise CacheFormatError(self.root, f"a {self.task} cache has no class labels")
        return np.asarray(self.arrays["label"])

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample index {index} out of range for {self.root} ({self.num_samples} samples)")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_arrays"] = None  # memory maps are reopened in each DataLoader worker
        return state
