"""Fusion transformer and adapters (official `models/vit_dev.py: TransformerEnc`, `models/adapters.py`).

Pre-norm encoder: LayerNorm → attention (qkv without bias, output projection with bias) and
LayerNorm → Linear → GELU → Linear, a final LayerNorm, no dropout. A fixed 1-D sinusoidal positional
encoding is added to the tokens first: token position is the only cue for modality and view identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoidal_positions(length: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """[length, dim] sin/cos encoding (official `positionalencoding1d`, but on the tokens' device)."""
    if dim % 2:
        raise ValueError(f"sinusoidal positions need an even dim, got {dim}")
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table.to(device=device, dtype=dtype)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.norm = nn.LayerNorm(dim)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(batch, tokens, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, heads, T, dim_head]
        attended = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(attended.transpose(1, 2).reshape(batch, tokens, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    @property
    def norm(self) -> nn.LayerNorm:
        return self.net[0]

    @property
    def hidden(self) -> nn.Linear:
        """The first Linear (dim → hidden), followed by GELU."""
        return self.net[1]

    @property
    def out(self) -> nn.Linear:
        """The second Linear (hidden → dim)."""
        return self.net[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerEncoder(nn.Module):
    """[B, T, dim] → [B, T, dim]; positions added inside."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int):
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList([
            nn.ModuleList([Attention(dim, heads, dim_head), FeedForward(dim, mlp_dim)]) for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(dim)
        self._position_cache: dict[tuple, torch.Tensor] = {}

    def positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """The fixed table for this length/device/dtype, built once (it is constant, not a parameter)."""
        key = (tokens.shape[1], tokens.device, tokens.dtype)
        if key not in self._position_cache:
            self._position_cache[key] = sinusoidal_positions(tokens.shape[1], self.dim, tokens.device, tokens.dtype)
        return self._position_cache[key]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens + self.positions(tokens)
        for attention, feed_forward in self.layers:
            x = x + attention(x)
            x = x + feed_forward(x)
        return self.norm(x)


class FusionPooling(nn.Module):
    """Fusion tokens [B, T, dim] → [B, dim]: the mean (official) or Linear(T·dim → dim) of their concatenation."""

    def __init__(self, mode: str, tokens: int, dim: int):
        super().__init__()
        self.mode = mode
        self.proj = nn.Linear(tokens * dim, dim) if mode == "flatten" else None

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        return fused.mean(dim=1) if self.proj is None else self.proj(fused.flatten(1))


class Adapter(nn.Module):
    """Backbone CLS [B, in] → fusion token [B, out]: Linear → LeakyReLU → Linear, Xavier-uniform (official)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(), nn.Linear(hidden, out_dim))
        for layer in (self.net[0], self.net[2]):
            nn.init.xavier_uniform_(layer.weight)

    @property
    def hidden(self) -> nn.Linear:
        """The first Linear (in → hidden), followed by `activation`."""
        return self.net[0]

    @property
    def activation(self) -> nn.LeakyReLU:
        return self.net[1]

    @property
    def out(self) -> nn.Linear:
        """The second Linear (hidden → out)."""
        return self.net[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
