"""Loading timm / MAE checkpoints from local files, with an exact key report."""

import pytest
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from admn_core.cli import main as admn_main
from admn_core.config import ModalitySpec
from admn_core.models.backbone import LayerDropViT
from admn_core.pretrained import CheckpointError, load_pretrained_backbone

RGB = ModalitySpec(name="rgb", kind="rgb", views=("a",), channels=3, input_size=(32, 32), patch_size=8,
                   embed_dim=48, num_heads=4)


def _timm_vit(img_size=32, num_classes=10) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=img_size, patch_size=8, num_classes=num_classes, embed_dim=48, depth=12,
                             num_heads=4).eval()


def test_timm_safetensors_checkpoint_loads_and_matches_timm(tmp_path):
    reference = _timm_vit()
    path = tmp_path / "vit.safetensors"
    save_file(reference.state_dict(), str(path))
    backbone = LayerDropViT(RGB).eval()
    report = load_pretrained_backbone(backbone, path)
    assert report.missing == [] and report.unexpected == []
    assert report.ignored == ["head.bias", "head.weight"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        assert (backbone(x) - expected).abs().max() <= 1e-5


def test_mae_style_pth_is_unwrapped_resampled_and_reported(tmp_path):
    state = {f"model.{k}": v for k, v in _timm_vit(img_size=48).state_dict().items() if not k.startswith("norm.")}
    state["model.fc_norm.weight"] = torch.ones(48)
    state["model.fc_norm.bias"] = torch.zeros(48)
    state["model.decoder_embed.weight"] = torch.zeros(16, 48)
    state["model.mask_token"] = torch.zeros(1, 1, 16)
    state["model.mystery"] = torch.zeros(3)
    path = tmp_path / "mae.pth"
    torch.save({"model": state, "epoch": 5}, path)
    depth_spec = ModalitySpec(name="depth", kind="depth", views=("a",), channels=1, input_size=(32, 32),
                              patch_size=8, embed_dim=48, num_heads=4, norm_mean=(0.0,), norm_std=(1.0,))
    backbone = LayerDropViT(depth_spec)
    report = load_pretrained_backbone(backbone, path)
    assert report.renamed == {"fc_norm.weight": "norm.weight", "fc_norm.bias": "norm.bias"}
    assert report.unexpected == ["mystery"]
    assert "decoder_embed.weight" in report.ignored and "mask_token" in report.ignored
    assert any("pos_embed grid 6×6→4×4" in item for item in report.resampled)
    assert any("channels 3→1" in item for item in report.resampled)
    assert report.missing == []
    # One depth channel with summed RGB weights = the RGB network on the channel replicated three times.
    summed = state["model.patch_embed.proj.weight"].sum(dim=1, keepdim=True)
    assert torch.allclose(backbone.patch_embed.proj.weight, summed)


def test_bad_checkpoints_name_the_file(tmp_path):
    backbone = LayerDropViT(RGB)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_pretrained_backbone(backbone, tmp_path / "none.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pth: cannot read checkpoint"):
        load_pretrained_backbone(backbone, garbage)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"blocks.0.attn.qkv.weight": torch.zeros(10, 10)}, str(wrong))
    with pytest.raises(CheckpointError, match=r"blocks.0.attn.qkv.weight has shape \[10, 10\]"):
        load_pretrained_backbone(backbone, wrong)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "callback": print}, path)  # an arbitrary object needs unpickling
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_pretrained_backbone(LayerDropViT(RGB), path)


def test_import_checkpoint_command_converts_pth_to_safetensors(tmp_path, capsys):
    source = tmp_path / "timm.pth"
    torch.save(_timm_vit().state_dict(), source)
    target = tmp_path / "timm.safetensors"
    assert admn_main(["import-checkpoint", str(source), "--out", str(target)]) == 0
    report = load_pretrained_backbone(LayerDropViT(RGB), target)
    assert report.missing == [] and len(report.loaded) > 100
