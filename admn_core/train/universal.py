"""Universal (budget-conditioned) controller — paper appendix A.1; not in the official code.

The paper adds one learnable context token per trained budget (4 budgets) to the controller's TE input and draws a
random budget per batch. Here the budget token is a small MLP of Fourier features of the normalised budget
b̃ = (L − L_min)/(L_max − L_min), so neighbouring budgets share what they learn and every integer budget in range
is served — not only those a batch happened to draw. Tokens: [CLS, budget, one per (modality, view)]; CLS output →
e_corr → layer logits (and the corruption head). Selection stays select_layers(logits, L, costs): with unit costs
exactly L blocks are active for every L.

Serving: `build_universal_controller(config, info)` rebuilds it from a bundle's ControllerInfo (kind "universal",
budget None); call it as controller(inputs, budget) → (logits [B, M, depth], corruption or None).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from admn_core.allocation import check_budget, maximum_budget, minimum_budget
from admn_core.config import ModelConfig
from admn_core.models.controller import QoIController
from admn_core.models.task_model import ADMNModel
from admn_core.train.autoencoder import ControllerAutoencoder
from admn_core.train.batching import CorruptionTargets
from admn_core.train.config import AutoencoderConfig, UniversalTrainConfig
from admn_core.train.controllers import fit_controller

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


def budget_range(model_config: ModelConfig, config: UniversalTrainConfig) -> tuple[int, int]:
    """[low, high] integer budgets trained: default from the always-on minimum to everything but one block."""
    low = minimum_budget(model_config) if config.budget_min is None else check_budget(model_config, config.budget_min)
    top = maximum_budget(model_config) - min(spec.layer_cost for spec in model_config.modalities)
    high = top if config.budget_max is None else check_budget(model_config, config.budget_max)
    if high < low:
        raise ValueError(f"budget range [{low}, {high}] is empty")
    return low, high


def train_universal_controller(model: ADMNModel, train_set: Dataset,
                               config: UniversalTrainConfig | None = None, *,
                               corruption: CorruptionTargets | None = None,
                               controller: UniversalController | None = None,
                               autoencoder: ControllerAutoencoder | None = None,
                               autoencoder_config: AutoencoderConfig | None = None,
                               val_set: Dataset | None = None, val_budgets: tuple[int, ...] | None = None,
                               run_dir: str | Path | None = None,
                               resume: bool = True) -> tuple[UniversalController, list[dict]]:
    """Train one controller for every integer budget in `budget_range`: one uniformly drawn budget per batch (from
    the step generator, so resumption is exact). Variants as train_controller. → (controller, per-epoch metrics;
    validation at `val_budgets`, default the range's ends and middle, as `val<L>_*`)."""
    config = config or UniversalTrainConfig()
    low, high = budget_range(model.config, config)
    if controller is None:
        outputs = corruption.num_outputs if config.supervised and corruption is not None else 0
        if config.supervised and corruption is None:
            outputs = CorruptionTargets().num_outputs
        controller = UniversalController(model.config, corruption_outputs=outputs)

    def draw(generator: torch.Generator) -> int:
        return int(torch.randint(low, high + 1, (1,), generator=generator))

    return fit_controller(model, train_set, config, budget_sampler=draw, stage="universal",
                          corruption=corruption, controller=controller, autoencoder=autoencoder,
                          autoencoder_config=autoencoder_config, val_set=val_set,
                          val_budgets=val_budgets or (low, (low + high) // 2, high), run_dir=run_dir, resume=resume)
