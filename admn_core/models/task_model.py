"""The Stage-1 task model: views × modalities → shared backbones → adapters → fusion → head.

Inputs are preprocessed tensors per modality, [B, V·T, C, H, W] (V = that modality's views, T its frames, 1 but for
clips). Views and frames of a modality share its backbone weights and its layer mask (official GDTM: 3 nodes through
one backbone; AVE: 8 frames with the mask repeat-interleaved); a view's frame features are averaged into its token.
Fusion tokens are ordered modality-major, then view (official: img n1, n2, n3, depth n1, n2, n3).
"""

from __future__ import annotations

import torch
from torch import nn

from admn_core.config import ModelConfig
from admn_core.models.backbone import LayerDropViT
from admn_core.models.fusion import Adapter, FusionPooling, TransformerEncoder
from admn_core.models.heads import build_head
from admn_core.models.layerdrop import sample_layerdrop_masks


class ADMNModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        fusion = config.fusion
        self.backbones = nn.ModuleDict({spec.name: LayerDropViT(spec) for spec in config.modalities})
        self.adapters = nn.ModuleDict({
            spec.name: Adapter(spec.embed_dim, fusion.adapter_hidden, fusion.dim) for spec in config.modalities})
        self.fusion = TransformerEncoder(fusion.dim, fusion.depth, fusion.heads, fusion.dim_head, fusion.mlp_dim)
        self.pooling = FusionPooling(fusion.pooling, config.num_fusion_tokens, fusion.dim)
        self.head = build_head(fusion.dim, config.head)

    def forward(self, inputs: dict[str, torch.Tensor], masks: torch.Tensor | None = None):
        """inputs {modality: [B, V, C, H, W]}, masks [B, M, depth] or None (all blocks) → head output."""
        return self.head(self.fuse(inputs, masks))

    def fuse(self, inputs: dict[str, torch.Tensor], masks: torch.Tensor | None = None) -> torch.Tensor:
        """→ pooled fusion embedding [B, fusion.dim] (`FusionSpec.pooling`)."""
        tokens = []
        for index, spec in enumerate(self.config.modalities):
            if spec.name not in inputs:
                raise KeyError(f"missing input for modality {spec.name!r}; got {sorted(inputs)}")
            x = inputs[spec.name]
            images = spec.images_per_sample  # V·T
            if x.dim() != 5 or x.shape[1] != images:
                raise ValueError(f"{spec.name}: expected [B, {images} (views × frames), C, H, W], "
                                 f"got {list(x.shape)}")
            batch = x.shape[0]
            # Every view and frame of sample b shares mask row b: rows b·V·T … (b+1)·V·T−1 after flatten(0, 1).
            image_masks = None if masks is None else masks[:, index].repeat_interleave(images, dim=0)
            features = self.backbones[spec.name](x.flatten(0, 1), image_masks)  # [B·V·T, D]
            per_view = features.view(batch, len(spec.views), spec.frames, -1).mean(dim=2)  # frames pooled: [B, V, D]
            tokens.append(self.adapters[spec.name](per_view))
        return self.pooling(self.fusion(torch.cat(tokens, dim=1)))

    def loss(self, output, target: torch.Tensor) -> torch.Tensor:
        return self.head.loss(output, target)

    def sample_layerdrop_masks(self, batch: int, rate: float, generator: torch.Generator | None = None):
        """Stage-1 masks [B, M, depth] drawn with the config's LayerDrop spec and the given rate."""
        return sample_layerdrop_masks(len(self.config.modalities), self.config.blocks_per_backbone, batch, rate,
                                      self.config.layerdrop, generator, device=self.head_device)

    def freeze_backbones(self) -> None:
        """Stage-1 freezing: every backbone parameter but each modality's last `trainable_last_blocks` blocks."""
        for spec in self.config.modalities:
            self.backbones[spec.name].freeze_all_but_last(spec.trainable_last_blocks)

    @property
    def head_device(self) -> torch.device:
        return next(self.head.parameters()).device
