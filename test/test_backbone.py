"""The LayerDrop ViT: equal to timm's ViT with every block on, skips inactive blocks, groups mixed masks."""

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from admn_core.allocation import select_layers
from admn_core.config import ModalitySpec
from admn_core.models.backbone import LayerDropViT
from admn_core.models.layerdrop import sample_layerdrop_masks
from admn_core.presets import preset_config

SPEC = ModalitySpec(name="rgb", kind="rgb", views=("a",), channels=3, input_size=(32, 48), patch_size=8,
                    embed_dim=48, num_heads=4)


def _timm_reference(spec: ModalitySpec) -> VisionTransformer:
    return VisionTransformer(img_size=spec.input_size, patch_size=spec.patch_size, in_chans=spec.channels,
                             num_classes=0, embed_dim=spec.embed_dim, depth=spec.depth, num_heads=spec.num_heads,
                             global_pool="token").eval()


def _count_block_calls(backbone: LayerDropViT) -> list[int]:
    calls = [0] * backbone.depth
    for index, block in enumerate(backbone.blocks):
        def count(module, args, output, index=index):
            calls[index] += 1

        block.register_forward_hook(count)
    return calls


def test_every_block_on_equals_timm_vision_transformer():
    torch.manual_seed(0)
    ours = LayerDropViT(SPEC).eval()
    reference = _timm_reference(SPEC)
    result = reference.load_state_dict(ours.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(3, 3, 32, 48)
    with torch.no_grad():
        expected = reference(x)
        assert (ours(x) - expected).abs().max() <= 1e-5
        all_on = torch.ones(3, 12, dtype=torch.bool)
        assert (ours(x, all_on) - expected).abs().max() <= 1e-5


def test_inactive_blocks_are_never_called():
    torch.manual_seed(0)
    backbone = LayerDropViT(SPEC).eval()
    calls = _count_block_calls(backbone)
    mask = torch.zeros(4, 12, dtype=torch.bool)
    mask[:, [0, 5, 11]] = True
    mask[2, 7] = True  # one sample with an extra block: a second group
    with torch.no_grad():
        backbone(torch.randn(4, 3, 32, 48), mask)
    assert calls[0] == 2 and calls[5] == 2 and calls[11] == 2  # once per group
    assert calls[7] == 1  # only the group that has it
    assert all(calls[i] == 0 for i in range(12) if i not in (0, 5, 7, 11))


def test_mixed_masks_in_one_batch_equal_samples_one_by_one():
    torch.manual_seed(0)
    backbone = LayerDropViT(SPEC).eval()
    x = torch.randn(5, 3, 32, 48)
    mask = torch.rand(5, 12) > 0.5
    mask[3] = mask[1]  # a shared row: grouped together
    with torch.no_grad():
        batched = backbone(x, mask)
        single = torch.cat([backbone(x[i:i + 1], mask[i:i + 1]) for i in range(5)])
    assert (batched - single).abs().max() <= 1e-5


def test_a_skipped_block_changes_the_output():
    torch.manual_seed(0)
    backbone = LayerDropViT(SPEC).eval()
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        full = backbone(x, torch.ones(1, 12, dtype=torch.bool))
        without_4 = torch.ones(1, 12, dtype=torch.bool)
        without_4[0, 4] = False
        assert (backbone(x, without_4) - full).abs().max() > 1e-4


def test_straight_through_mask_reaches_controller_logits_and_matches_hard_forward():
    torch.manual_seed(0)
    backbone = LayerDropViT(SPEC).eval()
    x = torch.randn(2, 3, 32, 48)
    logits = torch.randn(2, 1, 12, requires_grad=True)
    soft_mask = select_layers(logits, budget=5, training=True, generator=torch.Generator().manual_seed(1))[:, 0]
    assert soft_mask.requires_grad
    assert torch.equal(soft_mask.detach(), soft_mask.detach().round())  # forward value is an exact 0/1 mask
    output = backbone(x, soft_mask)
    output.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    with torch.no_grad():
        hard = backbone(x, soft_mask.detach().bool())
    assert (output.detach() - hard).abs().max() <= 1e-5


def test_layerdrop_masks_share_a_row_per_batch_and_keep_block_0_on_full_drop():
    spec = preset_config("tiny").layerdrop
    generator = torch.Generator().manual_seed(0)
    masks = [sample_layerdrop_masks(3, 12, 4, 0.2, spec, generator) for _ in range(2000)]
    stacked = torch.stack(masks)  # [draws, B, M, 12]
    assert torch.equal(stacked[:, 0], stacked[:, 3])  # official: one mask per modality per batch
    only_first = stacked[:, 0].sum(-1) == 1
    full_drops = (only_first & stacked[:, 0, :, 0]).float().mean().item()
    assert 0.08 < full_drops < 0.12  # ≈ full_backbone_drop (0.1) plus rare natural single-block rows
    keep_rate = stacked[:, 0, :, 1:].float().mean().item()
    assert abs(keep_rate - 0.9 * 0.8) < 0.02  # blocks 1..11 survive only when no full drop and not dropped


def test_freezing_leaves_only_the_last_blocks_trainable():
    backbone = LayerDropViT(SPEC)
    backbone.freeze_all_but_last(2)
    trainable = {name.split(".")[1] for name, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {"10", "11"}
    assert not backbone.pos_embed.requires_grad and not backbone.norm.weight.requires_grad


def test_wrong_mask_shape_is_a_clear_error():
    backbone = LayerDropViT(SPEC).eval()
    with pytest.raises(ValueError, match=r"layer mask must be \[batch=2, depth=12\]"):
        backbone(torch.randn(2, 3, 32, 48), torch.ones(2, 11, dtype=torch.bool))


def test_mean_readout_equals_timm_global_average_pooling():
    import dataclasses

    spec = dataclasses.replace(SPEC, readout="mean")
    torch.manual_seed(0)
    ours = LayerDropViT(spec).eval()
    reference = VisionTransformer(img_size=spec.input_size, patch_size=spec.patch_size, in_chans=spec.channels,
                                  num_classes=0, embed_dim=spec.embed_dim, depth=spec.depth, num_heads=spec.num_heads,
                                  global_pool="avg").eval()  # timm: mean of patch tokens → fc_norm
    state = {k.replace("norm.", "fc_norm.", 1) if k.startswith("norm.") else k: v for k, v in ours.state_dict().items()}
    result = reference.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        assert (ours(x) - reference(x)).abs().max() <= 1e-5
        mask = torch.ones(2, 12, dtype=torch.bool)
        mask[1, 3:9] = False
        assert (ours(x, mask)[0] - reference(x[:1])[0]).abs().max() <= 1e-5


def test_grid_readout_projects_region_means_of_the_normed_patch_tokens():
    import dataclasses

    spec = dataclasses.replace(SPEC, readout="grid", readout_grid=2)  # 4×6 patches → 2×2 regions of 2×3 patches
    torch.manual_seed(0)
    backbone = LayerDropViT(spec).eval()
    assert backbone.readout_proj.in_features == 4 * spec.embed_dim
    tokens = torch.randn(2, spec.num_tokens, spec.embed_dim)
    normed = backbone.norm(tokens[:, 1:]).view(2, 4, 6, spec.embed_dim)  # [B, rows, cols, D]
    regions = [normed[:, r:r + 2, c:c + 3].mean(dim=(1, 2)) for r in (0, 2) for c in (0, 3)]  # row-major
    expected = torch.stack(regions, dim=-1).flatten(1) @ backbone.readout_proj.weight.T + backbone.readout_proj.bias
    torch.testing.assert_close(backbone.readout(tokens), expected)
    # Region matters: moving a token to another region changes the embedding; within a region it does not.
    within, across = tokens.clone(), tokens.clone()
    within[:, [1, 2]] = tokens[:, [2, 1]]  # patches (0,0) and (0,1): same region
    across[:, [1, 4]] = tokens[:, [4, 1]]  # patches (0,0) and (0,3): different regions
    torch.testing.assert_close(backbone.readout(within), backbone.readout(tokens))
    assert (backbone.readout(across) - backbone.readout(tokens)).abs().max() > 1e-4
