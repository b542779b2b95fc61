"""The whole ADMN pipeline on the simulated world: data → Stage 0 (MAE) → Stage 1 → controllers → baselines →
evaluation → one model bundle. `admn train --preset tiny --out artifacts/tiny [--corruption ...] [--quick]`.

Every stage writes its artifact under `<out>/<corruption>/` and is skipped when that artifact exists (resumable;
the training stages also resume mid-stage from their checkpoints). Layout of a run directory:

    data/{train,test}/               world caches (admn-world-cache), reused across runs with the same settings
    mae/<modality>.safetensors       Stage 0 encoders (timm key names)
    stage1/model.safetensors         Stage-1 task model (LayerDrop); stage1_nold/ the no-LayerDrop ablation
    controllers/<name>.safetensors   + <name>.json (ControllerInfo) — admn_b<L>, universal, ae_b<L>, plain_st_b<L>
    baselines/scratch_b<L>.safetensors, baselines/mns_b<L>_<expert>.safetensors, mns_gate_b<L>.safetensors
    bundle.safetensors               task model + ADMN per-budget controllers + universal (what the ROS node serves)
    ablation_bundle.safetensors      the same task model + the ablation controllers (ADMN_AE, plain ST)
    eval/                            results.md, results.json, error_vs_budget.png, allocations.png, ...
    timings.json                     seconds per stage

The bundle holds only the serving controllers: the engine picks a per-budget controller by budget, so putting an
ablation controller trained for the same budget next to ADMN's would make the choice ambiguous.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Subset

from admn_core.bundle import Bundle, ControllerInfo, build_controller, save_bundle
from admn_core.config import ConfigError, LayerDropSpec, ModelConfig
from admn_core.models.task_model import ADMNModel
from admn_core.presets import load_model_config, preset_config
from admn_core.train.baselines import (
    MNSConfig,
    ScratchConfig,
    expert_outputs,
    mns_expert_masks,
    train_fixed_mask_model,
    train_mns_gate,
)
from admn_core.train.batching import CorruptionTargets
from admn_core.train.config import (
    STAGES,
    AutoencoderConfig,
    ControllerTrainConfig,
    Stage1Config,
    UniversalTrainConfig,
)
from admn_core.train.mae import MAEConfig, load_mae_backbones, pretrain_mae

logger = logging.getLogger(__name__)

CONTROLLER_VARIANT_PREFIX = {"corruption_supervised": "admn", "autoencoder": "ae", "plain_st": "plain_st",
                             "task_only": "task_only"}


# ---------------------------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class DataSettings:
    train: int = 1000
    test: int = 300
    world_seed: int = 0  # the room (textures, noise beds)
    train_seed: int = 0  # sample i of the training cache = World.generate(i, preset, train_seed)
    test_seed: int = 1
    val: int = 200  # validation samples: Stage 1 reports its error on them every epoch (0 = no validation)
    val_seed: int = 2  # a third independent draw, so the test set is never looked at during training
    workers: int = 2
    # "world" (the simulated world, generated) or a dataset folder read by admn_core.data.readers: "ave", "mmfi",
    # "gdtm" under `root`, its splits corrupted on the fly by the corruption preset (data.readers.sources); or
    # "cache": sample caches (admn-world-cache format) at `root` (training) and `test_root` (evaluation), written
    # elsewhere (admn_ros.bags.train_cli from recorded bags), corrupted on the fly the same way.
    source: str = "world"
    root: str = ""
    test_root: str = ""
    classes: tuple[str, ...] = ()  # a classification dataset's class names; () = the dataset's own (annotations)
    audio_anchor: str = "event"  # a clip's audio window: centred on the annotated "event" or on the "clip"

    def __post_init__(self) -> None:
        from admn_core.data.readers.sources import DATASETS

        if self.source not in ("world", "cache", *DATASETS):
            raise ConfigError(f"data.source must be world, cache or one of {DATASETS}, got {self.source!r}")
        if self.source != "world" and not self.root:
            raise ConfigError(f"data.source {self.source!r} needs data.root, the dataset folder")
        if self.source == "cache" and not self.test_root:
            raise ConfigError("data.source 'cache' needs data.test_root, the evaluation cache")


@dataclass(frozen=True)
class Stage1Settings:
    epochs: int = 12
    lr: float = 5e-4  # [code]
    batch_size: int = 32  # [code]
    freeze_backbones: bool = False  # [ours] MAE on a few thousand frames is far weaker than ImageNet MAE; see docs
    layerdrop_max_rate: float = 0.2  # [code] and [paper]
    layerdrop_step: float = 0.1  # [code]
    layerdrop_every_epochs: int = 2  # [ours, scaled] official: every 10 of 200 epochs
    full_backbone_drop: float = 0.1  # [code]
    no_layerdrop_ablation: bool = True  # also train the Table-8 "without LayerDrop" model (same epochs)
    clean_warmup_epochs: int = 0  # [code] first epochs on the clean twin of the training set (official 5 of 200)
    warmup_cosine_fraction: float = 0.0  # [ours] > 0: per-step warm-up + cosine LR (Stage1Config); 0 = constant [code]
    clean_modality_dropout: float = 0.0  # [ours] ModDrop during the clean warm-up (Stage1Config)
    # A new corruption draw every epoch (FreshCorruptionDataset) instead of the fixed corrupted cache: [code] the
    # official Gaussian loader corrupts on the fly; a fixed noisy cache of 1,500 samples was memorised.
    fresh_corruption: bool = False
    # Backbone initialisation: "mae" = Stage 0's weights [paper]; "random" skips Stage 0 [ours: on the world, MAE
    # weights from a few thousand frames kept clean RGB-D on the plateau for 6 epochs where random init left it in 3].
    init: str = "mae"

    def __post_init__(self) -> None:
        if self.init not in ("mae", "random"):
            raise ConfigError(f"stage1.init must be mae or random, got {self.init!r}")


@dataclass(frozen=True)
class ControllerSettings:
    epochs: int = 3  # [ours, reduced] official 10
    lr: float = 1e-3  # [code]
    batch_size: int = 32  # [code]
    warmup_epochs: int = 1  # [code] corruption-only warm-up (counted in `epochs` and `universal_epochs`)
    lr_schedule_after_warmup: bool = False  # [code MM-Fi] True: the LR decay starts after the warm-up
    freeze_encoder_after_warmup: bool = False  # [ours] True: then only the layer MLP trains (ControllerTrainConfig)
    train_limit: int = 0  # 0 = the whole training set
    universal_epochs: int = 4
    autoencoder_epochs: int = 5  # [ours, reduced] official 100
    ablation_budgets: tuple[int, ...] = (6, 8)  # ADMN_AE and plain ST trained at these budgets only
    gumbel_scale: float | None = None  # Gumbel noise scale in training; None = the preset's (official code 0.1)


@dataclass(frozen=True)
class PipelineSettings:
    preset: str = "tiny"
    # A model config file (YAML: `preset:` plus overrides, admn_core.presets.load_model_config) trained instead of
    # the preset as it is, e.g. a preset with another readout; "" = the preset. In a training config a relative path
    # is relative to that config's folder (`load_settings` rewrites it relative to the working directory).
    model: str = ""
    corruption: str = "gaussian"
    seed: int = 100  # [code] --seed 100
    device: str = "cpu"
    budgets: tuple[int, ...] = (6, 8, 12, 16)
    universal_extra_budgets: tuple[int, ...] = (4, 10, 20, 24)
    data: DataSettings = field(default_factory=DataSettings)
    mae: MAEConfig = field(default_factory=MAEConfig)
    stage1: Stage1Settings = field(default_factory=Stage1Settings)
    controller: ControllerSettings = field(default_factory=ControllerSettings)
    scratch: ScratchConfig = field(default_factory=ScratchConfig)
    mns: MNSConfig = field(default_factory=MNSConfig)
    mns_budgets: tuple[int, ...] = (6, 8, 12, 16)
    # false: skip Naive Scratch and MNS (new networks trained per budget, the slowest stage on a CPU) for a quicker
    # look at the allocation methods on the shared Stage 1 model; the tables then leave those rows out.
    trained_baselines: bool = True
    latency_samples: int = 20
    num_workers: int = 0  # DataLoader workers for the training stages (preprocessing runs in them)
    progress: bool = True


QUICK_OVERRIDES: dict[str, Any] = {
    "budgets": (6, 8), "universal_extra_budgets": (5,), "mns_budgets": (6,), "latency_samples": 2,
    "data": {"train": 12, "test": 6, "val": 4, "workers": 1},
    "mae": {"epochs": 1, "batch_size": 16},
    "stage1": {"epochs": 2, "batch_size": 6, "clean_warmup_epochs": 1},
    "controller": {"epochs": 1, "warmup_epochs": 0, "batch_size": 6, "universal_epochs": 1,
                   "autoencoder_epochs": 1, "ablation_budgets": (6,)},
    "scratch": {"epochs": 1, "batch_size": 6},
    "mns": {"epochs": 1, "batch_size": 6},
}


# A dataset run trains from scratch on the dataset (no Stage-0 MAE, nothing frozen) and evaluates the allocation
# methods on that one model; budgets () are derived from the preset's costs (`default_budgets`).
DATASET_DEFAULTS: dict[str, Any] = {
    "budgets": (), "universal_extra_budgets": (), "mns_budgets": (), "trained_baselines": False,
    "stage1": {"init": "random", "freeze_backbones": False, "no_layerdrop_ablation": False},
    "controller": {"ablation_budgets": ()},
}


def settings_model_config(settings: PipelineSettings) -> ModelConfig:
    """The model a run trains: its `model` file, else its preset."""
    return load_model_config(settings.model) if settings.model else preset_config(settings.preset)


def default_budgets(config: ModelConfig) -> tuple[int, ...]:
    """Three budgets at a quarter, half and three quarters of the full model's cost, each above the minimum."""
    from admn_core.allocation import maximum_budget, minimum_budget

    low, high = minimum_budget(config), maximum_budget(config)
    return tuple(sorted({max(low + 1, round(high * fraction)) for fraction in (0.25, 0.5, 0.75)}))


def settings_from_dict(data: dict[str, Any], base: PipelineSettings | None = None) -> PipelineSettings:
    """Strict merge of plain data (YAML) into `base`: unknown keys are errors."""
    return _merge(base or PipelineSettings(), data, "settings")


def _merge(obj, data: dict[str, Any], where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(obj)}
    changes = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}; known: {sorted(known)}")
        current = getattr(obj, key)
        if hasattr(current, "__dataclass_fields__"):
            changes[key] = _merge(current, value, f"{where}.{key}")
        elif isinstance(current, tuple):
            changes[key] = tuple(value)
        else:
            changes[key] = type(current)(value) if current is not None else value
    return replace(obj, **changes)


def load_settings(path: str | Path | None = None, quick: bool = False, dataset: str | None = None,
                  **overrides) -> PipelineSettings:
    """Defaults, then DATASET_DEFAULTS (when `dataset` is given), the YAML at `path`, QUICK_OVERRIDES, `overrides`."""
    import yaml

    settings = PipelineSettings()
    if dataset is not None:
        settings = settings_from_dict(DATASET_DEFAULTS, settings)
    if path is not None:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if isinstance(data, dict) and isinstance(data.get("model"), str) and data["model"]:
            data["model"] = _beside(Path(path), data["model"])
        settings = settings_from_dict(data, settings)
    if quick:
        settings = settings_from_dict(QUICK_OVERRIDES, settings)
    clean = {k: v for k, v in overrides.items() if v is not None}
    return settings_from_dict(clean, settings) if clean else settings


def _beside(config_file: Path, model_file: str) -> str:
    """`model_file` as named in `config_file` (relative paths from its folder), as a path from the working directory:
    the same recipe trains the same model from any directory, and a run started in the repository root records
    `config/NAME.yaml`."""
    return os.path.relpath(config_file.parent / Path(model_file).expanduser())


def corruption_targets(corruption: str, config: ModelConfig) -> CorruptionTargets:
    """The controller's corruption supervision for a world preset."""
    names = config.modality_names
    if corruption == "gaussian" and {"rgb", "depth"} <= set(names):
        return CorruptionTargets()  # [code] GDTM Noise: σ_rgb, σ_depth regression, L1 + 20·L1
    if corruption == "lowlight" and {"rgb", "depth"} <= set(names):
        # [code] GDTM Lowlight: a categorical condition; here rgb severity (clean/medium/severe) × depth saturated
        return CorruptionTargets(kind="category", modalities=("rgb", "depth"), classes=(3, 2))
    # any other preset: corrupted-or-not per modality, one joint class
    return CorruptionTargets(kind="category", modalities=names, classes=(2,) * len(names))


# ---------------------------------------------------------------------------------------------- run
class Pipeline:
    def __init__(self, settings: PipelineSettings, run_dir: str | Path, config: ModelConfig | None = None):
        """`config`: the model when it is already known (a bundle's), instead of the one the settings name."""
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.config = config or settings_model_config(settings)
        self.classes: tuple[str, ...] = ()
        if settings.data.source != "world" and self.config.head.task == "classification":
            from admn_core.data.readers.sources import dataset_classes
            from admn_core.presets import with_classes

            self.classes = dataset_classes(settings.data.source, settings.data.root, settings.data.classes)
            self.config = with_classes(self.config, len(self.classes))
        if not settings.budgets:
            settings = self.settings = replace(settings, budgets=default_budgets(self.config))
        self.targets = corruption_targets(settings.corruption, self.config)
        self.timings: dict[str, float] = {}
        self.val_set = self.clean_train_set = None  # set by `data()` when the settings ask for them
        self._reused_from_disk = False
        timings_path = self.run_dir / "timings.json"
        if timings_path.is_file():
            self.timings = json.loads(timings_path.read_text())

    # -- helpers
    def _stage(self, name: str, function, *args, **kwargs):
        started = time.perf_counter()
        logger.info(f"== {name} ==")
        self._reused_from_disk = False  # set by a stage that loaded everything it would have computed
        result = function(*args, **kwargs)
        seconds = time.perf_counter() - started
        if not self._reused_from_disk or name not in self.timings:  # a reused stage keeps its original timing
            self.timings[name] = round(seconds, 2)
        logger.info(f"== {name}: {seconds:.1f} s ==")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "timings.json").write_text(json.dumps(self.timings, indent=1))
        return result

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)

    def world_config(self):
        from admn_core.data.world import WorldConfig

        return WorldConfig(seed=self.settings.data.world_seed)

    # -- stages
    def dataset_splits(self):
        from admn_core.data.readers.sources import CorruptedSplit, open_dataset

        data = self.settings.data
        splits = open_dataset(data.source, data.root, self.config, self.settings.corruption, self.settings.seed,
                              self.classes, data.audio_anchor)
        logger.info(f"{data.source} at {data.root}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items())
                    + (f" samples, {len(self.classes)} classes" if self.classes else " samples"))
        self.val_set = splits.get("val")
        train = splits["train"]
        if self.settings.stage1.clean_warmup_epochs or self.settings.scratch.clean_warmup_epochs:
            self.clean_train_set = CorruptedSplit(train.reader, self.config, "clean", train.seed, train.context)
        return train, splits["test"]

    def cache_splits(self):
        """data.source "cache": the caches at data.root / data.test_root, corrupted on the fly by the corruption
        preset (as a dataset's splits are), so corruption-supervised controllers get labels; the uncorrupted
        training cache is the clean warm-up set."""
        from admn_core.data.dataset import WorldCacheDataset
        from admn_core.data.readers.sources import CorruptedSplit, corruption_context, reference_audio_rms

        data, corruption, seed = self.settings.data, self.settings.corruption, self.settings.seed
        train, test = WorldCacheDataset(data.root), WorldCacheDataset(data.test_root)
        for split, dataset in (("train", train), ("test", test)):
            self._check_cache_task(split, dataset.cache)
        context = corruption_context(self.config, reference_audio_rms(train, self.config))
        logger.info(f"caches: train {data.root} ({len(train)} samples), test {data.test_root} ({len(test)} samples), "
                    f"corrupted on the fly by the {corruption!r} preset")
        if self.settings.stage1.clean_warmup_epochs or self.settings.scratch.clean_warmup_epochs:
            self.clean_train_set = train
        return (CorruptedSplit(train, self.config, corruption, seed, context),
                CorruptedSplit(test, self.config, corruption, seed + 1, context))

    def _check_cache_task(self, split: str, cache) -> None:
        """A cache must hold the model's kind of target, and a classifier's labels must be among its classes."""
        task = self.config.head.task
        if cache.task != task:
            raise ConfigError(f"{split} cache {cache.root} holds {cache.task} targets; model {self.config.name!r} is "
                              f"a {task} model")
        if task == "classification" and len(cache):
            labels = cache.class_labels()
            outside = labels[(labels < 0) | (labels >= len(self.classes))]
            if outside.size:
                raise ConfigError(f"{split} cache {cache.root} holds class {int(outside[0])}, but the run has "
                                  f"{len(self.classes)} classes ({', '.join(self.classes)}): name them all "
                                  "(data.classes / --classes)")

    def data(self):
        if self.settings.data.source == "cache":
            return self.cache_splits()
        if self.settings.data.source != "world":
            return self.dataset_splits()
        from admn_core.data.cache import world_settings, write_cache
        from admn_core.data.dataset import WorldCacheDataset

        s = self.settings.data
        world = self.world_config()
        sets = {}
        corruption = self.settings.corruption
        splits = [("train", s.train, s.train_seed, corruption), ("test", s.test, s.test_seed, corruption)]
        if s.val:
            splits.append(("val", s.val, s.val_seed, corruption))
        if self.settings.stage1.clean_warmup_epochs or self.settings.scratch.clean_warmup_epochs:
            # Same seed and indices as "train": the same car states, rendered without corruption.
            splits.append(("train_clean", s.train, s.train_seed, "clean"))
        generated = False
        for split, count, seed, preset in splits:
            root = self.path("data", split)
            if root.is_dir() and (root / "manifest.json").is_file():
                manifest = json.loads((root / "manifest.json").read_text())
                if (manifest.get("num_samples") != count or manifest.get("preset") != preset
                        or manifest.get("seed") != seed
                        or manifest.get("world") != json.loads(json.dumps(world_settings(world)))):
                    logger.info(f"data/{split}: cache settings changed; regenerating")
                    shutil.rmtree(root)
            if not (root / "manifest.json").is_file():
                write_cache(root, count, preset, seed, world, s.workers, overwrite=True)
                generated = True
            sets[split] = WorldCacheDataset(root)
        self.val_set, self.clean_train_set = sets.get("val"), sets.get("train_clean")
        self._reused_from_disk = not generated
        return sets["train"], sets["test"]

    def stage0(self, train):
        mae = replace(self.settings.mae, seed=self.settings.seed, device=self.settings.device,
                      progress=self.settings.progress)
        return pretrain_mae(self.config, train, mae, self.path("mae"))

    def stage1(self, train, layerdrop: bool = True) -> ADMNModel:
        name = "stage1" if layerdrop else "stage1_nold"
        final = self.path(name, "model.safetensors")
        model = ADMNModel(self.config)
        if final.is_file():
            model.load_state_dict(load_file(str(final)))
            self._reused_from_disk = True
            return model.eval()
        s = self.settings.stage1
        if s.init == "mae":
            load_mae_backbones(model, self.path("mae"))
        logger.info(f"{name}: backbones {'from Stage-0 MAE weights' if s.init == 'mae' else 'trained from scratch'}"
                    + (", frozen but each modality's last trainable_last_blocks (pretrained recipe)"
                       if s.freeze_backbones else ", every block trainable"))
        spec = (LayerDropSpec(max_rate=s.layerdrop_max_rate, step=s.layerdrop_step,
                              every_epochs=s.layerdrop_every_epochs, full_backbone_drop=s.full_backbone_drop)
                if layerdrop
                else LayerDropSpec(max_rate=0.0, step=0.0, every_epochs=1, full_backbone_drop=0.0))
        config = Stage1Config(epochs=s.epochs, lr=s.lr, batch_size=s.batch_size, freeze_backbones=s.freeze_backbones,
                              layerdrop=spec, seed=self.settings.seed, device=self.settings.device,
                              progress=self.settings.progress, num_workers=self.settings.num_workers,
                              clean_warmup_epochs=s.clean_warmup_epochs,
                              warmup_cosine_fraction=s.warmup_cosine_fraction,
                              clean_modality_dropout=s.clean_modality_dropout)
        from admn_core.train.stage1 import train_stage1

        if s.fresh_corruption and self.settings.data.source == "world":  # other sources redraw per epoch
            from admn_core.data.dataset import FreshCorruptionDataset

            data = self.settings.data
            train = FreshCorruptionDataset(data.train, self.settings.corruption, data.train_seed, self.world_config())
        train_stage1(model, train, config, val_set=self.val_set, clean_set=self.clean_train_set,
                     run_dir=self.path(name, "run"))
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(final))
        return model.eval()

    def _controller_config(self, variant: str, universal: bool = False):
        c = self.settings.controller
        common = dict(variant=variant, epochs=c.universal_epochs if universal else c.epochs, lr=c.lr,
                      batch_size=c.batch_size, warmup_epochs=c.warmup_epochs,
                      lr_schedule_after_warmup=c.lr_schedule_after_warmup,
                      freeze_encoder_after_warmup=c.freeze_encoder_after_warmup, seed=self.settings.seed,
                      device=self.settings.device, progress=self.settings.progress,
                      num_workers=self.settings.num_workers, gumbel_scale=c.gumbel_scale)
        return UniversalTrainConfig(**common) if universal else ControllerTrainConfig(**common)

    def controller_subset(self, train):
        limit = self.settings.controller.train_limit
        return train if not limit or limit >= len(train) else Subset(train, range(limit))

    def controllers(self, model: ADMNModel, train) -> dict[str, tuple[ControllerInfo, torch.nn.Module]]:
        from admn_core.train.autoencoder import pretrain_autoencoder
        from admn_core.train.controllers import train_controller
        from admn_core.train.universal import train_universal_controller

        subset = self.controller_subset(train)
        c = self.settings.controller
        jobs = [("corruption_supervised", b) for b in self.settings.budgets]
        jobs.append(("corruption_supervised", None))
        jobs += [(variant, b) for b in c.ablation_budgets for variant in ("autoencoder", "plain_st")]
        result = {}
        autoencoder = None
        trained = False
        for variant, budget in jobs:
            name = ("universal" if budget is None else f"{CONTROLLER_VARIANT_PREFIX[variant]}_b{budget}")
            weights, meta = self.path("controllers", f"{name}.safetensors"), self.path("controllers", f"{name}.json")
            if weights.is_file() and meta.is_file():
                info = ControllerInfo(**json.loads(meta.read_text()))
                module = build_controller(self.config, info)
                module.load_state_dict(load_file(str(weights)))
                result[name] = (info, module.eval())
                continue
            started = time.perf_counter()
            if variant == "autoencoder" and autoencoder is None:
                ae_config = AutoencoderConfig(epochs=c.autoencoder_epochs, batch_size=c.batch_size,
                                              seed=self.settings.seed, device=self.settings.device,
                                              progress=self.settings.progress,
                                              num_workers=self.settings.num_workers)
                autoencoder, _ = pretrain_autoencoder(self.config, subset, ae_config,
                                                      run_dir=self.path("controllers", "autoencoder"))
            run = self.path("controllers", f"{name}_run")
            if budget is None:
                module, _ = train_universal_controller(model, subset, self._controller_config(variant, True),
                                                       corruption=self.targets, run_dir=run)
                kind = "universal"
            else:
                module, _ = train_controller(model, subset, budget, self._controller_config(variant),
                                             corruption=self.targets, autoencoder=autoencoder, run_dir=run)
                kind = "per_budget"
            outputs = 0 if module.corruption_head is None else module.corruption_head[-1].out_features
            info = ControllerInfo(name=name, budget=budget, kind=kind, variant=variant, corruption_outputs=outputs)
            module = module.cpu().eval()
            save_file({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(weights))
            meta.write_text(json.dumps(asdict(info)))
            self.timings[f"controller {name}"] = round(time.perf_counter() - started, 2)
            result[name] = (info, module)
            trained = True
        self._reused_from_disk = not trained
        return result

    def baselines(self, train_tensors, clean_tensors=None) -> dict:
        """Naive Scratch per budget and MNS (experts + gate) per mns budget; → {"scratch": {L: model},
        "mns": {L: (gate, {expert: model}, {expert: mask})}}."""
        from admn_core.allocation import naive_allocation
        from admn_core.train.baselines import MNSGate

        scratch_cfg = replace(self.settings.scratch, seed=self.settings.seed, device=self.settings.device)
        mns_cfg = replace(self.settings.mns, seed=self.settings.seed, device=self.settings.device)
        out = {"scratch": {}, "mns": {}}
        trained = []  # tags trained in this call
        directory = self.path("baselines")
        directory.mkdir(parents=True, exist_ok=True)

        def scratch_model(tag: str, mask: torch.Tensor) -> ADMNModel:
            path = directory / f"{tag}.safetensors"
            model = ADMNModel(self.config)
            if path.is_file():
                model.load_state_dict(load_file(str(path)))
                return model.eval()
            started = time.perf_counter()
            model, _ = train_fixed_mask_model(self.config, train_tensors, mask, scratch_cfg, name=tag,
                                              clean=clean_tensors)
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
            self.timings[f"baseline {tag}"] = round(time.perf_counter() - started, 2)
            trained.append(tag)
            return model.cpu().eval()

        for budget in sorted(set(self.settings.budgets) | set(self.settings.mns_budgets)):
            out["scratch"][budget] = scratch_model(f"scratch_b{budget}", naive_allocation(self.config, budget))
        for budget in self.settings.mns_budgets:
            masks = mns_expert_masks(self.config, budget)
            experts = {name: (out["scratch"][budget] if name == "fused" else
                              scratch_model(f"mns_b{budget}_{name}", mask)) for name, mask in masks.items()}
            gate_path = directory / f"mns_gate_b{budget}.safetensors"
            gate = MNSGate(self.config, len(experts))
            if gate_path.is_file():
                gate.load_state_dict(load_file(str(gate_path)))
            else:
                started = time.perf_counter()
                means, covs = expert_outputs(experts, masks, train_tensors, device=self.settings.device)
                head = next(iter(experts.values())).head
                gate, _ = train_mns_gate(self.config, head.loss, train_tensors, means, covs, mns_cfg)
                save_file({k: v.detach().cpu().contiguous() for k, v in gate.state_dict().items()}, str(gate_path))
                self.timings[f"baseline mns_gate_b{budget}"] = round(time.perf_counter() - started, 2)
                trained.append(f"mns_gate_b{budget}")
            for expert in experts.values():
                expert.cpu().eval()
            out["mns"][budget] = (gate.cpu().eval(), experts, masks)
        self._reused_from_disk = not trained
        return out

    def export(self, model: ADMNModel, controllers: dict) -> tuple[Path, Path]:
        serving = {n: v for n, v in controllers.items() if v[0].variant == "corruption_supervised"}
        ablation = {n: v for n, v in controllers.items() if v[0].variant != "corruption_supervised"}
        extra = {"corruption": self.settings.corruption, "seed": str(self.settings.seed),
                 "preset": self.settings.preset, "pipeline": "admn_core.train.pipeline",
                 "dataset": self.settings.data.source}
        if self.classes:
            extra["classes"] = json.dumps(list(self.classes))
        bundle = Bundle(self.config, model.cpu().eval(), {n: m for n, (_, m) in serving.items()},
                        {n: i for n, (i, _) in serving.items()}, extra)
        path = save_bundle(self.path("bundle.safetensors"), bundle)
        ab = Bundle(self.config, model, {n: m for n, (_, m) in ablation.items()},
                    {n: i for n, (i, _) in ablation.items()}, {**extra, "role": "ablation controllers"})
        ab_path = save_bundle(self.path("ablation_bundle.safetensors"), ab)
        return path, ab_path

    # -- everything
    def run(self, until: str | None = None) -> dict:
        """Every stage in order (each reused from disk when its artifact exists) → evaluation results. `until` (one
        of `STAGES`) stops after that stage — e.g. Stage 1 on a GPU machine, the rest elsewhere — and returns {}."""
        from admn_core.eval.data import tensor_set
        from admn_core.eval.evaluate import evaluate_run

        if until is not None and until not in STAGES:
            raise ValueError(f"until must be one of {STAGES}, got {until!r}")
        torch.manual_seed(self.settings.seed)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "settings.json").write_text(json.dumps(_plain(self.settings), indent=1))

        def stop_after(stage: str) -> bool:
            if stage != until:
                return False
            logger.info(f"stopping after {stage} (--until); rerun without it to continue from here")
            return True

        train, test = self._stage("data", self.data)
        if stop_after("data"):
            return {}
        if self.settings.stage1.init == "mae":
            self._stage("stage0_mae", self.stage0, train)
        model = self._stage("stage1", self.stage1, train, True)
        model_nold = (self._stage("stage1_no_layerdrop", self.stage1, train, False)
                      if self.settings.stage1.no_layerdrop_ablation else None)
        if stop_after("stage1"):
            return {}
        controllers = self._stage("controllers", self.controllers, model, train)
        if stop_after("controllers"):
            return {}
        if self.config.head.task == "classification":
            from admn_core.eval.classification import evaluate_classification_run

            if self.settings.trained_baselines or model_nold is not None:
                logger.info("classification: Naive Scratch, MNS and the no-LayerDrop ablation are evaluated for "
                            "localization only; skipped")
            if stop_after("baselines"):
                return {}
            bundle_path, _ = self._stage("export", self.export, model, controllers)
            results = self._stage("evaluate", evaluate_classification_run, self, model, controllers, test)
            return self._finish(bundle_path, results)
        if self.settings.trained_baselines:
            train_tensors = self._stage("baseline_data", tensor_set, self.config, train)
            clean_tensors = (self._stage("baseline_clean_data", tensor_set, self.config, self.clean_train_set)
                             if self.settings.scratch.clean_warmup_epochs else None)
            baselines = self._stage("baselines", self.baselines, train_tensors, clean_tensors)
        else:
            logger.info("baselines: Naive Scratch and MNS skipped (trained_baselines: false)")
            baselines = {"scratch": {}, "mns": {}}
        if stop_after("baselines"):
            return {}
        bundle_path, _ = self._stage("export", self.export, model, controllers)
        results = self._stage("evaluate", evaluate_run, self, model, model_nold, controllers, baselines, test)
        return self._finish(bundle_path, results)

    def _finish(self, bundle_path: Path, results: dict) -> dict:
        # The sum of the stages, not this invocation's wall time: a run split with --until (Stage 1 on a GPU, the rest
        # elsewhere) reports every stage it took.
        self.timings["total"] = round(sum(v for k, v in self.timings.items()
                                          if k != "total" and not k.startswith(("controller ", "baseline "))), 2)
        (self.run_dir / "timings.json").write_text(json.dumps(self.timings, indent=1))
        logger.info("stage timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in self.timings.items()
                                                     if not k.startswith(("controller ", "baseline "))))
        logger.info(f"bundle: {bundle_path}")
        return results


def _plain(value):
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple):
        return list(value)
    return value


def run_pipeline(out: str | Path, preset: str | None = None, corruptions: tuple[str, ...] | None = None,
                 quick: bool = False, config_path: str | Path | None = None, seed: int | None = None,
                 device: str | None = None, until: str | None = None, dataset: str | None = None,
                 root: str | Path | None = None, budgets: tuple[int, ...] | None = None) -> dict[str, dict]:
    """Run the pipeline for each corruption under `<out>/<corruption>/`; the first corruption's bundle is copied
    to `<out>/bundle.safetensors` (what `make run` / the ROS node loads). → {corruption: results}.
    `dataset` + `root`: train on a dataset folder instead of the world (DATASET_DEFAULTS apply)."""
    out = Path(out)
    if dataset is not None:
        from admn_core.presets import DATASET_PRESETS

        preset = preset or DATASET_PRESETS[dataset][0]
    data = {"source": dataset, "root": str(root)} if dataset is not None else None
    base = load_settings(config_path, quick=quick, dataset=dataset, preset=preset, seed=seed, device=device,
                         data=data, budgets=budgets)
    corruptions = tuple(corruptions) if corruptions else (base.corruption,)
    if quick:
        base = replace(base, progress=False)
    results = {}
    for index, corruption in enumerate(corruptions):
        settings = replace(base, corruption=corruption)
        pipeline = Pipeline(settings, out / corruption)
        results[corruption] = pipeline.run(until=until)
        if index == 0 and until is None:
            shutil.copyfile(pipeline.path("bundle.safetensors"), out / "bundle.safetensors.partial")
            (out / "bundle.safetensors.partial").replace(out / "bundle.safetensors")
    if len(corruptions) > 1:
        from admn_core.eval.report import combined_markdown

        (out / "results.md").write_text(combined_markdown(results))
    return results


def evaluate_from_disk(run_dir: str | Path) -> dict:
    """`admn evaluate`: rebuild a Pipeline from `<run_dir>/settings.json`, reuse every stage, run evaluation."""
    run_dir = Path(run_dir)
    settings_path = run_dir / "settings.json"
    if not settings_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a pipeline run (no settings.json); run `admn train` first")
    settings = settings_from_dict(json.loads(settings_path.read_text()))
    timings_path = run_dir / "timings.json"
    trained = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    results = Pipeline(settings, run_dir).run()
    if trained:  # keep the training run's stage timings; only evaluation was re-timed
        trained["evaluate"] = json.loads(timings_path.read_text()).get("evaluate", trained.get("evaluate"))
        timings_path.write_text(json.dumps(trained, indent=1))
    return results
