"""Training configuration dataclasses (Stage 1, controllers, autoencoder, universal controller).

Defaults are the official code's values for GDTM (`neurips_*.sh` and argparse defaults); each field
says where its default comes from and where the paper differs ([paper] / [code] / [ours]). Every config is a frozen
dataclass with strict dict/YAML round trips (`to_dict`, `train_config_from_dict`): an unknown key is an error.

Device handling: `device` is a string ("cpu", "cuda", "cuda:1", "mps"); under `torchrun` with a CUDA device the
local rank's GPU is used. Nothing in admn_core.train hard-codes a CUDA device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from admn_core.config import ConfigError, LayerDropSpec, _from_plain, _to_plain

STAGES = ("data", "stage1", "controllers", "baselines")  # where `admn train --until` may stop the pipeline

CONTROLLER_VARIANTS = ("corruption_supervised", "task_only", "plain_st", "autoencoder")


@dataclass(frozen=True)
class RunOptions:
    """What every training run shares: seed, device, data loading, checkpoint cadence, progress output."""

    seed: int = 100  # [code] every neurips_*.sh passes --seed 100; the paper's A.5 uses 100–600
    device: str = "cpu"
    num_workers: int = 0  # DataLoader workers (the datasets are deterministic per index, so workers are safe)
    checkpoint_every: int = 1  # [code] `last.pt` every epoch; here an atomic safetensors+JSON state every N epochs
    progress: bool = True  # per-epoch log line on rank 0 (plus a per-batch tqdm bar on a terminal)
    grad_clip_norm: float = 0.0  # 0 = off [code: never clips]

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise ConfigError("checkpoint_every must be >= 1")
        if self.num_workers < 0:
            raise ConfigError("num_workers must be >= 0")


@dataclass(frozen=True)
class Stage1Config(RunOptions):
    """Stage 1: LayerDrop fine-tuning of the task model (paper §3.3)."""

    epochs: int = 200  # [code] 200 for every dataset; [paper] Table 13: 400 (GDTM-Noise, MM-Fi), 100 (Lowlight), 200
    lr: float = 5e-4  # [code] and [paper] for GDTM and AVE (MM-Fi: code 1e-3, paper 1e-4)
    batch_size: int = 32  # [code] GDTM (MM-Fi/AVE: 8)
    weight_decay: float = 0.0  # [code] plain Adam
    lr_end_factor: float = 0.0  # 0 = constant LR [code GDTM/AVE]; MM-Fi: LinearLR 1 → 1e-3; [paper] says LinearLR
    # [ours] > 0: per step, linear warm-up over this fraction of all steps, then cosine decay to 0 (replaces
    # lr_end_factor). From scratch, constant Adam at 1e-3 left the mean-guess plateau only after ~300 steps on clean
    # RGB; warm-up + cosine at 5e-4 after ~100 (README, training notes).
    warmup_cosine_fraction: float = 0.0
    freeze_backbones: bool = True  # [code] every backbone parameter but the last block(s) (ModelConfig per modality)
    # None → the model config's LayerDropSpec: [code] rate 0 → +0.1 every 10 epochs up to 0.2 (not in the paper,
    # which states 0.2 throughout), full-backbone drop 0.1 from epoch 0 [code and paper].
    layerdrop: LayerDropSpec | None = None
    # Epochs 0 … N−1 train on the clean twin of the training set (`train_stage1(clean_set=…)`) [code: GDTM and
    # MM-Fi Stage 1 add no noise in epochs 0–4 of 200; not in the paper], with every block on (no LayerDrop, no
    # full-backbone drop during those epochs: ours). 0 = corrupted data and LayerDrop from the start.
    clean_warmup_epochs: int = 0
    # [ours] Modality dropout (ModDrop) during the clean warm-up: each sample, with this probability, has one
    # uniformly chosen modality blanked (all its views set to the normalised mean, i.e. zeros). Without it the
    # fused model learnt only the easy modality (RGB) and never the other: on the lowlight world, clean depth
    # with dark RGB gave 128 cm, the mean guess (README, training notes).
    clean_modality_dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "epochs", "batch_size")
        if not 0 <= self.clean_modality_dropout <= 1:
            raise ConfigError(f"clean_modality_dropout must be in [0, 1], got {self.clean_modality_dropout}")
        if not 0 <= self.warmup_cosine_fraction < 1:
            raise ConfigError(f"warmup_cosine_fraction must be in [0, 1), got {self.warmup_cosine_fraction}")
        if not 0 <= self.clean_warmup_epochs <= self.epochs:
            raise ConfigError(f"clean_warmup_epochs must be in [0, epochs={self.epochs}], "
                              f"got {self.clean_warmup_epochs}")
        if self.lr <= 0:
            raise ConfigError("lr must be > 0")


@dataclass(frozen=True)
class ControllerTrainConfig(RunOptions):
    """Stage 2: one QoI controller for one budget, the task model frozen (paper §3.4, A.1).

    variant:
    - "corruption_supervised": task loss + corruption loss, corruption-only warm-up epoch(s) [code and paper A.1];
    - "task_only": task loss only, no corruption head, no warm-up [code `train_controller_no_supervision.py`];
    - "plain_st": as corruption_supervised but top-L on the raw logits with a plain straight-through estimator
      (no Gumbel, no softmax) [paper Table 6 ablation, code `--discretization_method straight_through`];
    - "autoencoder" (ADMN_AE): pretrain an autoencoder whose encoder is the controller's stems + CLS + TE, freeze
      it, train only the layer-logit MLP on the task loss [code `train_AE*.py`, paper §3.4.2].
    """

    variant: str = "corruption_supervised"
    epochs: int = 10  # [code] and [paper] GDTM (MM-Fi 15; AVE: code 10, paper 15)
    lr: float = 1e-3  # [code] and [paper]
    lr_end_factor: float = 0.01  # [code] LinearLR 1.0 → 0.01 over `epochs`, stepped per epoch ([paper]: "linear decay")
    batch_size: int = 32  # [code] GDTM (MM-Fi/AVE 8)
    warmup_epochs: int = 1  # [code] and [paper A.1]: corruption loss only (MM-Fi code: 5); unused without supervision
    # [code MM-Fi] The LR schedule starts after the warm-up (LinearLR over the task epochs only; the warm-up runs at
    # the full LR). False [code GDTM]: one schedule over every epoch, warm-up included.
    lr_schedule_after_warmup: bool = False
    # [ours] After the corruption-only warm-up, freeze the encoder and the corruption head and train only the layer
    # MLP on the task loss (as ADMN_AE does with its autoencoder encoder): a fresh optimizer and LR schedule over
    # the remaining epochs. Jointly trained (False [code, paper]), the controller sometimes settled on one
    # allocation for every input (README, "the L = 6 controller can collapse").
    freeze_encoder_after_warmup: bool = False
    # None → the model config's ControllerSpec: [code] τ = 1, Gumbel noise × 0.1 ([paper] says τ = 1, no scale)
    temperature: float | None = None
    gumbel_scale: float | None = None
    task_loss_weight: float = 1.0  # [code] GDTM Noise: NLL + 0.05·dist via the head's loss, weight 1
    corruption_loss_weight: float = 1.0  # multiplies CorruptionTargets' own per-modality weights (code: 1, 20)

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "epochs", "batch_size")
        if self.variant not in CONTROLLER_VARIANTS:
            raise ConfigError(f"variant must be one of {CONTROLLER_VARIANTS}, got {self.variant!r}")
        if self.warmup_epochs < 0:
            raise ConfigError("warmup_epochs must be >= 0")
        if self.lr_schedule_after_warmup and self.supervised and self.warmup_epochs >= self.epochs:
            raise ConfigError(f"lr_schedule_after_warmup needs task epochs after the warm-up: epochs={self.epochs}, "
                              f"warmup_epochs={self.warmup_epochs}")
        if not 0 < self.lr_end_factor <= 1:
            raise ConfigError("lr_end_factor must be in (0, 1] (LinearLR)")

    @property
    def supervised(self) -> bool:
        """Whether a corruption head is trained (and the corruption-only warm-up applies)."""
        return self.variant in ("corruption_supervised", "plain_st")

    @property
    def straight_through(self) -> bool:
        """Gumbel-softmax + top-L + straight-through (ADMN) vs plain straight-through on raw logits."""
        return self.variant != "plain_st"


@dataclass(frozen=True)
class AutoencoderConfig(RunOptions):
    """ADMN_AE pretraining: reconstruct the controller-resized first view of every modality."""

    epochs: int = 100  # [code] train_AE.py scripts (not in the paper)
    lr: float = 1e-3  # [code]
    lr_end_factor: float = 1e-3  # [code] GDTM LinearLR → 0.001× (AVE, MM-Fi: 0.01×)
    batch_size: int = 32  # [code] GDTM/AVE (MM-Fi 8)
    decoder_channels: int = 32  # [ours] ConvT width; [code] ConvT 1→32→32→C from a 16×16 latent grid
    reconstruct_view: int = 0  # [code] node 1 / frame 0 only; the encoder still sees every view

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "epochs", "batch_size", "decoder_channels")


@dataclass(frozen=True)
class UniversalTrainConfig(ControllerTrainConfig):
    """Universal controller (paper A.1; not in the official code): one set of weights for every integer budget.

    Each batch draws one budget uniformly from [budget_min, budget_max] ([paper]: a random budget per batch over its
    four budgets; [ours]: every integer budget). None → the config's always-on minimum / everything but one block.
    """

    budget_min: int | None = None
    budget_max: int | None = None


@dataclass(frozen=True)
class PipelineConfig:
    """Convenience bundle of every stage's config (one YAML file for a whole run)."""

    stage1: Stage1Config = field(default_factory=Stage1Config)
    controller: ControllerTrainConfig = field(default_factory=ControllerTrainConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    universal: UniversalTrainConfig = field(default_factory=UniversalTrainConfig)
    budgets: tuple[int, ...] = (6, 8, 12, 16)  # [code] and [paper] GDTM budgets


def _positive(config: Any, *names: str) -> None:
    for name in names:
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(config, name)}")


def to_dict(config: Any) -> dict[str, Any]:
    return _to_plain(config)


def train_config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Strictly build `cls` (any config dataclass here) from plain data (YAML/JSON); unknown keys are errors."""
    return _from_plain(cls, data, cls.__name__)


def load_train_config(cls: type, path) -> Any:
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    try:
        return train_config_from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
