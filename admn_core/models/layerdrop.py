"""Stage-1 LayerDrop mask sampling (official `*_Early.forward`).

Per modality and per forward call: each block kept with probability 1−p; independently, with probability
`full_backbone_drop` the whole backbone is dropped except block 0 (the paper's "Full-Backbone LayerDrop").
Official: one mask per modality per batch, shared by every sample and every view — which also lets the
grouped backbone path skip the dropped blocks during training. `per_sample=True` draws one mask per sample.
"""

from __future__ import annotations

import torch

from admn_core.config import LayerDropSpec


def sample_layerdrop_masks(
    num_modalities: int,
    depth: int,
    batch: int,
    rate: float,
    spec: LayerDropSpec,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Bool masks [batch, num_modalities, depth]; True = the block runs."""
    rows = batch if spec.per_sample else 1
    keep = torch.rand(rows, num_modalities, depth, generator=generator) >= rate
    full_drop = torch.rand(rows, num_modalities, generator=generator) < spec.full_backbone_drop
    only_first = torch.zeros(depth, dtype=torch.bool)
    only_first[0] = True
    keep[full_drop] = only_first
    return keep.expand(batch, -1, -1).contiguous().to(device)
