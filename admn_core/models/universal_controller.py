"""Universal (budget-conditioned) QoI controller — paper appendix A.1; not in the official code.

The paper adds one learnable context token per trained budget (4 budgets) to the controller's TE input. Here the
budget token is a small MLP of Fourier features of the normalised budget b̃ = (L − L_min)/(L_max − L_min), so
neighbouring budgets share what they learn and every integer budget in range is served. Tokens: [CLS, budget, one per
(modality, view)]; CLS output → e_corr → layer logits (and the corruption head). Selection stays
select_layers(logits, L, costs): with unit costs exactly L blocks are active for every L.

Training lives in admn_core.train.universal; this module is what serving (bundle loading) needs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from admn_core.allocation import maximum_budget, minimum_budget
from admn_core.config import ModelConfig
from admn_core.models.controller import QoIController

FOURIER_FEATURES = 8


class UniversalController(QoIController):
    budget_conditioned = True

    def __init__(self, config: ModelConfig, corruption_outputs: int = 0):
        super().__init__(config, corruption_outputs)
        self.min_budget = minimum_budget(config)
        self.max_budget = maximum_budget(config)
        dim = config.controller.embed_dim
        self.budget_embedding = nn.Sequential(nn.Linear(2 * FOURIER_FEATURES, dim), nn.GELU(), nn.Linear(dim, dim))
        self.register_buffer("frequencies", math.pi * 2.0 ** torch.arange(FOURIER_FEATURES, dtype=torch.float32)
                             / 2.0 ** (FOURIER_FEATURES - 1) * 4, persistent=False)

    def budget_token(self, budget: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
        """[B, 1, embed] for an int budget or a per-sample LongTensor [B]."""
        budgets = torch.as_tensor(budget, device=device, dtype=torch.float32).reshape(-1).expand(batch)
        span = max(self.max_budget - self.min_budget, 1)
        normalised = ((budgets - self.min_budget) / span).clamp(0.0, 1.0)[:, None]  # [B, 1]
        angles = normalised * self.frequencies  # [B, F]
        features = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
        return self.budget_embedding(features)[:, None]

    def embed(self, inputs: dict[str, torch.Tensor], budget: int | torch.Tensor = None) -> torch.Tensor:
        """inputs {modality: [B, V, C, H, W]}, budget → e_corr [B, embed]."""
        if budget is None:
            raise TypeError("a universal controller needs the budget: controller(inputs, budget)")
        tokens = []
        for modality in self.config.modalities:
            x = inputs[modality.name]
            batch, views = x.shape[:2]
            tokens.append(self.stems[modality.name](x.flatten(0, 1)).view(batch, views, -1))
        batch = tokens[0].shape[0]
        cls = self.cls.expand(batch, -1, -1)
        context = self.budget_token(budget, batch, cls.device).to(cls.dtype)
        return self.encoder(torch.cat([cls, context, *tokens], dim=1))[:, 0]

    def forward(self, inputs: dict[str, torch.Tensor], budget: int | torch.Tensor = None):
        """→ (layer logits [B, M, depth], corruption prediction [B, K] or None) for `budget` (cost units)."""
        e_corr = self.embed(inputs, budget)
        logits = self.layer_logits(e_corr).view(-1, self.num_modalities, self.depth)
        corruption = self.corruption_head(e_corr) if self.corruption_head is not None else None
        return logits, corruption


def build_universal_controller(config: ModelConfig, info) -> UniversalController:
    """Bundle hook: a ControllerInfo with kind "universal" → an untrained UniversalController of the right shape."""
    if getattr(info, "kind", "universal") != "universal":
        raise ValueError(f"controller {info.name!r} is not universal (kind {info.kind!r})")
    return UniversalController(config, corruption_outputs=info.corruption_outputs)
