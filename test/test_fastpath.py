"""The fast path (admn_core.fastpath) equals the eager model within tolerance and never runs an inactive block.
Its stages run in PyTorch here (`PYTORCH_STAGES`); test_onnx_cpu.py runs them on ONNX Runtime."""

import numpy as np
import pytest
import torch

from admn_core.allocation import select_layers
from admn_core.bench import random_bundle
from admn_core.fastpath import FastPath, FastPathOptions
from admn_core.preprocess import preprocess_batch, synthetic_sample
from admn_core.runtime import InferenceEngine

from model_fixtures import assert_outputs_close, micro_config

PYTORCH_STAGES = FastPathOptions(onnx=False)


def _setup(task="localization", budgets=(5, 8), readout="cls", fusion_pooling="mean"):
    config = micro_config(task=task, readout=readout, fusion_pooling=fusion_pooling)
    bundle = random_bundle(config, budgets, seed=3)
    model = bundle.model.eval()
    controllers = {n: c.eval() for n, c in bundle.controllers.items()}
    return config, model, controllers


def _close(reference, output, atol=1e-5):
    assert_outputs_close(reference, output, atol=atol, rtol=1e-5)


def _random_masks(batch, modalities, depth, budget, seed):
    logits = torch.rand(batch, modalities, depth, generator=torch.Generator().manual_seed(seed))
    return select_layers(logits, budget, torch.ones(modalities, dtype=torch.long))


@pytest.mark.parametrize("task", ["localization", "classification"])
@pytest.mark.parametrize("budget", [3, 5, 12, 20, 36])
def test_fast_path_equals_eager_at_several_allocations(task, budget):
    config, model, controllers = _setup(task)
    fast = FastPath(model, controllers, PYTORCH_STAGES)
    inputs = preprocess_batch(config, [synthetic_sample(config, 0)])
    masks = _random_masks(1, 3, 12, budget, seed=budget)
    with torch.inference_mode():
        _close(model(inputs, masks), fast(inputs, masks))


@pytest.mark.parametrize("readout, fusion_pooling", [("cls", "mean"), ("mean", "mean"), ("grid", "flatten")])
def test_fast_path_equals_eager_in_a_mixed_batch(readout, fusion_pooling):
    config, model, controllers = _setup(readout=readout, fusion_pooling=fusion_pooling)
    fast = FastPath(model, controllers, PYTORCH_STAGES)
    inputs = preprocess_batch(config, [synthetic_sample(config, seed) for seed in range(6)])
    masks = _random_masks(6, 3, 12, 9, seed=1)
    masks[3] = masks[0]  # some rows share an allocation, others do not
    with torch.inference_mode():
        _close(model(inputs, masks), fast(inputs, masks))
        _close(model(inputs, None), fast(inputs, None))


@pytest.mark.parametrize("manual_attention", [False, True])
def test_both_encoder_attention_forms_match(manual_attention):
    """The encoders' attention written out (a CPU's) and the fused kernel (a GPU's) both equal the modules."""
    config, model, controllers = _setup()
    fast = FastPath(model, controllers, PYTORCH_STAGES)
    assert fast.manual_encoder_attention  # on a CPU
    fast.manual_encoder_attention = manual_attention
    inputs = preprocess_batch(config, [synthetic_sample(config, 1)])
    masks = _random_masks(1, 3, 12, 10, seed=2)
    with torch.inference_mode():
        _close(model(inputs, masks), fast(inputs, masks))
        for controller in controllers.values():
            torch.testing.assert_close(fast.controller_logits(controller, inputs), controller(inputs)[0],
                                       atol=1e-6, rtol=1e-5)


def test_inactive_blocks_never_run_on_the_fast_path():
    config, model, controllers = _setup()
    fast = FastPath(model, controllers, PYTORCH_STAGES)
    calls = []

    class Recording:
        def __init__(self, name, index, inner):
            self.name, self.index, self.inner = name, index, inner

        def __call__(self, x):
            calls.append((self.name, self.index, x.shape[0]))
            return self.inner(x)

    for name, blocks in fast.blocks.items():
        fast.blocks[name] = [Recording(name, i, b) for i, b in enumerate(blocks)]
    # Module hooks too: nothing may reach a timm block that the allocation switched off.
    module_calls = []
    for name, backbone in model.backbones.items():
        for index, block in enumerate(backbone.blocks):
            block.register_forward_hook(lambda m, a, o, name=name, index=index: module_calls.append((name, index)))
    inputs = preprocess_batch(config, [synthetic_sample(config, seed) for seed in range(3)])
    masks = _random_masks(3, 3, 12, 7, seed=4)
    with torch.inference_mode():
        fast(inputs, masks)
    expected = []
    for index, name in enumerate(config.modality_names):
        for row in range(3):
            expected += [(name, i) for i in torch.nonzero(masks[row, index]).flatten().tolist()]
    ran = [(name, index) for name, index, _ in calls]
    assert sorted(set(ran)) == sorted(set(expected))
    # Each (modality, block) runs once per group of rows sharing it, never more rows than the active ones.
    per_block_rows = {}
    for name, index, rows in calls:
        per_block_rows[(name, index)] = per_block_rows.get((name, index), 0) + rows
    views = len(config.modalities[0].views)
    for key, rows in per_block_rows.items():
        active_rows = sum(1 for e in expected if e == key)
        assert rows == active_rows * views
    assert not module_calls  # the lean forward uses the weights, not the module (supported timm blocks)
    assert fast.counters["block_runs"] == len(calls)


def test_unsupported_blocks_fall_back_to_the_module():
    config, model, controllers = _setup()
    fast = FastPath(model, controllers, PYTORCH_STAGES)
    for blocks in fast.blocks.values():
        for block in blocks:
            block.supported = False
    inputs = preprocess_batch(config, [synthetic_sample(config, 0)])
    masks = _random_masks(1, 3, 12, 6, seed=5)
    with torch.inference_mode():
        _close(model(inputs, masks), fast(inputs, masks))


def test_fast_engine_matches_the_eager_engine():
    config = micro_config()
    bundle = random_bundle(config, (5, 8), seed=1)
    eager = InferenceEngine(bundle)
    fast = InferenceEngine(random_bundle(config, (5, 8), seed=1), fast=True)
    samples = [synthetic_sample(config, seed) for seed in range(3)]
    for budget in (2, 3, 5, 6, 8, 20, 36):
        for one, other in zip(eager.infer_batch(samples, budget), fast.infer_batch(samples, budget), strict=True):
            assert one.ran == other.ran
            if not one.ran:
                continue
            np.testing.assert_array_equal(one.allocation.mask, other.allocation.mask)
            assert one.allocation.source == other.allocation.source
            np.testing.assert_allclose(other.position_m, one.position_m, atol=1e-5)
            np.testing.assert_allclose(other.covariance_m2, one.covariance_m2, atol=1e-6)
            assert one.flops == other.flops


def test_options_map_from_the_engines_flag_and_are_checked():
    config = micro_config()
    bundle = random_bundle(config, (5,), seed=1)
    assert InferenceEngine(bundle).fast is None
    assert InferenceEngine(bundle, fast=True).fast.options == FastPathOptions()
    options = FastPathOptions(onnx=False, front_threads=3)
    fast = InferenceEngine(bundle, fast=options).fast
    assert fast.options is options and fast.front_threads == 3 and not fast.onnx_stages and not fast.graphs
    assert FastPath(bundle.model, options=FastPathOptions(front_threads=None)).front_threads == torch.get_num_threads()
    with pytest.raises(ValueError, match="front_threads must be at least 1, got 0"):
        FastPathOptions(front_threads=0)


def test_onnx_default_follows_the_one_environment_override(monkeypatch):
    monkeypatch.setenv("ADMN_FASTPATH_ONNX", "0")
    assert FastPathOptions().onnx is False
    monkeypatch.setenv("ADMN_FASTPATH_ONNX", "1")
    assert FastPathOptions().onnx is True
    monkeypatch.delenv("ADMN_FASTPATH_ONNX")
    assert FastPathOptions().onnx is True


def test_groups_from_a_first_block_merge_rows_that_differ_only_below_it():
    from admn_core.fastpath import _groups_from

    masks = torch.tensor([[1, 1, 0, 1], [0, 1, 0, 1], [1, 0, 1, 0], [1, 1, 0, 1]], dtype=torch.bool)
    assert _groups_from(masks, 0) == {(0, 1, 3): [0, 3], (1, 3): [1], (0, 2): [2]}
    assert _groups_from(masks, 1) == {(1, 3): [0, 1, 3], (2,): [2]}


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_graphs_equal_eager_for_single_and_mixed_batches():
    """The graph path on a GPU, fp32, batch 1 and a mixed batch: `forward` with given masks, `select`, and
    `select_and_forward` (the controller on a second stream beside the embeddings and block 0s). Several controllers
    share one graph memory pool: each controller's mask must survive the embedding and block-0 replays (it did not,
    once)."""
    config, model, controllers = _setup(readout="grid", fusion_pooling="flatten")
    model = model.cuda()
    controllers = {n: c.cuda() for n, c in controllers.items()}
    fast = FastPath(model, controllers)
    assert fast.graphs and not fast.onnx_stages
    costs = torch.ones(3, dtype=torch.long)  # host costs, as the engine's (read while capturing)
    atol = 1e-4
    for batch in (1, 4):
        inputs = {k: v.cuda() for k, v in
                  preprocess_batch(config, [synthetic_sample(config, seed) for seed in range(batch)]).items()}
        masks = _random_masks(batch, 3, 12, 9, seed=batch).cuda()
        with torch.inference_mode():
            for _ in range(2):  # capture, then replay
                _close(model(inputs, masks), fast(inputs, masks), atol=atol)
                for name, controller in controllers.items():
                    expected = select_layers(controller(inputs)[0], 8, costs)
                    assert torch.equal(fast.select(name, inputs, 8, costs), expected)
                    selected, output = fast.select_and_forward(name, inputs, 8, costs)
                    assert torch.equal(selected, expected)
                    _close(model(inputs, expected), output, atol=atol)
    assert fast.counters["graph_replays"] > fast.counters["graph_captures"]
