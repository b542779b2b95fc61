"""Error of a task model under an allocation rule, over a preprocessed TensorSet (mean Euclidean error in cm)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from admn_core.allocation import layer_costs, mask_cost, select_layers
from admn_core.models.task_model import ADMNModel
from admn_core.train.controllers import controller_logits

MaskRule = Callable[[dict[str, torch.Tensor]], torch.Tensor]  # preprocessed batch → bool [B, M, depth]


def fixed_rule(mask: torch.Tensor | None) -> MaskRule:
    """The same [M, depth] mask for every sample (None = every block)."""
    def rule(inputs):
        batch = next(iter(inputs.values())).shape[0]
        if mask is None:
            return None
        return mask.to(next(iter(inputs.values())).device).expand(batch, -1, -1)
    return rule


def controller_rule(model_config, controller, budget: int) -> MaskRule:
    """Inference-time allocation: top-L on the raw logits (per-budget or universal controller)."""
    costs = layer_costs(model_config)

    def rule(inputs):
        logits, _ = controller_logits(controller, inputs, budget)
        return select_layers(logits.float(), budget, costs)
    return rule


@torch.no_grad()
def evaluate_rule(model: ADMNModel, data, rule: MaskRule, batch_size: int = 64, device: str = "cpu",
                  keep_masks: bool = False) -> dict:
    """→ {"error_cm", "errors_cm" (per sample), "cost" (mean), "blocks" {modality: mean}, "masks" (optional)}."""
    model.to(device).eval()
    unit_cm = model.config.head.position_unit_m * 100.0
    costs = layer_costs(model.config)
    errors, used, all_masks = [], [], []
    depth = model.config.blocks_per_backbone
    for _, inputs, target in data.batches(batch_size):
        inputs = {k: v.to(device) for k, v in inputs.items()}
        masks = rule(inputs)
        output = model(inputs, masks)
        errors.append(torch.linalg.vector_norm(output.mean.cpu() - target, dim=-1) * unit_cm)
        if masks is None:
            masks = torch.ones(target.shape[0], len(model.config.modalities), depth, dtype=torch.bool)
        masks = masks.bool().cpu()
        used.append(mask_cost(masks, costs).float())
        all_masks.append(masks)
    errors_t = torch.cat(errors)
    masks_t = torch.cat(all_masks)
    blocks = masks_t.sum(-1).float().mean(0)
    result = {"error_cm": errors_t.mean().item(), "errors_cm": errors_t.tolist(),
              "cost": torch.cat(used).mean().item(),
              "max_cost": torch.cat(used).max().item(),
              "blocks": {n: blocks[i].item() for i, n in enumerate(model.config.modality_names)}}
    if keep_masks:
        result["masks"] = masks_t
    return result
