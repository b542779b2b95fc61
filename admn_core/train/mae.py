"""Stage 0: masked-autoencoder pretraining with LayerDrop, one backbone per modality (paper §3.3.2, A.4).

Not in the official code, which downloads `MAE_Dropout_FT_Dropout.pth` / `AudioMAE_Dropout_FT_Dropout.pth` (MAE on
ImageNet / AudioSet with LayerDrop 0.2 on the encoder, then supervised fine-tuning with LayerDrop). Neither checkpoint
can be downloaded here, so this stage pretrains each modality's backbone on unlabelled frames of the training set
(every view of every sample is one frame). It is also the path for users with their own unlabelled data.

A light MAE (He et al. 2022):
- patchify with the backbone's own patch embedding, add its positional embedding, keep a random 25% of the patches
  (mask ratio 0.75), prepend CLS;
- encoder = the LayerDropViT's blocks with LayerDrop on the encoder: per batch each block is skipped with probability
  `layerdrop` (0.2, paper) — the decoder is never dropped;
- decoder: Linear(D → d) + mask tokens + learned positions + `decoder_depth` timm blocks + Linear(d → p²·C);
- loss: MSE on the masked patches against per-patch normalised pixels (MAE's `norm_pix_loss`).

Output: `<out>/<modality>.safetensors` holding only the encoder with timm key names (cls_token, pos_embed,
patch_embed.proj.*, blocks.N.*, norm.*), which `admn_core.pretrained.load_pretrained_backbone` loads with an empty
missing-key report. The ViT's final `norm` is trained too: the CLS path of the encoder output is regularised by an
auxiliary reconstruction of the mean patch from the CLS token (so `norm` is not left at its initialisation, where a
checkpoint with an untrained `norm` would still load without a missing key).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from timm.layers import LayerNorm
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.data import Dataset

from admn_core.config import ModalitySpec, ModelConfig
from admn_core.models.backbone import LayerDropViT
from admn_core.preprocess import preprocess_batch
from admn_core.train.loop import progress, seed_everything

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MAEConfig:
    epochs: int = 10  # [ours] the tiny preset's frames; MAE itself uses 800–1600 epochs on ImageNet
    lr: float = 1e-3  # [ours] AdamW; MAE: 1.5e-4 × batch/256 with warm-up, at a far larger scale
    weight_decay: float = 0.05  # [MAE]
    batch_size: int = 64
    mask_ratio: float = 0.75  # [MAE] and [paper]
    layerdrop: float = 0.2  # [paper] §3.3.2: LayerDrop 0.2 on the encoder
    decoder_dim: int = 64
    decoder_depth: int = 1
    decoder_heads: int = 4
    norm_pix_loss: bool = True  # [MAE]
    max_frames: int = 0  # 0 = every view of every training sample
    seed: int = 100
    device: str = "cpu"
    progress: bool = True


class MaskedAutoencoder(nn.Module):
    """MAE around one LayerDropViT (`self.encoder`, timm key names)."""

    def __init__(self, spec: ModalitySpec, config: MAEConfig | None = None):
        super().__init__()
        config = config or MAEConfig()
        self.spec, self.config = spec, config
        self.encoder = LayerDropViT(spec)
        dim, dec = spec.embed_dim, config.decoder_dim
        patch_pixels = spec.patch_size * spec.patch_size * spec.channels
        self.decoder_embed = nn.Linear(dim, dec)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec))
        self.decoder_pos = nn.Parameter(torch.zeros(1, spec.num_tokens, dec))
        self.decoder_blocks = nn.ModuleList([Block(dec, config.decoder_heads, 4.0, qkv_bias=True,
                                                   norm_layer=LayerNorm) for _ in range(config.decoder_depth)])
        self.decoder_norm = LayerNorm(dec)
        self.decoder_pred = nn.Linear(dec, patch_pixels)
        self.cls_pred = nn.Linear(dim, patch_pixels)  # CLS → mean patch (keeps the encoder's `norm` trained)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos, std=0.02)

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] → [B, N, p·p·C]."""
        p = self.spec.patch_size
        batch, channels, height, width = images.shape
        x = images.reshape(batch, channels, height // p, p, width // p, p)
        return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, (height // p) * (width // p), p * p * channels)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """→ {"loss", "patch_loss", "cls_loss"} for a batch of frames [B, C, H, W]."""
        encoder = self.encoder
        tokens = encoder.patch_embed(images) + encoder.pos_embed[:, 1:]
        batch, patches, dim = tokens.shape
        keep = max(1, int(round(patches * (1 - self.config.mask_ratio))))
        noise = torch.rand(batch, patches, generator=generator).to(images.device)
        order = noise.argsort(dim=1)
        restore = order.argsort(dim=1)
        kept = order[:, :keep]
        x = torch.gather(tokens, 1, kept[..., None].expand(-1, -1, dim))
        cls = (encoder.cls_token + encoder.pos_embed[:, :1]).expand(batch, -1, -1)
        x = torch.cat([cls, x], dim=1)
        if self.training and self.config.layerdrop > 0:
            run = (torch.rand(encoder.depth, generator=generator) >= self.config.layerdrop).tolist()
        else:
            run = [True] * encoder.depth
        for block, on in zip(encoder.blocks, run, strict=True):
            if on:
                x = block(x)
        x = encoder.norm(x)
        # Decoder: full sequence with mask tokens, original order.
        y = self.decoder_embed(x)
        masks = self.mask_token.expand(batch, patches - keep, -1)
        body = torch.cat([y[:, 1:], masks], dim=1)
        body = torch.gather(body, 1, restore[..., None].expand(-1, -1, y.shape[-1]))
        y = torch.cat([y[:, :1], body], dim=1) + self.decoder_pos
        for block in self.decoder_blocks:
            y = block(y)
        prediction = self.decoder_pred(self.decoder_norm(y)[:, 1:])
        target = self.patchify(images)
        if self.config.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target_n = (target - mean) / (var + 1e-6).sqrt()
        else:
            target_n = target
        masked = torch.ones(batch, patches, device=images.device)
        masked.scatter_(1, kept, 0.0)
        per_patch = ((prediction - target_n) ** 2).mean(dim=-1)
        patch_loss = (per_patch * masked).sum() / masked.sum()
        cls_loss = ((self.cls_pred(x[:, 0]) - target.mean(dim=1)) ** 2).mean()
        return {"loss": patch_loss + 0.1 * cls_loss, "patch_loss": patch_loss, "cls_loss": cls_loss}


def collect_frames(model_config: ModelConfig, dataset: Dataset, max_frames: int = 0,
                   batch: int = 64) -> dict[str, torch.Tensor]:
    """Every view of every sample, preprocessed as the engine does → {modality: [frames, C, H, W]} (labels unused)."""
    chunks: dict[str, list[torch.Tensor]] = {spec.name: [] for spec in model_config.modalities}
    count = len(dataset)
    if max_frames:
        views = len(model_config.modalities[0].views)
        count = min(count, math.ceil(max_frames / views))
    for start in range(0, count, batch):
        samples = [dataset[i][0] for i in range(start, min(start + batch, count))]
        for name, tensor in preprocess_batch(model_config, samples).items():
            chunks[name].append(tensor.flatten(0, 1))
    frames = {name: torch.cat(parts) for name, parts in chunks.items()}
    if max_frames:
        frames = {name: tensor[:max_frames] for name, tensor in frames.items()}
    return frames


def encoder_state(mae: MaskedAutoencoder) -> dict[str, torch.Tensor]:
    """The encoder's weights under timm ViT key names (what load_pretrained_backbone expects)."""
    return {k: v.detach().cpu().contiguous() for k, v in mae.encoder.state_dict().items()}


def pretrain_mae_modality(spec: ModalitySpec, frames: torch.Tensor, config: MAEConfig | None = None,
                          ) -> tuple[MaskedAutoencoder, list[dict]]:
    """Train one modality's MAE on `frames` [N, C, H, W]; → (mae, per-epoch {"epoch", "loss", ...})."""
    config = config or MAEConfig()
    seed_everything(config.seed)
    device = torch.device(config.device)
    mae = MaskedAutoencoder(spec, config).to(device)
    optimizer = torch.optim.AdamW(mae.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.95))
    steps_per_epoch = max(1, math.ceil(len(frames) / config.batch_size))
    total = steps_per_epoch * config.epochs
    warmup = max(1, total // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total)
                                                                                       / total)))
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    mae.train()
    for epoch in range(config.epochs):
        started = time.perf_counter()
        order = torch.randperm(len(frames), generator=generator)
        sums = {"loss": 0.0, "patch_loss": 0.0, "cls_loss": 0.0}
        seen = 0
        batches = range(0, len(frames), config.batch_size)
        for start in progress(batches, config.progress, f"mae[{spec.name}] {epoch + 1}/{config.epochs}"):
            images = frames[order[start:start + config.batch_size]].to(device)
            losses = mae(images, generator)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            scheduler.step()
            for key in sums:
                sums[key] += losses[key].item() * len(images)
            seen += len(images)
        row = {"epoch": epoch, **{k: v / seen for k, v in sums.items()}, "seconds": time.perf_counter() - started}
        history.append(row)
        if config.progress:
            logger.info(f"mae[{spec.name}] {epoch + 1}/{config.epochs} loss {row['loss']:.4f} "
                        f"(masked patches {row['patch_loss']:.4f}) {row['seconds']:.1f}s")
    return mae.eval(), history


def pretrain_mae(model_config: ModelConfig, dataset: Dataset, config: MAEConfig | None = None,
                 out_dir: str | Path | None = None) -> dict[str, Path | dict]:
    """Stage 0 for every modality; writes `<out_dir>/<modality>.safetensors` (+ `mae_history.json`).

    Resumable per modality: an existing file is kept. → {modality: path} (or {modality: state dict} without
    out_dir)."""
    config = config or MAEConfig()
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    todo = [spec for spec in model_config.modalities
            if out is None or not (out / f"{spec.name}.safetensors").is_file()]
    results: dict[str, Path | dict] = {}
    histories = {}
    if out is not None and (out / "mae_history.json").is_file():
        histories = json.loads((out / "mae_history.json").read_text())
    frames = collect_frames(model_config, dataset, config.max_frames) if todo else {}
    for spec in model_config.modalities:
        path = None if out is None else out / f"{spec.name}.safetensors"
        if spec in todo:
            mae, history = pretrain_mae_modality(spec, frames[spec.name], config)
            histories[spec.name] = history
            state = encoder_state(mae)
            if path is not None:
                save_file(state, str(path), metadata={"format": "admn-mae-encoder", "modality": spec.name,
                                                      "mae_config": json.dumps(asdict(config))})
                (out / "mae_history.json").write_text(json.dumps(histories, indent=1))
        results[spec.name] = path if path is not None else state
    return results


def load_mae_backbones(model, directory: str | Path) -> dict:
    """Load `<directory>/<modality>.safetensors` into every backbone of an ADMNModel; → {modality: LoadReport}."""
    from admn_core.pretrained import load_pretrained_backbone

    reports = {}
    for spec in model.config.modalities:
        report = load_pretrained_backbone(model.backbones[spec.name], Path(directory) / f"{spec.name}.safetensors")
        if report.missing or report.unexpected:
            raise RuntimeError(f"MAE weights for {spec.name} do not match the backbone:\n{report.summary()}")
        reports[spec.name] = report
        logger.info(f"stage1: loaded MAE encoder for {spec.name}: {len(report.loaded)} tensors, none missing")
    return reports
