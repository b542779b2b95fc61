"""Load timm / MAE / AudioMAE ViT checkpoints from a local file into a LayerDropViT. Never from a hub.

Accepts `.safetensors`, or `.pth`/`.pt`/`.bin` read with `torch.load(weights_only=True)` (no arbitrary
unpickling). The report lists exactly which keys were loaded, missing, unexpected, renamed or resampled —
the official code loads with strict=False and only prints, which hides e.g. a checkpoint whose final
`norm` is really `fc_norm`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed, resample_patch_embed

from admn_core.models.backbone import LayerDropViT

WRAPPER_KEYS = ("model", "state_dict", "module", "encoder")
STRIPPED_PREFIXES = ("module.", "model.", "encoder.", "backbone.")
# Parts of MAE / classification checkpoints a backbone never uses: reported as ignored, not as problems.
IGNORED_PREFIXES = ("decoder", "mask_token", "head.", "fc_norm.")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or incompatible; the message names the file."""


@dataclass
class LoadReport:
    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    resampled: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.path}: loaded {len(self.loaded)} tensors"]
        for label, items in (("missing (left at initialisation)", self.missing), ("unexpected", self.unexpected),
                             ("ignored (decoder/head)", self.ignored), ("resampled", self.resampled)):
            if items:
                lines.append(f"  {label}: {', '.join(items)}")
        for source, target in self.renamed.items():
            lines.append(f"  renamed: {source} → {target}")
        return "\n".join(lines)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a flat {name: tensor} state dict from safetensors or a weights-only torch file."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return dict(state)


def load_pretrained_backbone(backbone: LayerDropViT, path: str | Path) -> LoadReport:
    source = read_checkpoint(path)
    report = LoadReport(str(Path(path).expanduser().resolve()))
    state = {}
    for key, tensor in source.items():
        name = key
        for prefix in STRIPPED_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
        state[name] = tensor
    # MAE fine-tuning with global pooling stores the final norm as fc_norm; our backbone's CLS path uses `norm`.
    if "norm.weight" not in state and "fc_norm.weight" in state:
        for suffix in ("weight", "bias"):
            state[f"norm.{suffix}"] = state.pop(f"fc_norm.{suffix}")
            report.renamed[f"fc_norm.{suffix}"] = f"norm.{suffix}"
    target = backbone.state_dict()
    _adapt_patch_embed(backbone, state, report)
    _adapt_pos_embed(backbone, state, report)
    accepted = {}
    for name, tensor in state.items():
        if name in target:
            if tensor.shape != target[name].shape:
                raise CheckpointError(
                    f"{report.path}: {name} has shape {list(tensor.shape)}, "
                    f"backbone expects {list(target[name].shape)}")
            accepted[name] = tensor
        elif name.startswith(IGNORED_PREFIXES):
            report.ignored.append(name)
        else:
            report.unexpected.append(name)
    backbone.load_state_dict(accepted, strict=False)
    report.loaded = sorted(accepted)
    report.missing = sorted(set(target) - set(accepted))
    report.ignored.sort()
    report.unexpected.sort()
    return report


def _adapt_patch_embed(backbone: LayerDropViT, state: dict[str, torch.Tensor], report: LoadReport) -> None:
    key = "patch_embed.proj.weight"
    if key not in state:
        return
    weight = state[key]  # [D, C, p, p]
    expected = backbone.patch_embed.proj.weight.shape
    if weight.shape[1] != expected[1]:
        if expected[1] == 1:
            # Summing over RGB = feeding the single channel replicated 3× (what the official code does for depth).
            weight = weight.sum(dim=1, keepdim=True)
        elif weight.shape[1] == 1:
            weight = weight.repeat(1, expected[1], 1, 1) / expected[1]
        else:
            raise CheckpointError(f"{report.path}: cannot map {weight.shape[1]} input channels to {expected[1]}")
        report.resampled.append(f"{key} channels {state[key].shape[1]}→{expected[1]}")
    if weight.shape[-2:] != expected[-2:]:
        weight = resample_patch_embed(weight, list(expected[-2:]))
        report.resampled.append(f"{key} patch {list(state[key].shape[-2:])}→{list(expected[-2:])}")
    state[key] = weight


def _adapt_pos_embed(backbone: LayerDropViT, state: dict[str, torch.Tensor], report: LoadReport) -> None:
    key = "pos_embed"
    if key not in state or state[key].shape == backbone.pos_embed.shape:
        return
    source = state[key]
    grid = backbone.patch_embed.grid_size
    source_tokens = source.shape[1] - 1
    side = int(round(source_tokens ** 0.5))
    if side * side != source_tokens:
        raise CheckpointError(
            f"{report.path}: pos_embed with {source_tokens} patch positions is not a square grid; cannot resample")
    state[key] = resample_abs_pos_embed(source, new_size=list(grid), old_size=[side, side], num_prefix_tokens=1)
    report.resampled.append(f"pos_embed grid {side}×{side}→{grid[0]}×{grid[1]}")
