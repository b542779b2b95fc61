"""Task heads and their losses.

Gaussian localization (official `models/output_head.py`), with its two bugs fixed and said so:
- the MLP uses two distinct Linear layers (the official code applies `linear1` twice, `linear2` is unused);
- all three covariance logits are used (the official slice `[3:6]` skips the first one and reads the
  second mean logit as a covariance logit). Lower-triangular L = [[softplus(a), 0], [c, softplus(b)]],
  cov = L Lᵀ + min_variance·I (official: + I, i.e. 1 cm² at the paper's centimetre units). L is multiplied by
  `HeadSpec.covariance_scale` (official 1; ours for the tiny preset, see HeadSpec).
Mean = center + (2·sigmoid(m) − 1)·half_range (official: (sigmoid − 0.5)·2·200 cm).
Loss per sample: −log N(target; μ, Σ) + distance_weight·‖μ − target‖₂ (official `mseloss` is this distance).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from admn_core.config import HeadSpec


@dataclass
class GaussianPrediction:
    mean: torch.Tensor  # [B, 2] model units (paper: cm)
    covariance: torch.Tensor  # [B, 2, 2]


class GaussianLocalizationHead(nn.Module):
    def __init__(self, dim: int, spec: HeadSpec):
        super().__init__()
        self.spec = spec
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU())
        self.mean_out = nn.Linear(dim, 2)
        self.cov_out = nn.Linear(dim, 3)
        self.register_buffer("center", torch.tensor(spec.mean_center, dtype=torch.float32), persistent=False)
        self.register_buffer("half_range", torch.tensor(spec.mean_half_range, dtype=torch.float32), persistent=False)

    def forward(self, pooled: torch.Tensor) -> GaussianPrediction:
        hidden = self.mlp(pooled)
        mean = self.center + (2 * torch.sigmoid(self.mean_out(hidden)) - 1) * self.half_range
        logits = self.cov_out(hidden)  # [B, 3]
        scale = self.spec.covariance_scale
        diagonal = F.softplus(logits[:, :2]) * scale  # L = [[d0, 0], [c, d1]]
        c = logits[:, 2] * scale
        # L Lᵀ = [[d0², d0·c], [d0·c, c² + d1²]], written out (fewer ops than building L; batch-1 latency).
        variance_x = diagonal[:, 0].square() + self.spec.min_variance
        variance_y = c.square() + diagonal[:, 1].square() + self.spec.min_variance
        cross = diagonal[:, 0] * c
        covariance = torch.stack([variance_x, cross, cross, variance_y], dim=-1).view(-1, 2, 2)
        return GaussianPrediction(mean=mean, covariance=covariance)

    def loss(self, prediction: GaussianPrediction, target: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of NLL + distance_weight · Euclidean distance (target [B, 2], model units)."""
        distribution = torch.distributions.MultivariateNormal(prediction.mean, covariance_matrix=prediction.covariance)
        nll = -distribution.log_prob(target)
        distance = torch.linalg.vector_norm(prediction.mean - target, dim=-1)
        return (nll + self.spec.distance_weight * distance).mean()


class ClassificationHead(nn.Module):
    """Linear(dim → classes), cross-entropy (official AVE / MM-Fi)."""

    def __init__(self, dim: int, spec: HeadSpec):
        super().__init__()
        self.spec = spec
        self.linear = nn.Linear(dim, spec.num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.linear(pooled)  # logits [B, classes]

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target)


def build_head(dim: int, spec: HeadSpec) -> nn.Module:
    if spec.task == "localization":
        return GaussianLocalizationHead(dim, spec)
    return ClassificationHead(dim, spec)
