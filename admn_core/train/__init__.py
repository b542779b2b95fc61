"""Training: Stage 1 (LayerDrop fine-tuning), Stage 2 controllers (corruption-supervised, task-only, plain
straight-through, ADMN_AE) and the universal budget-conditioned controller; resumable, seeded, torchrun-ready.

Entry points:
- `train_stage1(model, train_set, Stage1Config(...), val_set=, run_dir=)` → per-epoch metrics
- `train_controller(model, train_set, budget, ControllerTrainConfig(variant=...), corruption=CorruptionTargets(...),
  run_dir=)` → (QoIController, metrics)
- `pretrain_autoencoder(config, train_set, AutoencoderConfig(...))` → (ControllerAutoencoder, metrics)
- `train_universal_controller(model, train_set, UniversalTrainConfig(...), corruption=...)` → (UniversalController,
  metrics); `build_universal_controller(config, info)` rebuilds one for a bundle
- `pretrain_mae(config, train_set, MAEConfig(...), out_dir)` → Stage 0 encoders (timm keys); `load_mae_backbones`
- pipeline: `admn_core.train.pipeline.run_pipeline` (`admn train`); baselines: `admn_core.train.baselines`
- `evaluate_task`, `evaluate_controller`, `allocations` for validation
"""

from admn_core.models.universal_controller import UniversalController, build_universal_controller
from admn_core.train.autoencoder import ControllerAutoencoder, pretrain_autoencoder, transfer_encoder
from admn_core.train.batching import Batch, BatchCollator, CorruptionTargets, task_targets
from admn_core.train.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint
from admn_core.train.config import (
    AutoencoderConfig,
    ControllerTrainConfig,
    PipelineConfig,
    Stage1Config,
    UniversalTrainConfig,
    load_train_config,
    train_config_from_dict,
)
from admn_core.train.controllers import allocations, evaluate_controller, new_controller, train_controller
from admn_core.train.mae import MAEConfig, MaskedAutoencoder, load_mae_backbones, pretrain_mae
from admn_core.train.stage1 import evaluate_task, train_stage1
from admn_core.train.universal import train_universal_controller

__all__ = [
    "AutoencoderConfig",
    "Batch",
    "BatchCollator",
    "ControllerAutoencoder",
    "ControllerTrainConfig",
    "CorruptionTargets",
    "MAEConfig",
    "MaskedAutoencoder",
    "PipelineConfig",
    "Stage1Config",
    "UniversalController",
    "UniversalTrainConfig",
    "allocations",
    "build_universal_controller",
    "checkpoint_path",
    "evaluate_controller",
    "evaluate_task",
    "load_checkpoint",
    "load_mae_backbones",
    "load_train_config",
    "new_controller",
    "pretrain_autoencoder",
    "pretrain_mae",
    "save_checkpoint",
    "task_targets",
    "train_config_from_dict",
    "train_controller",
    "train_stage1",
    "train_universal_controller",
    "transfer_encoder",
]
