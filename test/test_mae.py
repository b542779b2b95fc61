"""Stage 0: the MAE loss decreases on real frames, and the exported encoder loads with an empty missing-key report."""

from dataclasses import replace

import torch
from safetensors.torch import save_file

from admn_core.models.backbone import LayerDropViT
from admn_core.pretrained import load_pretrained_backbone
from admn_core.train.mae import MAEConfig, MaskedAutoencoder, collect_frames, encoder_state, pretrain_mae_modality
from admn_core.train.toy import SquareDataset, toy_config


def test_mae_loss_decreases_and_weights_load(tmp_path):
    config = toy_config()
    frames = collect_frames(config, SquareDataset(config, length=8))
    spec = replace(config.modalities[0], patch_size=4)  # 16 patches of the 16×16 frames
    mae, history = pretrain_mae_modality(spec, frames[spec.name], MAEConfig(epochs=5, batch_size=8, lr=2e-3,
                                                                             progress=False))
    assert history[-1]["loss"] < history[0]["loss"]
    path = tmp_path / "rgb.safetensors"
    save_file(encoder_state(mae), str(path))
    backbone = LayerDropViT(spec)
    report = load_pretrained_backbone(backbone, path)
    assert report.missing == [] and report.unexpected == []
    assert torch.equal(backbone.blocks[3].attn.qkv.weight, mae.encoder.blocks[3].attn.qkv.weight)


def test_mae_masks_three_quarters_and_layerdrop_in_training():
    spec = replace(toy_config(size=32).modalities[0], patch_size=8)
    mae = MaskedAutoencoder(spec, MAEConfig(layerdrop=0.5))
    images = torch.rand(2, spec.channels, 32, 32)
    out = mae(images, torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"])
    assert mae.patchify(images).shape == (2, 16, spec.patch_size ** 2 * spec.channels)
