"""The batch-1 device-allocated forward (admn_core.slot_blocks) equals the eager controller + model and runs only the
blocks the controller chose; the GPU captures it as one graph (the CUDA test in test_fastpath.py)."""

import dataclasses

import pytest
import torch

from admn_core.allocation import select_layers
from admn_core.bench import random_bundle
from admn_core.fastpath import FastPath
from admn_core.preprocess import preprocess_batch, synthetic_sample
from admn_core.presets import preset_config
from admn_core.slot_blocks import DeviceAllocatedForward, SlotBlocks

from model_fixtures import micro_config


def _engine_parts(config, seed=3):
    bundle = random_bundle(config, [5], seed=seed)
    model = bundle.model.eval()
    controller = bundle.controllers["budget_5"].eval()
    return model, controller


def _assert_output_close(reference, output):
    if isinstance(reference, torch.Tensor):
        torch.testing.assert_close(output, reference, atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(output.mean, reference.mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(output.covariance, reference.covariance, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("task", ["localization", "classification"])
@pytest.mark.parametrize("budget", [3, 5, 12, 20, 36])
def test_equals_eager_controller_and_model_with_padded_token_counts(task, budget):
    """micro: rgb and mic have 5 tokens, depth 7 (16×24 input), so tokens are padded and padding keys masked."""
    config = micro_config(task=task, readout="grid", fusion_pooling="flatten")
    model, controller = _engine_parts(config)
    device_allocated = DeviceAllocatedForward(FastPath(model, {"c": controller}))
    assert device_allocated.key_masks is not None
    inputs = preprocess_batch(config, [synthetic_sample(config, budget)])
    costs = torch.ones(3, dtype=torch.long)
    with torch.inference_mode():
        mask, output = device_allocated(controller, inputs, budget, costs)
        expected_mask = select_layers(controller(inputs)[0], budget, costs)
        assert torch.equal(mask, expected_mask)
        _assert_output_close(model(inputs, expected_mask), output)


def test_equals_eager_on_the_tiny_preset_without_padding():
    config = preset_config("tiny_rgbd")
    model, controller = _engine_parts(config)
    device_allocated = DeviceAllocatedForward(FastPath(model, {"c": controller}))
    assert device_allocated.key_masks is None  # equal token counts: plain attention
    inputs = preprocess_batch(config, [synthetic_sample(config, 1)])
    costs = torch.ones(2, dtype=torch.long)
    with torch.inference_mode():
        for budget in (6, 13, 24):
            mask, output = device_allocated(controller, inputs, budget, costs)
            expected_mask = select_layers(controller(inputs)[0], budget, costs)
            assert torch.equal(mask, expected_mask)
            _assert_output_close(model(inputs, expected_mask), output)


def test_only_the_chosen_blocks_run_and_each_one_matters():
    """NaN weights in every block the controller did not choose leave the output finite and unchanged; changing one
    chosen block (not block 0) changes that modality's final tokens (the random head barely reacts to them)."""
    config = micro_config(readout="grid", fusion_pooling="flatten")
    model, controller = _engine_parts(config)
    inputs = preprocess_batch(config, [synthetic_sample(config, 4)])
    costs, budget = torch.ones(3, dtype=torch.long), 8
    with torch.inference_mode():
        mask = select_layers(controller(inputs)[0], budget, costs)[0]
        first = DeviceAllocatedForward(FastPath(model, {"c": controller}))
        _, reference = first(controller, inputs, budget, costs)
        reference_tokens = first.state.clone()  # [M, V, T_max, D]: every modality's final tokens
        chosen = None
        for m, spec in enumerate(config.modalities):
            for index, block in enumerate(model.backbones[spec.name].blocks):
                if not mask[m, index]:
                    block.mlp.fc1.weight.fill_(float("nan"))
                elif index > 0 and chosen is None:
                    chosen = m, block
        _, output = DeviceAllocatedForward(FastPath(model, {"c": controller}))(controller, inputs, budget, costs)
        assert torch.isfinite(output.mean).all()
        _assert_output_close(reference, output)
        modality, block = chosen
        block.mlp.fc2.weight.mul_(3.0)  # (a constant added to every feature would vanish in the next LayerNorm)
        changed = DeviceAllocatedForward(FastPath(model, {"c": controller}))
        changed(controller, inputs, budget, costs)
        count = config.modalities[modality].num_tokens
        difference = (changed.state - reference_tokens)[:, :, :count].abs().amax(dim=(1, 2, 3))  # per modality
        assert difference[modality] > 1e-2
        assert difference.sum() == difference[modality]  # the other modalities' tokens are untouched


def test_refuses_batches_unequal_costs_and_unequal_block_forms():
    config = micro_config()
    model, controller = _engine_parts(config)
    fast = FastPath(model, {"c": controller})
    device_allocated = DeviceAllocatedForward(fast)
    two = preprocess_batch(config, [synthetic_sample(config, 0), synthetic_sample(config, 1)])
    with pytest.raises(ValueError, match="batch 1"):
        device_allocated(controller, two, 5, torch.ones(3, dtype=torch.long))
    one = {name: x[:1] for name, x in two.items()}
    with pytest.raises(ValueError, match="unequal block costs"):
        device_allocated(controller, one, 5, torch.tensor([1, 2, 1]))
    # A wider mic backbone: the slots cannot hold every modality's blocks.
    mic = dataclasses.replace(config.modalities[2], embed_dim=16)
    wider = dataclasses.replace(config, modalities=(*config.modalities[:2], mic))
    wider_model, wider_controller = _engine_parts(wider)
    wider_fast = FastPath(wider_model, {"c": wider_controller})
    assert not DeviceAllocatedForward.supported(wider_fast)
    with pytest.raises(ValueError, match="differ in shape"):
        SlotBlocks(wider, wider_fast.blocks)
