"""Per-modality small layers run as one call for all modalities (the fast path's fixed cost at batch 1).

At batch 1 the work that runs whatever the budget — the controller's conv stems, the backbones' readouts and the
fusion adapters — is a few dozen tiny ops per modality, each costing more in dispatch than in arithmetic. When every
modality's layer has the same shape, the modalities' weights are stacked once and each op runs once for all of them:

* `FusedStems`: the QoI controller's conv stems (`ConvStem`) as one conv chain over the modalities' channels
  concatenated — block-diagonal convolutions, one batched projection;
* `FusedReadoutAdapters`: every backbone's readout (final norm, grid pooling, projection) and fusion adapter as
  batched matrix products over a [M, N, ...] stack.

Both compute exactly the per-modality functions (zeros in the block-diagonal weights add nothing); only the order
of floating-point sums can differ (test/test_fused.py compares them with the modules). They snapshot the weights
when built: `FastPath` builds them once from the engine's frozen inference model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from admn_core.config import ModelConfig
from admn_core.models.controller import QoIController


class FusedStems:
    """All modalities' controller stems as one chain: inputs {m: [B, V, C_m, H, W]} → tokens [B, M·V, E], in the
    order `QoIController.embed` concatenates them (modality-major, then view)."""

    @staticmethod
    def supported(config: ModelConfig, controller: QoIController) -> bool:
        """Same controller input size and view count everywhere (one resize, one [B·V, ΣC, h, w] batch), and stems
        of one form: the same chain of convolutions, ReLUs and max pools, the convolutions alike but for their input
        channels."""
        modalities = config.modalities
        if (len(modalities) < 2 or len({m.controller_input_size for m in modalities}) != 1
                or len({len(m.views) for m in modalities}) != 1):
            return False
        forms = {tuple(_layer_form(layer) for layer in controller.stems[m.name].convs) for m in modalities}
        return len(forms) == 1 and None not in next(iter(forms))

    def __init__(self, config: ModelConfig, controller: QoIController, feature_alignment: int | None = None):
        """feature_alignment: pad the projection's feature count to a multiple of it (default: 8 on a GPU, else 1)."""
        if not self.supported(config, controller):
            raise ValueError("the modalities' stems differ in input size, views or form; run them one by one")
        self.names = config.modality_names
        self.views = len(config.modalities[0].views)
        self.size = config.modalities[0].controller_input_size
        stems = [controller.stems[name] for name in self.names]
        self.modality_count = len(stems)
        with torch.no_grad():
            # The stems' chain, layer by layer. Each conv: the modalities' channels side by side, each modality's
            # filters seeing only its own inputs (block-diagonal); on a CPU one plain conv beats a grouped one (which
            # loops over the groups). ReLU and max pooling act per channel, so they apply to all modalities at once.
            self.layers = [_block_diagonal(list(layers)) if isinstance(layers[0], nn.Conv2d) else layers[0]
                           for layers in zip(*(stem.convs for stem in stems), strict=True)]
            # Projections [E, F] per modality → [M, F, E] for one batched product.
            self.proj_weight = torch.stack([s.proj.weight.t() for s in stems]).contiguous()
            self.proj_bias = torch.stack([s.proj.bias for s in stems])[:, None]  # [M, 1, E]
            # On a GPU the feature count (paper: 3·23·23 = 1587, odd) leaves bf16 rows unaligned, and cuBLAS falls
            # back to a slow batched kernel for the [2, 3, 1587] × [2, 1587, 256] product: pad it to a multiple of 8
            # with zero weights.
            if feature_alignment is None:
                feature_alignment = 8 if self.proj_weight.is_cuda else 1
            self.feature_padding = (-self.proj_weight.shape[1]) % feature_alignment
            if self.feature_padding:
                self.proj_weight = F.pad(self.proj_weight, (0, 0, 0, self.feature_padding)).contiguous()

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = inputs[self.names[0]].shape[0]
        frames = [inputs[name].flatten(0, 1) for name in self.names]  # each [B·V, C_m, H_m, W_m]
        if len({tuple(f.shape[-2:]) for f in frames}) == 1:
            x = torch.cat(frames, dim=1)  # bilinear resizing is per channel: one call for every modality
            if tuple(x.shape[-2:]) != self.size:
                x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        else:
            x = torch.cat([f if tuple(f.shape[-2:]) == self.size
                           else F.interpolate(f, size=self.size, mode="bilinear", align_corners=False)
                           for f in frames], dim=1)
        for layer in self.layers:
            x = F.conv2d(x, *layer) if isinstance(layer, tuple) else layer(x)  # finally [B·V, M·3, h, w]
        features = x.view(x.shape[0], self.modality_count, -1).transpose(0, 1)  # [M, B·V, 3·h·w], each row C-major
        if self.feature_padding:
            features = F.pad(features, (0, self.feature_padding))  # [M, B·V, F + padding], zeros
        tokens = torch.baddbmm(self.proj_bias, features, self.proj_weight)  # [M, B·V, E]
        tokens = tokens.view(self.modality_count, batch, self.views, -1).transpose(0, 1)  # [B, M, V, E]
        return tokens.reshape(batch, -1, tokens.shape[-1])


def _layer_form(layer: nn.Module) -> tuple | None:
    """What a stem layer computes apart from its weights and input channels; None for a layer not fused here."""
    if isinstance(layer, nn.Conv2d):
        return ("conv", layer.out_channels, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                layer.groups == 1, layer.bias is not None, layer.padding_mode == "zeros")
    if isinstance(layer, nn.ReLU):
        return ("relu",)
    if isinstance(layer, nn.MaxPool2d):
        return ("max pool", layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode)
    return None


def _block_diagonal(convs: list[nn.Conv2d]) -> tuple[torch.Tensor, torch.Tensor, tuple, tuple, tuple]:
    """Convs [C_m → O_m] of one form (`_layer_form`) → `F.conv2d`'s (weight [ΣO, ΣC, k, k], bias [ΣO], stride,
    padding, dilation) applying conv m to input channels m only."""
    weight = convs[0].weight.new_zeros(sum(c.out_channels for c in convs), sum(c.in_channels for c in convs),
                                       *convs[0].kernel_size)
    row = column = 0
    for conv in convs:
        weight[row:row + conv.out_channels, column:column + conv.in_channels] = conv.weight
        row, column = row + conv.out_channels, column + conv.in_channels
    first = convs[0]
    return weight, torch.cat([conv.bias for conv in convs]), first.stride, first.padding, first.dilation


class FusedReadoutAdapters:
    """Final tokens of every backbone → fusion tokens [B, M·V, fusion dim] (modality-major, then view): each
    backbone's grid readout (`LayerDropViT.readout`) and adapter (`Adapter`) as batched products over modalities."""

    @staticmethod
    def supported(model) -> bool:
        specs = model.config.modalities
        backbones = [model.backbones[s.name] for s in specs]
        adapters = [model.adapters[s.name] for s in specs]
        return (len(specs) > 1 and all(s.readout == "grid" for s in specs)
                and len({(s.embed_dim, s.readout_grid, s.num_tokens, len(s.views)) for s in specs}) == 1
                and len({b.patch_grid for b in backbones}) == 1
                and all(isinstance(b.norm, nn.LayerNorm) for b in backbones)
                and len({(a.hidden.weight.shape, a.out.weight.shape) for a in adapters}) == 1
                and all(isinstance(a.activation, nn.LeakyReLU) for a in adapters))

    def __init__(self, model):
        if not self.supported(model):
            raise ValueError("the backbones' readouts or adapters differ in shape; run them one by one")
        specs = model.config.modalities
        self.names = [s.name for s in specs]
        self.views = len(specs[0].views)
        self.grid = specs[0].readout_grid
        backbones = [model.backbones[name] for name in self.names]
        adapters = [model.adapters[name] for name in self.names]
        self.patch_grid = backbones[0].patch_grid
        self.eps = backbones[0].norm.eps
        self.negative_slope = adapters[0].activation.negative_slope
        with torch.no_grad():
            self.norm_weight = torch.stack([b.norm.weight for b in backbones])[:, None, None]  # [M, 1, 1, D]
            self.norm_bias = torch.stack([b.norm.bias for b in backbones])[:, None, None]
            self.readout_weight = torch.stack([b.readout_proj.weight.t() for b in backbones]).contiguous()
            self.readout_bias = torch.stack([b.readout_proj.bias for b in backbones])[:, None]  # [M, 1, D]
            self.hidden_weight = torch.stack([a.hidden.weight.t() for a in adapters]).contiguous()
            self.hidden_bias = torch.stack([a.hidden.bias for a in adapters])[:, None]
            self.out_weight = torch.stack([a.out.weight.t() for a in adapters]).contiguous()
            self.out_bias = torch.stack([a.out.bias for a in adapters])[:, None]

    def __call__(self, tokens: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        """tokens {m: [B·V, 1 + P, D]} → [B, M·V, fusion dim]."""
        stacked = torch.stack([tokens[name][:, 1:] for name in self.names])  # [M, B·V, P, D], CLS dropped
        modalities, rows, _, width = stacked.shape
        normed = F.layer_norm(stacked, (width,), eps=self.eps) * self.norm_weight + self.norm_bias
        image = normed.transpose(2, 3).reshape(modalities * rows, width, *self.patch_grid)  # [M·B·V, D, gh, gw]
        regions = F.adaptive_avg_pool2d(image, self.grid).reshape(modalities, rows, -1)  # [M, B·V, D·G²], D-major
        embedding = torch.baddbmm(self.readout_bias, regions, self.readout_weight)  # [M, B·V, D]
        hidden = F.leaky_relu(torch.baddbmm(self.hidden_bias, embedding, self.hidden_weight), self.negative_slope)
        fused_in = torch.baddbmm(self.out_bias, hidden, self.out_weight)  # [M, B·V, fusion dim]
        return fused_in.view(modalities, batch, self.views, -1).transpose(0, 1).reshape(batch, -1, fused_in.shape[-1])
