"""QoI controller (official GDTM `ConvLayerController`) and top-L layer selection.

Per modality a conv stem sees the *normalised* backbone inputs resized to `controller_input_size`
(official: 100×100), shared across views; tokens = CLS + one per (modality, view); sinusoidal positions;
a small transformer; the CLS output e_corr → layer-logit MLP (no bias, U(±0.005) init) → logits [B, M, depth].
An optional corruption head predicts per-modality corruption from e_corr (used by corruption supervision).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from admn_core.config import ControllerSpec, ModalitySpec, ModelConfig
from admn_core.models.fusion import TransformerEncoder


class ConvStem(nn.Module):
    """[N, C, H, W] → [N, embed]: resize, conv k1 → ReLU → conv k2 → ReLU → maxpool → conv k3 → ReLU → Linear."""

    def __init__(self, modality: ModalitySpec, spec: ControllerSpec):
        super().__init__()
        self.size = modality.controller_input_size
        first, second, third = spec.stem_kernels
        channels = spec.stem_channels
        self.convs = nn.Sequential(
            nn.Conv2d(modality.channels, channels, first), nn.ReLU(),
            nn.Conv2d(channels, channels, second), nn.ReLU(),
            nn.MaxPool2d(spec.stem_pool),
            nn.Conv2d(channels, 3, third), nn.ReLU(),
        )
        height, width = self.size
        for kernel, pool in ((first, 1), (second, 1), (1, spec.stem_pool), (third, 1)):
            height, width = (height - kernel + 1) // pool, (width - kernel + 1) // pool
        if height < 1 or width < 1:
            raise ValueError(f"controller stem for {modality.name!r}: input {self.size} too small for kernels")
        self.flat_features = 3 * height * width  # official GDTM: 3·23·23 = 1587 at 100×100
        self.proj = nn.Linear(self.flat_features, spec.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.proj(self.convs(x).flatten(1))


class QoIController(nn.Module):
    def __init__(self, config: ModelConfig, corruption_outputs: int = 0):
        super().__init__()
        spec = config.controller
        self.config = config
        self.num_modalities = len(config.modalities)
        self.depth = config.blocks_per_backbone
        self.stems = nn.ModuleDict({m.name: ConvStem(m, spec) for m in config.modalities})
        self.cls = nn.Parameter(torch.zeros(1, 1, spec.embed_dim))
        self.encoder = TransformerEncoder(spec.embed_dim, spec.depth, spec.heads, spec.dim_head, spec.mlp_dim)
        self.layer_logits = nn.Sequential(
            nn.Linear(spec.embed_dim, spec.logit_hidden, bias=False), nn.ReLU(),
            nn.Linear(spec.logit_hidden, self.num_modalities * self.depth, bias=False))
        for layer in (self.layer_logits[0], self.layer_logits[2]):
            nn.init.uniform_(layer.weight, -spec.logit_init_range, spec.logit_init_range)
        self.corruption_head = (
            nn.Sequential(nn.Linear(spec.embed_dim, 250), nn.ReLU(), nn.Linear(250, corruption_outputs))
            if corruption_outputs else None)

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """inputs {modality: [B, V, C, H, W]} → e_corr [B, embed]."""
        tokens = []
        for modality in self.config.modalities:
            x = inputs[modality.name]
            batch, views = x.shape[:2]
            tokens.append(self.stems[modality.name](x.flatten(0, 1)).view(batch, views, -1))
        tokens = torch.cat([self.cls.expand(tokens[0].shape[0], -1, -1), *tokens], dim=1)
        return self.encoder(tokens)[:, 0]

    def forward(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """→ (layer logits [B, M, depth], corruption prediction [B, K] or None)."""
        e_corr = self.embed(inputs)
        logits = self.layer_logits(e_corr).view(-1, self.num_modalities, self.depth)
        corruption = self.corruption_head(e_corr) if self.corruption_head is not None else None
        return logits, corruption
