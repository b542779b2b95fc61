"""Stage 2: QoI controllers with the Stage-1 task model frozen (paper §3.4, A.1–A.2).

Per step: logits, corruption = controller(inputs); masks = select_layers(logits, L, costs, training=True, Gumbel
scale, τ) — Gumbel-softmax, hard top-(L − always-on), straight-through (or plain straight-through on the raw
logits for the "plain_st" ablation); task loss = model.loss(model(inputs, masks), target), where the float masks
take the backbone's mixing path (x ← m·block(x) + (1 − m)·x) so gradients reach the logits. Corruption-supervised
variants add CorruptionTargets' loss, alone during the warm-up epoch(s). Budgets are in cost units (paper
Table 4): with unequal `layer_cost`s select_layers picks greedily in logit order within the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from admn_core.allocation import check_budget, layer_costs, mask_cost, select_layers
from admn_core.models.controller import QoIController
from admn_core.models.task_model import ADMNModel
from admn_core.train.autoencoder import ControllerAutoencoder, freeze_encoder, pretrain_autoencoder, transfer_encoder
from admn_core.train.batching import Batch, BatchCollator, CorruptionTargets
from admn_core.train.config import AutoencoderConfig, ControllerTrainConfig
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
    wrap_ddp,
)
from admn_core.train.session import TrainingSession
from admn_core.train.stage1 import task_error

BudgetSampler = Callable[[torch.Generator], int]


def controller_logits(controller: QoIController, inputs: dict[str, torch.Tensor], budget: int):
    """(logits, corruption) from a per-budget controller or a budget-conditioned (universal) one."""
    if getattr(unwrap(controller), "budget_conditioned", False):
        return controller(inputs, budget)
    return controller(inputs)


def new_controller(model: ADMNModel, config: ControllerTrainConfig,
                   corruption: CorruptionTargets | None) -> QoIController:
    outputs = corruption.num_outputs if config.supervised and corruption is not None else 0
    return QoIController(model.config, corruption_outputs=outputs)


def train_controller(model: ADMNModel, train_set: Dataset, budget: int,
                     config: ControllerTrainConfig | None = None, *,
                     corruption: CorruptionTargets | None = None, controller: QoIController | None = None,
                     autoencoder: ControllerAutoencoder | None = None,
                     autoencoder_config: AutoencoderConfig | None = None,
                     val_set: Dataset | None = None, run_dir: str | Path | None = None,
                     resume: bool = True) -> tuple[QoIController, list[dict]]:
    """Train one controller for `budget` (cost units, always-on blocks included) on the frozen `model`.

    corruption: the supervision targets (variants corruption_supervised / plain_st; default CorruptionTargets(),
    the official GDTM-noise σ regression). autoencoder (variant "autoencoder"): a pretrained ControllerAutoencoder;
    None → pretrained here with `autoencoder_config` (official: 100 epochs) under `<run_dir>/autoencoder`.
    → (controller on the training device in eval mode, per-epoch metrics)."""
    config = config or ControllerTrainConfig()
    budget = check_budget(model.config, budget)
    return fit_controller(model, train_set, config, budget_sampler=lambda _generator: budget, stage="controller",
                          corruption=corruption, controller=controller, autoencoder=autoencoder,
                          autoencoder_config=autoencoder_config, val_set=val_set, val_budgets=(budget,),
                          run_dir=run_dir, resume=resume)


def fit_controller(model: ADMNModel, train_set: Dataset, config: ControllerTrainConfig, *,
                   budget_sampler: BudgetSampler, stage: str, val_budgets: Sequence[int],
                   corruption: CorruptionTargets | None = None, controller: QoIController | None = None,
                   autoencoder: ControllerAutoencoder | None = None,
                   autoencoder_config: AutoencoderConfig | None = None,
                   val_set: Dataset | None = None, run_dir: str | Path | None = None,
                   resume: bool = True) -> tuple[QoIController, list[dict]]:
    """The controller training loop shared by per-budget and universal controllers (one budget per batch)."""
    common = dict(budget_sampler=budget_sampler, val_budgets=val_budgets, corruption=corruption, val_set=val_set,
                  resume=resume)
    if config.freeze_encoder_after_warmup and config.supervised and 0 < config.warmup_epochs < config.epochs:
        # Two runs: the corruption-only warm-up (every part trains), then the layer MLP alone on the task loss.
        directory = None if run_dir is None else Path(run_dir)
        unfrozen = replace(config, freeze_encoder_after_warmup=False)
        controller, warm_history = fit_controller(
            model, train_set, replace(unfrozen, epochs=config.warmup_epochs, lr_schedule_after_warmup=False),
            stage=f"{stage} warm-up",
            controller=controller, run_dir=None if directory is None else directory / "warmup", **common)
        freeze_encoder(controller)
        controller, task_history = fit_controller(
            model, train_set, replace(unfrozen, epochs=config.epochs - config.warmup_epochs, warmup_epochs=0),
            stage=stage, controller=controller, run_dir=None if directory is None else directory / "task", **common)
        for parameter in controller.parameters():
            parameter.requires_grad_(True)
        return controller, warm_history + task_history
    info = init_distributed(config.device)
    device = resolve_device(config.device, info)
    seed_everything(config.seed + info.rank)
    if config.supervised and corruption is None:
        corruption = CorruptionTargets()
    if not config.supervised:
        corruption = None
    if corruption is not None:
        corruption.check(model.config)
    model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    controller = controller or new_controller(model, config, corruption)
    controller.to(device)
    if corruption is not None and (controller.corruption_head is None
                                   or controller.corruption_head[-1].out_features != corruption.num_outputs):
        raise ValueError(f"the controller's corruption head must have {corruption.num_outputs} outputs")
    if config.variant == "autoencoder":
        if autoencoder is None:
            ae_dir = None if run_dir is None else Path(run_dir) / "autoencoder"
            ae_config = autoencoder_config or AutoencoderConfig(seed=config.seed, device=config.device,
                                                                num_workers=config.num_workers,
                                                                progress=config.progress)
            autoencoder, _ = pretrain_autoencoder(model.config, train_set, ae_config, run_dir=ae_dir, resume=resume)
        transfer_encoder(autoencoder, controller, freeze=True)
    parameters = [p for p in controller.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    # Warm-up epochs exist only with a corruption head (`supervised`); with lr_schedule_after_warmup they run at the
    # full LR and the linear decay spans the task epochs.
    warmup_epochs = config.warmup_epochs if corruption is not None else 0
    scheduled_epochs = config.epochs - warmup_epochs if config.lr_schedule_after_warmup else config.epochs
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, config.lr_end_factor,
                                                  total_iters=max(scheduled_epochs, 1))
    session = TrainingSession(stage, run_dir, config, info, {"controller": controller}, optimizer, scheduler, resume)
    wrapped = wrap_ddp(controller, device, info)
    collate = BatchCollator(model.config, corruption)
    loader, sampler = make_loader(train_set, collate, config.batch_size, info, config.seed,
                                  num_workers=config.num_workers)
    spec = model.config.controller
    gumbel_scale = spec.gumbel_scale if config.gumbel_scale is None else config.gumbel_scale
    temperature = spec.temperature if config.temperature is None else config.temperature
    costs = layer_costs(model.config)
    names = model.config.modality_names
    for epoch in session.epochs_to_run():
        session.begin_epoch()
        start_epoch(loader, sampler, epoch)
        generator = step_generator(config.seed, epoch, info.rank)
        warmup = epoch < warmup_epochs
        controller.train()
        meter = MeanMeter()
        for batch in progress(loader, config.progress and info.is_main, f"{stage} {epoch + 1}/{config.epochs}"):
            batch: Batch = batch.to(device)
            budget = budget_sampler(generator)
            logits, predicted = controller_logits(wrapped, batch.inputs, budget)
            loss = torch.zeros((), device=device)
            values: dict[str, float] = {}
            if corruption is not None:
                corruption_loss = corruption.loss(predicted, batch.corruption)
                loss = loss + config.corruption_loss_weight * corruption_loss
                values["corruption_loss"] = corruption_loss.item()
            if not warmup:
                masks = select_layers(logits, budget, costs, training=True, gumbel_scale=gumbel_scale,
                                      temperature=temperature, straight_through=config.straight_through,
                                      generator=generator)
                task_loss = model.loss(model(batch.inputs, masks), batch.target)
                loss = loss + config.task_loss_weight * task_loss
                values["task_loss"] = task_loss.item()
                counts = masks.detach().bool().sum(-1).float().mean(0)
                values.update({f"blocks_{name}": counts[i].item() for i, name in enumerate(names)})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip_norm)
            optimizer.step()
            meter.add(len(batch), loss=loss.item(), **values)
        metrics = {**meter.result(device), "lr": optimizer.param_groups[0]["lr"], "warmup": float(warmup)}
        if not (warmup and config.lr_schedule_after_warmup):
            scheduler.step()
        if val_set is not None:
            for budget in val_budgets:
                result = evaluate_controller(model, controller, val_set, budget, config.batch_size, device, corruption)
                tag = "val" if len(val_budgets) == 1 else f"val{budget}"
                metrics.update({f"{tag}_{k}": v for k, v in result.items()})
        session.end_epoch(epoch, metrics)
    return controller.eval(), session.history


@torch.no_grad()
def evaluate_controller(model: ADMNModel, controller: QoIController, dataset: Dataset, budget: int,
                        batch_size: int = 32, device: str | torch.device = "cpu",
                        corruption: CorruptionTargets | None = None) -> dict[str, float]:
    """Inference-time allocation (top-L on raw logits) on `dataset`: task loss and error/accuracy, mean active blocks
    per modality, mean cost used, and with `corruption` the corruption loss. Global means across ranks."""
    info = init_distributed(str(device))
    device = torch.device(device)
    loader, _ = make_loader(dataset, BatchCollator(model.config, corruption), batch_size, info, 0, shuffle=False)
    was_training = controller.training
    controller.eval()
    model.eval()
    costs = layer_costs(model.config)
    meter = MeanMeter()
    for batch in loader:
        batch: Batch = batch.to(device)
        logits, predicted = controller_logits(controller, batch.inputs, budget)
        masks = select_layers(logits.float(), budget, costs)
        output = model(batch.inputs, masks)
        counts = masks.sum(-1).float().mean(0)
        values = {"loss": model.loss(output, batch.target).item(), **task_error(model, output, batch.target),
                  "cost": mask_cost(masks, costs).float().mean().item(),
                  **{f"blocks_{n}": counts[i].item() for i, n in enumerate(model.config.modality_names)}}
        if corruption is not None and predicted is not None:
            values["corruption_loss"] = corruption.loss(predicted, batch.corruption).item()
        meter.add(len(batch), **values)
    controller.train(was_training)
    return meter.result(device)


@torch.no_grad()
def allocations(model_config, controller: QoIController, inputs: dict[str, torch.Tensor], budget: int) -> torch.Tensor:
    """Inference masks [B, M, depth] (bool) the controller picks for preprocessed `inputs` at `budget`."""
    was_training = controller.training
    controller.eval()
    logits, _ = controller_logits(controller, inputs, budget)
    controller.train(was_training)
    return select_layers(logits.float(), budget, layer_costs(model_config))
