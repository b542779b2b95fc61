"""Budgets, costs and layer masks (paper §3.4).

A budget L is the total cost of the active blocks over all modalities, including block 0 of every
modality, which is always on. With equal costs (the default, 1 per block) L counts blocks. Executed
compute never exceeds the budget; a budget below the always-on minimum is refused, never rounded up.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from admn_core.config import ModelConfig

# Official "every-other" keep sets per backbone (neurips_test_stage_1*.sh): hand-picked,
# not nested, always keeping the first and last blocks. Used for Naive Allocation and single-modality rows.
OFFICIAL_KEEP_SETS: dict[int, tuple[int, ...]] = {
    12: tuple(range(12)),
    8: (0, 1, 2, 4, 6, 8, 10, 11),
    6: (0, 1, 3, 8, 10, 11),
    4: (0, 8, 10, 11),
    3: (0, 10, 11),
    0: (),
}


class BudgetError(ValueError):
    """A budget that cannot be obeyed (below the always-on minimum, or not an integer)."""


def layer_costs(config: ModelConfig) -> torch.Tensor:
    """[M] cost of one block per modality."""
    return torch.tensor([spec.layer_cost for spec in config.modalities], dtype=torch.long)


def minimum_budget(config: ModelConfig) -> int:
    """Cost of the always-on block 0 of every modality. Plain Python, no tensor: also valid while modules are built
    on the meta device (bundle loading checks shapes that way without allocating)."""
    return sum(spec.layer_cost for spec in config.modalities)


def maximum_budget(config: ModelConfig) -> int:
    return minimum_budget(config) * config.blocks_per_backbone


def mask_cost(masks: torch.Tensor, costs: torch.Tensor) -> torch.Tensor:
    """masks [B, M, depth] → cost per sample [B]."""
    return (masks.bool().sum(dim=-1) * costs.to(masks.device)).sum(dim=-1)


def check_budget(config: ModelConfig, budget: int) -> int:
    """Validate a budget; returns the budget clipped to the maximum (asking for more than everything is fine)."""
    if isinstance(budget, bool) or int(budget) != budget:
        raise BudgetError(f"budget must be an integer, got {budget!r}")
    low = minimum_budget(config)
    if budget < low:
        raise BudgetError(
            f"budget {budget} is below the minimum {low} (block 0 of each of {len(config.modalities)} modalities "
            "is always on); nothing is run")
    return min(int(budget), maximum_budget(config))


def select_layers(
    logits: torch.Tensor,
    budget: int,
    costs: torch.Tensor | None = None,
    training: bool = False,
    gumbel_scale: float = 0.1,
    temperature: float = 1.0,
    straight_through: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Top-L selection over all modalities' layer logits jointly (official `ConvLayerController.forward`).

    logits [B, M, depth]. Block 0 of every modality is forced on and excluded from the choice, so
    L − (always-on cost) further blocks are picked. Training: y = softmax((π + s·g)/τ) with Gumbel noise g
    (official s = 0.1), hard top-k of y, straight-through (forward = exact 0/1, gradient into y).
    `straight_through=False` (plain-ST ablation) ranks the raw logits and passes gradients to them directly.
    Inference: top-k of the raw logits, returns a bool mask. Unequal costs use a greedy pass in logit order.
    """
    batch, modalities, depth = logits.shape
    costs = torch.ones(modalities, dtype=torch.long) if costs is None else costs
    always_on = int(costs.sum())
    if budget < always_on:
        raise BudgetError(f"budget {budget} is below the always-on minimum {always_on}")
    candidates = logits.clone()
    candidates[:, :, 0] = float("-inf")
    flat = candidates.flatten(1)  # [B, M·depth]
    if training and straight_through:
        noise = -torch.log(-torch.log(torch.rand(flat.shape, generator=generator).to(flat) + 1e-12) + 1e-12)
        soft = torch.softmax((flat + gumbel_scale * noise) / temperature, dim=-1)
        ranking = soft
    elif training:
        # Plain straight-through: rank the raw logits (block 0 stays at −inf so it never takes a slot) and let
        # the gradient flow into the logits themselves (the −inf entries carry none).
        ranking = flat
        soft = flat.masked_fill(torch.isinf(flat), 0.0)
    else:
        soft = ranking = flat
    if bool((costs == 1).all()):
        extra = min(budget - always_on, modalities * (depth - 1))
        hard = torch.zeros_like(flat, dtype=torch.bool)
        hard.scatter_(1, ranking.topk(extra, dim=-1).indices, True)
    else:
        hard = _greedy_by_cost(ranking.detach(), budget - always_on, costs, depth)
    hard = hard.view(batch, modalities, depth)
    hard[:, :, 0] = True
    if not training:
        return hard
    soft = soft.view(batch, modalities, depth)
    return soft + (hard.to(soft.dtype) - soft).detach()


def _greedy_by_cost(scores: torch.Tensor, spare: int, costs: torch.Tensor, depth: int) -> torch.Tensor:
    """Accept blocks in descending score order while their cost still fits the spare budget. [B, M·depth] bool."""
    per_index_cost = costs.repeat_interleave(depth).tolist()
    hard = torch.zeros_like(scores, dtype=torch.bool)
    for row, order in enumerate(scores.argsort(dim=-1, descending=True).tolist()):
        left = spare
        for index in order:
            if index % depth == 0:
                continue
            if per_index_cost[index] <= left:
                hard[row, index] = True
                left -= per_index_cost[index]
            if left == 0:
                break
    return hard


def keep_set(layers: int, depth: int = 12) -> tuple[int, ...]:
    """Blocks kept when a backbone runs `layers` of `depth` blocks: the official hand-picked sets where they
    exist, otherwise LayerDrop's every-other rule (drop alternately from the middle, keep first and last)."""
    if not 0 <= layers <= depth:
        raise BudgetError(f"cannot keep {layers} of {depth} blocks")
    if depth == 12 and layers in OFFICIAL_KEEP_SETS:
        return OFFICIAL_KEEP_SETS[layers]
    if layers == 0:
        return ()
    if layers == 1:
        return (0,)
    kept = set(range(depth))
    middle = depth // 2
    # Visit inner blocks alternately around the middle: middle, middle−2, middle+2, … then the odd offsets.
    order = sorted(range(1, depth - 1), key=lambda i: ((i - middle) % 2, abs(i - middle), i))
    for index in order:
        if len(kept) == layers:
            break
        kept.discard(index)
    while len(kept) > layers:  # only first and last remain candidates when layers == 1 handled above
        kept.discard(max(kept))
    return tuple(sorted(kept))


def naive_allocation(config: ModelConfig, budget: int) -> torch.Tensor:
    """Naive Allocation baseline (paper §4): the budget split evenly across modalities (by cost), each backbone
    running its every-other keep set. Returns a bool mask [M, depth]; the cost never exceeds the budget."""
    budget = check_budget(config, budget)
    depth = config.blocks_per_backbone
    costs = layer_costs(config).tolist()
    layers = [1] * len(costs)
    spent = sum(costs)
    while True:  # round-robin one block at a time while it fits: an even split that never overshoots
        grew = False
        for index, cost in enumerate(costs):
            if layers[index] < depth and spent + cost <= budget:
                layers[index] += 1
                spent += cost
                grew = True
        if not grew:
            break
    mask = torch.zeros(len(costs), depth, dtype=torch.bool)
    for index, count in enumerate(layers):
        mask[index, list(keep_set(count, depth))] = True
    return mask


def masks_from_keep_sets(config: ModelConfig, kept: Sequence[Sequence[int]]) -> torch.Tensor:
    """Per-modality lists of kept block indices → bool mask [M, depth]."""
    if len(kept) != len(config.modalities):
        raise ValueError(f"need one keep list per modality ({len(config.modalities)}), got {len(kept)}")
    mask = torch.zeros(len(config.modalities), config.blocks_per_backbone, dtype=torch.bool)
    for index, blocks in enumerate(kept):
        mask[index, list(blocks)] = True
    return mask
