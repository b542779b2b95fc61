"""ADMN_AE's autoencoder (paper §3.4.2): the controller's perceptual part as encoder, a small
ConvTranspose decoder per modality reconstructing that modality's first view at the controller's input size.

Differences from the official `Conv_Controller_AE`, on purpose:
- the encoder *is* a QoIController (stems with their resize, CLS, TE), so its weights transfer by name — no
  "+1 index shift" for a Resize module;
- the decoder maps the latent through a Linear to a C×(H/4)×(W/4) grid and two stride-2 ConvTranspose layers
  (any latent width, any input size), instead of reshaping a 256 latent to 16×16 (tied to embed_dim 256);
- no BatchNorm (the official AE's BN keeps updating its statistics in the "frozen" encoder).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from admn_core.config import ModelConfig
from admn_core.models.controller import QoIController
from admn_core.train.batching import BatchCollator
from admn_core.train.config import AutoencoderConfig
from admn_core.train.loop import (
    MeanMeter,
    init_distributed,
    make_loader,
    progress,
    resolve_device,
    seed_everything,
    start_epoch,
    wrap_ddp,
)
from admn_core.train.session import TrainingSession

ENCODER_PARTS = ("stems", "cls", "encoder")  # what ADMN_AE transfers into the controller and freezes


class ConvDecoder(nn.Module):
    """latent [B, D] → reconstruction [B, channels, H, W] (H, W = the modality's controller input size)."""

    def __init__(self, latent: int, channels: int, size: tuple[int, int], width: int = 32):
        super().__init__()
        self.size = size
        self.grid = (math.ceil(size[0] / 4), math.ceil(size[1] / 4))
        self.width = width
        self.project = nn.Linear(latent, width * self.grid[0] * self.grid[1])
        self.deconv = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1),
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        grid = self.project(latent).view(-1, self.width, *self.grid)
        return self.deconv(grid)[..., : self.size[0], : self.size[1]]


class ControllerAutoencoder(nn.Module):
    def __init__(self, config: ModelConfig, decoder_channels: int = 32, reconstruct_view: int = 0):
        super().__init__()
        self.config = config
        self.reconstruct_view = reconstruct_view
        self.encoder = QoIController(config)  # only stems, cls and encoder are used (ENCODER_PARTS)
        self.decoders = nn.ModuleDict({
            m.name: ConvDecoder(config.controller.embed_dim, m.channels, m.controller_input_size, decoder_channels)
            for m in config.modalities})

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        latent = self.encoder.embed(inputs)
        return {name: decoder(latent) for name, decoder in self.decoders.items()}

    def targets(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The normalised input of view `reconstruct_view`, resized as the controller's stem resizes it."""
        out = {}
        for modality in self.config.modalities:
            view = inputs[modality.name][:, self.reconstruct_view]
            if tuple(view.shape[-2:]) != tuple(modality.controller_input_size):
                view = F.interpolate(view, size=modality.controller_input_size, mode="bilinear", align_corners=False)
            out[modality.name] = view
        return out

    def loss(self, reconstruction: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ over modalities of the MSE (official)."""
        return sum(F.mse_loss(reconstruction[name], targets[name]) for name in reconstruction)


def pretrain_autoencoder(config: ModelConfig, train_set: Dataset, ae_config: AutoencoderConfig | None = None,
                         *, run_dir: str | Path | None = None, resume: bool = True,
                         autoencoder: ControllerAutoencoder | None = None
                         ) -> tuple[ControllerAutoencoder, list[dict]]:
    """Train the AE on (corrupted, unlabelled) samples; → (autoencoder, per-epoch metrics `recon_loss`, `lr`)."""
    ae_config = ae_config or AutoencoderConfig()
    info = init_distributed(ae_config.device)
    device = resolve_device(ae_config.device, info)
    seed_everything(ae_config.seed + info.rank)
    autoencoder = autoencoder or ControllerAutoencoder(config, ae_config.decoder_channels, ae_config.reconstruct_view)
    autoencoder.to(device)
    for parameter in autoencoder.encoder.layer_logits.parameters():
        parameter.requires_grad_(False)  # not part of the encoder: stays at its init, unused
    parameters = [p for p in autoencoder.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=ae_config.lr)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, ae_config.lr_end_factor, total_iters=ae_config.epochs)
    session = TrainingSession("autoencoder", run_dir, ae_config, info, {"autoencoder": autoencoder}, optimizer,
                              scheduler, resume)
    wrapped = wrap_ddp(autoencoder, device, info)
    loader, sampler = make_loader(train_set, BatchCollator(config), ae_config.batch_size, info, ae_config.seed,
                                  num_workers=ae_config.num_workers)
    for epoch in session.epochs_to_run():
        session.begin_epoch()
        start_epoch(loader, sampler, epoch)
        autoencoder.train()
        meter = MeanMeter()
        for batch in progress(loader, ae_config.progress and info.is_main, f"AE {epoch + 1}/{ae_config.epochs}"):
            batch = batch.to(device)
            loss = autoencoder.loss(wrapped(batch.inputs), autoencoder.targets(batch.inputs))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if ae_config.grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(parameters, ae_config.grad_clip_norm)
            optimizer.step()
            meter.add(len(batch), recon_loss=loss.item())
        metrics = {**meter.result(device), "lr": optimizer.param_groups[0]["lr"]}
        scheduler.step()
        session.end_epoch(epoch, metrics)
    return autoencoder, session.history


def transfer_encoder(autoencoder: ControllerAutoencoder, controller: QoIController, freeze: bool = True) -> None:
    """Copy the AE encoder's stems, CLS and TE into `controller`; with `freeze`, only the controller's layer-logit
    MLP (and a universal controller's budget embedding) stays trainable — ADMN_AE's second phase."""
    source = autoencoder.encoder.state_dict()
    target = controller.state_dict()
    moved = {k: v for k, v in source.items() if k.split(".", 1)[0] in ENCODER_PARTS}
    missing = [k for k in target if k.split(".", 1)[0] in ENCODER_PARTS and k not in moved]
    if missing:
        raise ValueError(f"autoencoder encoder lacks controller weights {missing[:4]} (different configs?)")
    controller.load_state_dict({**target, **moved}, strict=True)
    if freeze:
        freeze_encoder(controller)


def freeze_encoder(controller: QoIController) -> None:
    """Only the allocation parts stay trainable (layer-logit MLP; a universal controller's budget embedding too):
    the encoder (ENCODER_PARTS) and the corruption head are frozen."""
    for name, parameter in controller.named_parameters():
        parameter.requires_grad_(name.split(".", 1)[0] not in ENCODER_PARTS and not name.startswith("corruption_head"))
