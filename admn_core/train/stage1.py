"""Stage 1: LayerDrop fine-tuning of the task model (paper §3.3; official `train.py`).

Per step: one LayerDrop mask per modality (shared by the batch and every view, official), drawn at the epoch's
rate `LayerDropSpec.rate_at(epoch)` with full-backbone drop; loss = model.loss(model(inputs, masks), target).
Boolean masks take the backbone's grouped path, so dropped blocks are really skipped during training.
Backbones frozen but for their last block(s) (`ModelConfig.modalities[i].trainable_last_blocks`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from admn_core.models.layerdrop import sample_layerdrop_masks
from admn_core.models.task_model import ADMNModel
from admn_core.train.batching import Batch, BatchCollator, blank_random_modality
from admn_core.train.config import Stage1Config
from admn_core.train.loop import (
    MeanMeter,
    init_distributed,
    make_loader,
    progress,
    resolve_device,
    seed_everything,
    start_epoch,
    step_generator,
    unwrap,
    warmup_cosine,
    wrap_ddp,
)
from admn_core.train.session import TrainingSession


def train_stage1(model: ADMNModel, train_set: Dataset, config: Stage1Config | None = None, *,
                 val_set: Dataset | None = None, clean_set: Dataset | None = None,
                 run_dir: str | Path | None = None, resume: bool = True) -> list[dict]:
    """Fine-tune `model` in place with LayerDrop; → one metrics dict per epoch run (history incl. resumed ones).

    `clean_set`: the uncorrupted twin of `train_set`, used for the first `config.clean_warmup_epochs` epochs.
    Metrics: `train_loss`, `layerdrop_rate`, `lr`, `clean` (1 during the warm-up), and with `val_set` the
    full-model `val_loss` / `val_error` (mean Euclidean error in model units, or accuracy for classification)."""
    config = config or Stage1Config()
    if config.clean_warmup_epochs and clean_set is None:
        raise ValueError(f"clean_warmup_epochs={config.clean_warmup_epochs} needs clean_set (the uncorrupted "
                         "twin of the training set)")
    info = init_distributed(config.device)
    device = resolve_device(config.device, info)
    seed_everything(config.seed + info.rank)
    model.to(device)
    if config.freeze_backbones:
        model.freeze_backbones()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    loader, sampler = make_loader(train_set, BatchCollator(model.config), config.batch_size, info, config.seed,
                                  num_workers=config.num_workers)
    clean_loader, clean_sampler = (make_loader(clean_set, BatchCollator(model.config), config.batch_size, info,
                                               config.seed, num_workers=config.num_workers)
                                   if config.clean_warmup_epochs else (None, None))
    # One scheduler: per step (warm-up + cosine, ours) or per epoch (LinearLR, official MM-Fi) or none (constant).
    step_scheduler = (warmup_cosine(optimizer, config.epochs * len(loader), config.warmup_cosine_fraction)
                      if config.warmup_cosine_fraction else None)
    epoch_scheduler = (torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, config.lr_end_factor,
                                                         total_iters=config.epochs)
                       if config.lr_end_factor > 0 and step_scheduler is None else None)
    session = TrainingSession("stage1", run_dir, config, info, {"model": model}, optimizer,
                              step_scheduler or epoch_scheduler, resume)
    wrapped = wrap_ddp(model, device, info)
    spec = config.layerdrop or model.config.layerdrop
    modalities, depth = len(model.config.modalities), model.config.blocks_per_backbone
    for epoch in session.epochs_to_run():
        session.begin_epoch()
        clean = epoch < config.clean_warmup_epochs
        epoch_loader, epoch_sampler = (clean_loader, clean_sampler) if clean else (loader, sampler)
        start_epoch(epoch_loader, epoch_sampler, epoch)
        # [ours] The clean warm-up trains every block of every backbone (no LayerDrop, no full-backbone drop):
        # on the simulated world, dropping from the first step keeps the network on the mean-guess plateau.
        epoch_spec = replace(spec, full_backbone_drop=0.0) if clean else spec
        rate = 0.0 if clean else spec.rate_at(epoch)
        generator = step_generator(config.seed, epoch, info.rank)
        model.train()
        meter = MeanMeter()
        for batch in progress(epoch_loader, config.progress and info.is_main, f"stage1 {epoch + 1}/{config.epochs}"):
            batch = batch.to(device)
            if clean and config.clean_modality_dropout:
                batch = replace(batch, inputs=blank_random_modality(batch.inputs, config.clean_modality_dropout,
                                                                    generator))
            masks = sample_layerdrop_masks(modalities, depth, len(batch), rate, epoch_spec, generator, device)
            loss = unwrap(wrapped).loss(wrapped(batch.inputs, masks), batch.target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip_norm)
            optimizer.step()
            if step_scheduler is not None:
                step_scheduler.step()
            meter.add(len(batch), train_loss=loss.item())
        metrics = {**meter.result(device), "layerdrop_rate": rate, "lr": optimizer.param_groups[0]["lr"],
                   "clean": int(clean)}
        if epoch_scheduler is not None:
            epoch_scheduler.step()
        if val_set is not None:
            metrics.update({f"val_{k}": v for k, v in evaluate_task(model, val_set, config.batch_size, device).items()})
        session.end_epoch(epoch, metrics)
    return session.history


@torch.no_grad()
def evaluate_task(model: ADMNModel, dataset: Dataset, batch_size: int = 32, device: str | torch.device = "cpu",
                  masks: torch.Tensor | None = None, seed: int = 0) -> dict[str, float]:
    """Loss and error of the task model on `dataset` with fixed masks ([M, depth] bool, or None = every block).

    → {"loss", "error"} for localization (mean Euclidean error, model units) or {"loss", "accuracy"}.
    Sharded over ranks when distributed; the means are global."""
    info = init_distributed(str(device))
    device = torch.device(device)
    loader, _ = make_loader(dataset, BatchCollator(model.config), batch_size, info, seed, shuffle=False)
    was_training = model.training
    model.eval()
    meter = MeanMeter()
    for batch in loader:
        batch: Batch = batch.to(device)
        batch_masks = None if masks is None else masks.to(device).expand(len(batch), -1, -1)
        output = model(batch.inputs, batch_masks)
        meter.add(len(batch), loss=model.loss(output, batch.target).item(), **task_error(model, output, batch.target))
    model.train(was_training)
    return meter.result(device)


def task_error(model: ADMNModel, output, target: torch.Tensor) -> dict[str, float]:
    """Localization: mean Euclidean error of the mean (model units; cm by default). Classification: accuracy."""
    if model.config.head.task == "localization":
        return {"error": torch.linalg.vector_norm(output.mean - target, dim=-1).mean().item()}
    return {"accuracy": (output.argmax(-1) == target).float().mean().item()}
