"""Universal (budget-conditioned) controller — paper appendix A.1; not in the official code.

The paper adds one learnable context token per trained budget (4 budgets) to the controller's TE input and draws a
random budget per batch. Here the budget token is a small MLP of Fourier features of the normalised budget
b̃ = (L − L_min)/(L_max − L_min), so neighbouring budgets share what they learn and every integer budget in range
is served — not only those a batch happened to draw. Tokens: [CLS, budget, one per (modality, view)]; CLS output →
e_corr → layer logits (and the corruption head). Selection stays select_layers(logits, L, costs): with unit costs
exactly L blocks are active for every L.

The controller itself (and `build_universal_controller`, which rebuilds it from a bundle's ControllerInfo) lives in
admn_core.models.universal_controller, so loading a bundle needs no training code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from admn_core.allocation import check_budget, maximum_budget, minimum_budget
from admn_core.config import ModelConfig
from admn_core.models.task_model import ADMNModel
from admn_core.models.universal_controller import UniversalController
from admn_core.train.autoencoder import ControllerAutoencoder
from admn_core.train.batching import CorruptionTargets
from admn_core.train.config import AutoencoderConfig, UniversalTrainConfig
from admn_core.train.controllers import fit_controller


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
