"""Per-modality layers fused across modalities (admn_core.fused) compute what the modules compute."""

import dataclasses

import pytest
import torch
from torch import nn

from admn_core.bench import random_bundle
from admn_core.fastpath import FastPath, FastPathOptions
from admn_core.fused import FusedReadoutAdapters, FusedStems
from admn_core.presets import preset_config

from model_fixtures import micro_config


def _inputs(config, batch, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {s.name: torch.randn(batch, len(s.views), s.channels, *s.input_size, generator=generator)
            for s in config.modalities}


def _stem_tokens_one_by_one(config, controller, inputs):
    return torch.cat([controller.stems[s.name](inputs[s.name].flatten(0, 1)).view(inputs[s.name].shape[0],
                                                                                   len(s.views), -1)
                      for s in config.modalities], dim=1)


@pytest.mark.parametrize("preset, alignment", [("micro", None), ("tiny", None), ("micro_odd_features", 8)])
def test_fused_stems_equal_the_per_modality_stems(preset, alignment):
    # micro: depth is 16×24 and rgb 16×16 (resized one by one); tiny: every input 64×64 (one resize for all);
    # micro_odd_features: stems on 18×18 → 3·5·5 = 75 features, padded to 80 (what a GPU does by default).
    config = preset_config("tiny") if preset == "tiny" else micro_config()
    if preset == "micro_odd_features":
        config = dataclasses.replace(config, modalities=tuple(
            dataclasses.replace(m, controller_input_size=(18, 18)) for m in config.modalities))
    controller = random_bundle(config, (6,), seed=1).controllers["budget_6"].eval()
    inputs = _inputs(config, batch=2)
    fused = FusedStems(config, controller, feature_alignment=alignment)
    if alignment:
        assert fused.feature_padding == 5 and fused.proj_weight.shape[1] == 80
    with torch.inference_mode():
        expected = _stem_tokens_one_by_one(config, controller, inputs)
        got = fused(inputs)
    assert got.shape == expected.shape == (2, len(config.modalities) * len(config.modalities[0].views),
                                           config.controller.embed_dim)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_fused_readout_adapters_equal_the_per_modality_modules():
    config = preset_config("tiny")
    model = random_bundle(config, (6,), seed=2).model.eval()
    generator = torch.Generator().manual_seed(3)
    batch = 2
    tokens = {s.name: torch.randn(batch * len(s.views), s.num_tokens, s.embed_dim, generator=generator)
              for s in config.modalities}
    with torch.inference_mode():
        expected = torch.cat([model.adapters[s.name](model.backbones[s.name].readout(tokens[s.name])).view(
            batch, len(s.views), -1) for s in config.modalities], dim=1)
        got = FusedReadoutAdapters(model)(tokens, batch)
    assert got.shape == expected.shape == (batch, 9, config.fusion.dim)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_fusion_is_refused_where_the_modalities_differ():
    micro = micro_config(readout="grid", fusion_pooling="flatten")  # depth has a 2×3 patch grid, rgb 2×2
    model = random_bundle(micro, (6,), seed=0).model
    assert not FusedReadoutAdapters.supported(model)
    with pytest.raises(ValueError, match="differ"):
        FusedReadoutAdapters(model)
    assert not FusedReadoutAdapters.supported(random_bundle(micro_config(readout="cls"), (6,), seed=0).model)
    paper_av = preset_config("paper_av")  # the microphone's stem sees 128×512, the cameras' 100×100
    assert not FusedStems.supported(paper_av, object())


def test_the_fast_path_uses_them_and_still_equals_eager_in_a_mixed_batch():
    config = preset_config("tiny")
    bundle = random_bundle(config, (6, 12), seed=4)
    model = bundle.model.eval()
    controllers = {n: c.eval() for n, c in bundle.controllers.items()}
    fast = FastPath(model, controllers, FastPathOptions(onnx=False))
    assert fast.fused_readout is not None and len(fast.fused_stems) == len(controllers)
    inputs = _inputs(config, batch=3, seed=5)
    costs = torch.ones(len(config.modalities), dtype=torch.long)
    with torch.inference_mode():
        masks = torch.cat([fast.select("budget_6", {k: v[:2] for k, v in inputs.items()}, 6, costs),
                           fast.select("budget_12", {k: v[2:] for k, v in inputs.items()}, 12, costs)])
        reference_logits, _ = controllers["budget_6"](inputs)
        reference = model(inputs, masks)
        output = fast(inputs, masks)
        logits = fast.controller_logits(controllers["budget_6"], inputs)
    torch.testing.assert_close(logits, reference_logits, atol=1e-5, rtol=1e-5)
    assert masks.sum(dim=(1, 2)).tolist() == [6, 6, 12]
    torch.testing.assert_close(output.mean, reference.mean, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(output.covariance, reference.covariance, atol=1e-3, rtol=1e-4)


def test_fused_stems_follow_the_stems_layers_whatever_their_chain():
    """The fused chain is read from the stems' layers: another chain of convolutions, ReLUs and pools (here without
    the pool, with a stride and padding) fuses too, and a layer it cannot fuse makes it refuse."""
    config = micro_config()
    controller = random_bundle(config, (6,), seed=8).controllers["budget_6"].eval()
    generator = torch.Generator().manual_seed(9)
    for spec in config.modalities:
        stem = controller.stems[spec.name]
        stem.convs = nn.Sequential(nn.Conv2d(spec.channels, 4, 3, stride=2, padding=1), nn.ReLU(),
                                   nn.Conv2d(4, 3, 3), nn.ReLU())  # 16×16 → 8×8 → 6×6
        for parameter in stem.convs.parameters():
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.3
        stem.proj = nn.Linear(3 * 6 * 6, config.controller.embed_dim)
    inputs = _inputs(config, batch=2, seed=10)
    with torch.inference_mode():
        expected = _stem_tokens_one_by_one(config, controller, inputs)
        torch.testing.assert_close(FusedStems(config, controller)(inputs), expected, atol=1e-5, rtol=1e-5)
    controller.stems["mic"].convs[1] = nn.GELU()
    assert not FusedStems.supported(config, controller)
    with pytest.raises(ValueError, match="differ"):
        FusedStems(config, controller)


def test_the_fast_path_runs_unfused_stems_where_the_modalities_differ():
    """Stems on different input sizes cannot share one batch: the fast path runs them one by one, still equal."""
    config = micro_config()
    config = dataclasses.replace(config, modalities=tuple(
        dataclasses.replace(m, controller_input_size=(16, 16) if m.name == "rgb" else (18, 18))
        for m in config.modalities))
    bundle = random_bundle(config, (6,), seed=11)
    controller = bundle.controllers["budget_6"].eval()
    fast = FastPath(bundle.model.eval(), {"budget_6": controller}, FastPathOptions(onnx=False))
    assert fast.fused_stems == {}
    inputs = _inputs(config, batch=2, seed=12)
    with torch.inference_mode():
        torch.testing.assert_close(fast.controller_logits(controller, inputs), controller(inputs)[0],
                                   atol=1e-5, rtol=1e-5)
