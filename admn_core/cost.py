"""Analytic cost model: FLOPs per block per modality, and per allocation for the whole model.

FLOPs = 2 × multiply-accumulates of the matrix products and convolutions — the convention of
`torch.utils.flop_counter` (used to check this model in the tests). The paper's fvcore figures count a
multiply-accumulate as one FLOP, i.e. half of these numbers. Norms, softmax, activations and resizes are
not counted, as neither counter counts them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils import flop_counter

from admn_core.config import ControllerSpec, ModalitySpec, ModelConfig


def block_flops(spec: ModalitySpec) -> int:
    """One ViT block over all tokens of one view."""
    tokens, dim = spec.num_tokens, spec.embed_dim
    hidden = int(dim * spec.mlp_ratio)
    qkv = 2 * tokens * dim * 3 * dim
    attention = 2 * 2 * tokens * tokens * dim  # QKᵀ and attention·V over all heads
    projection = 2 * tokens * dim * dim
    mlp = 2 * 2 * tokens * dim * hidden
    return qkv + attention + projection + mlp


def unequal_layer_costs(modalities: tuple[ModalitySpec, ...]) -> tuple[int, ...]:
    """Budget units per block for each modality, by the paper's unequal-cost rule (§4, Table 4): a block of a
    modality costs its FLOPs per sample (every view and frame) over the cheapest modality's, rounded (≥ 1).
    AVE at paper size: 8 frames × 197 tokens against one 513-token spectrogram → 3 : 1, as the paper's."""
    per_sample = [spec.images_per_sample * block_flops(spec) for spec in modalities]
    cheapest = min(per_sample)
    return tuple(max(1, round(flops / cheapest)) for flops in per_sample)


def patch_embed_flops(spec: ModalitySpec) -> int:
    return 2 * spec.num_patches * spec.embed_dim * spec.channels * spec.patch_size ** 2


def readout_flops(spec: ModalitySpec) -> int:
    """The backbone's readout of one view: only "grid" has a matrix product (Linear G²·D → D)."""
    return 2 * spec.readout_grid ** 2 * spec.embed_dim * spec.embed_dim if spec.readout == "grid" else 0


def transformer_flops(tokens: int, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int) -> int:
    inner = heads * dim_head
    per_layer = (2 * tokens * dim * 3 * inner + 2 * 2 * tokens * tokens * inner + 2 * tokens * inner * dim
                 + 2 * 2 * tokens * dim * mlp_dim)
    return depth * per_layer


def controller_flops(config: ModelConfig, corruption_outputs: int = 0) -> int:
    spec: ControllerSpec = config.controller
    total = 0
    for modality in config.modalities:
        total += modality.images_per_sample * _stem_flops(modality, spec)  # one stem pass per view and frame
    tokens = 1 + sum(m.images_per_sample for m in config.modalities)
    total += transformer_flops(tokens, spec.embed_dim, spec.depth, spec.heads, spec.dim_head, spec.mlp_dim)
    logits = len(config.modalities) * config.blocks_per_backbone
    total += 2 * (spec.embed_dim * spec.logit_hidden + spec.logit_hidden * logits)
    if corruption_outputs:
        total += 2 * (spec.embed_dim * 250 + 250 * corruption_outputs)
    return total


def _stem_flops(modality: ModalitySpec, spec: ControllerSpec) -> int:
    height, width = modality.controller_input_size
    first, second, third = spec.stem_kernels
    total = 0
    layers = ((modality.channels, spec.stem_channels, first, 1), (spec.stem_channels, spec.stem_channels, second, 1),
              (None, None, None, spec.stem_pool), (spec.stem_channels, 3, third, 1))
    for in_channels, out_channels, kernel, pool in layers:
        if kernel is None:
            height, width = height // pool, width // pool
            continue
        height, width = height - kernel + 1, width - kernel + 1
        total += 2 * out_channels * height * width * in_channels * kernel * kernel
    return total + 2 * 3 * height * width * spec.embed_dim


@dataclass(frozen=True)
class FlopBreakdown:
    embeddings: int
    blocks: int
    fusion: int
    head: int
    controller: int

    @property
    def total(self) -> int:
        return self.embeddings + self.blocks + self.fusion + self.head + self.controller


def model_flops(config: ModelConfig, mask: torch.Tensor, include_controller: bool = True,
                corruption_outputs: int = 0) -> FlopBreakdown:
    """FLOPs for one sample running allocation `mask` [M, depth] (bool) through every view."""
    fusion = config.fusion
    active = mask.bool().sum(dim=-1).tolist()
    embeddings = blocks = adapters = 0
    for spec, layers in zip(config.modalities, active, strict=True):
        images, views = spec.images_per_sample, len(spec.views)  # every frame of every view runs the backbone
        embeddings += images * patch_embed_flops(spec)
        blocks += images * layers * block_flops(spec)
        # Readouts (per image) and adapters (per view, after the frames are pooled): counted with the fusion.
        adapters += images * readout_flops(spec) + views * 2 * (
            spec.embed_dim * fusion.adapter_hidden + fusion.adapter_hidden * fusion.dim)
    tokens = config.num_fusion_tokens
    pooling = 2 * tokens * fusion.dim * fusion.dim if fusion.pooling == "flatten" else 0
    fusion_total = adapters + pooling + transformer_flops(tokens, fusion.dim, fusion.depth, fusion.heads,
                                                          fusion.dim_head, fusion.mlp_dim)
    if config.head.task == "localization":
        head = 2 * (2 * fusion.dim * fusion.dim + fusion.dim * 2 + fusion.dim * 3)
    else:
        head = 2 * fusion.dim * config.head.num_classes
    controller = controller_flops(config, corruption_outputs) if include_controller else 0
    return FlopBreakdown(embeddings, blocks, fusion_total, head, controller)


def _register_cpu_attention_formula() -> None:
    """torch's counter has no formula for the CPU flash-attention kernel that SDPA dispatches to on CPU,
    so attention would count as zero there; register the same formula it uses for the GPU kernels."""
    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op in flop_counter.flop_registry or op.default in flop_counter.flop_registry:
        return
    flop_counter.register_flop_formula(op)(_cpu_attention_flops)


def _cpu_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(function, *args, **kwargs) -> int:
    """Run `function(*args, **kwargs)` under torch's FlopCounterMode and return the counted FLOPs."""
    _register_cpu_attention_formula()
    with flop_counter.FlopCounterMode(display=False) as counter:
        function(*args, **kwargs)
    return counter.get_total_flops()
