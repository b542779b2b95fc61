"""LayerDrop ViT backbone on timm blocks, executing a per-sample boolean layer mask.

State-dict keys match timm's `VisionTransformer` (cls_token, pos_embed, patch_embed.proj.*, blocks.N.*, norm.*),
so timm / MAE checkpoints load directly and timm's own ViT is the reference in the tests.

Three execution paths, chosen by the mask:
- hard mask (bool or 0/1 without grad): samples are grouped by identical mask rows and each group runs only
  its own active blocks — real compute savings at any batch size (the official code skips blocks only at
  batch 1 and computes every block otherwise).
- soft mask (float with grad, e.g. straight-through controller output): x ← m·block(x) + (1−m)·x for every
  block, so gradients reach the controller logits through m (official `forward_controller` mask path).
- no mask: every block runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm, PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

from admn_core.config import ModalitySpec


class LayerDropViT(nn.Module):
    """ViT whose blocks can be skipped per sample. Input [B, C, H, W]; output [B, D]: the CLS token after the final
    norm, or the mean / the region-pooled and projected patch tokens after the norm (`ModalitySpec.readout`)."""

    def __init__(self, spec: ModalitySpec):
        super().__init__()
        self.spec = spec
        self.patch_embed = PatchEmbed(
            img_size=spec.input_size, patch_size=spec.patch_size, in_chans=spec.channels, embed_dim=spec.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, spec.num_tokens, spec.embed_dim))
        # timm's LayerNorm (eps 1e-6) as MAE/timm ViTs; the official subclass's 1e-5 comes from nn.LayerNorm.
        self.blocks = nn.ModuleList([
            Block(spec.embed_dim, spec.num_heads, spec.mlp_ratio, qkv_bias=True, norm_layer=LayerNorm)
            for _ in range(spec.depth)
        ])
        self.norm = LayerNorm(spec.embed_dim)
        # "grid" readout: [B, G²·D] → [B, D]. Not part of timm/MAE checkpoints (reported as missing on load).
        self.readout_proj = (nn.Linear(spec.readout_grid ** 2 * spec.embed_dim, spec.embed_dim)
                             if spec.readout == "grid" else None)
        self.patch_grid = (spec.input_size[0] // spec.patch_size, spec.input_size[1] // spec.patch_size)  # rows, cols
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] → tokens [B, 1 + patches, D] (CLS first, positions added)."""
        tokens = self.patch_embed(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos_embed

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C, H, W], mask [B, depth] (bool / 0-1 / straight-through float) or None → CLS [B, D]."""
        tokens = self.embed(x)
        if mask is None:
            for block in self.blocks:
                tokens = block(tokens)
        elif mask.requires_grad:
            tokens = self._run_mixed(tokens, mask)
        else:
            tokens = self._run_grouped(tokens, mask.bool())
        return self.readout(tokens)

    def readout(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final tokens [B, 1 + P, D] → the backbone's embedding [B, D] (`ModalitySpec.readout`)."""
        if self.spec.readout == "cls":
            return self.norm(tokens[:, 0])
        if self.spec.readout == "mean":
            return self.norm(tokens[:, 1:].mean(dim=1))
        # grid: [B, P, D] → image layout [B, D, H/p, W/p] → G×G region means [B, D, G, G] → [B, G²·D] → [B, D]
        patches = self.norm(tokens[:, 1:]).transpose(1, 2)
        regions = F.adaptive_avg_pool2d(patches.reshape(-1, self.spec.embed_dim, *self.patch_grid),
                                        self.spec.readout_grid)
        return self.readout_proj(regions.flatten(1))

    def _run_mixed(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self._check_mask(mask, tokens.shape[0])
        weights = mask.to(tokens.dtype)[:, :, None, None]  # [B, depth, 1, 1] broadcast over tokens and width
        for index, block in enumerate(self.blocks):
            keep = weights[:, index]
            tokens = keep * block(tokens) + (1 - keep) * tokens
        return tokens

    def _run_grouped(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self._check_mask(mask, tokens.shape[0])
        groups = group_rows_by_mask(mask)
        if len(groups) == 1:
            (indices, _), = groups.items()
            return self.run_blocks(tokens, list(indices))
        output = torch.empty_like(tokens)
        for indices, members in groups.items():
            rows = torch.tensor(members, device=tokens.device)
            output[rows] = self.run_blocks(tokens[rows], list(indices))
        return output

    def run_blocks(self, tokens: torch.Tensor, indices: list[int]) -> torch.Tensor:
        for index in indices:
            tokens = self.blocks[index](tokens)
        return tokens

    def _check_mask(self, mask: torch.Tensor, batch: int) -> None:
        if mask.shape != (batch, self.depth):
            raise ValueError(f"layer mask must be [batch={batch}, depth={self.depth}], got {list(mask.shape)}")

    def freeze_all_but_last(self, trainable_blocks: int) -> None:
        """Stage-1 freezing (official): every parameter frozen, including embeddings and final norm,
        except the last `trainable_blocks` blocks."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        for block in self.blocks[len(self.blocks) - trainable_blocks:] if trainable_blocks else []:
            for parameter in block.parameters():
                parameter.requires_grad_(True)


def group_rows_by_mask(mask: torch.Tensor) -> dict[tuple[int, ...], list[int]]:
    """Bool mask [B, depth] → {active block indices: rows that share them}, in first-seen order.

    One host transfer of B×depth booleans, then plain Python: at the batch sizes a robot sees this is ~10×
    cheaper than torch.unique(dim=0) (which sorts), and it is the only host sync of the masked forward.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, flags in enumerate(mask.tolist()):
        groups.setdefault(tuple(i for i, on in enumerate(flags) if on), []).append(row)
    return groups
