"""The inference engine obeys every budget and gives the same numbers batched or one by one."""

import numpy as np
import pytest
import torch

from admn_core.bench import random_bundle
from admn_core.bundle import save_bundle
from admn_core.fastpath import FastPathOptions
from admn_core.preprocess import synthetic_sample
from admn_core.runtime import InferenceEngine

from model_fixtures import micro_config


def _engine(tmp_path, budgets=(5, 8), task="localization"):
    config = micro_config(task=task)
    path = save_bundle(tmp_path / "bundle.safetensors", random_bundle(config, budgets, seed=1))
    return InferenceEngine.from_bundle(path), config


def test_budget_is_never_exceeded_and_controllers_are_chosen_by_budget(tmp_path):
    engine, config = _engine(tmp_path)
    sample = synthetic_sample(config)
    assert engine.min_budget == 3 and engine.max_budget == 36
    for budget in range(0, 40):
        result = engine.infer(sample, budget)
        if budget < 3:
            assert not result.ran and "below the minimum" in result.skipped_reason
            continue
        allocation = result.allocation
        assert allocation.budget_used <= budget
        assert allocation.mask[:, 0].all()
        if budget >= 36:
            assert allocation.source == "full" and allocation.budget_used == 36
        elif budget >= 8:
            assert allocation.source == "controller:budget_8" and allocation.budget_used == 8
        elif budget >= 5:
            assert allocation.source == "controller:budget_5" and allocation.budget_used == 5
        else:
            assert allocation.source == "naive" and allocation.budget_used == budget


def test_naive_allocation_engine_splits_every_budget_evenly_and_ignores_the_controllers(tmp_path):
    from admn_core.allocation import naive_allocation

    engine, config = _engine(tmp_path)
    naive = InferenceEngine.from_bundle(tmp_path / "bundle.safetensors", allocation="naive")
    sample = synthetic_sample(config)
    for budget in (5, 8, 20):
        assert engine.infer(sample, budget).allocation.source.startswith("controller:")
        result = naive.infer(sample, budget)
        assert result.allocation.source == "naive"
        assert torch.equal(torch.as_tensor(result.allocation.mask), naive_allocation(config, budget))
    assert naive.infer(sample, 36).allocation.source == "full"


def test_an_unknown_allocation_policy_is_refused(tmp_path):
    _engine(tmp_path)
    with pytest.raises(ValueError, match="allocation must be one of"):
        InferenceEngine.from_bundle(tmp_path / "bundle.safetensors", allocation="oracle")


def test_batched_inference_equals_one_by_one(tmp_path):
    engine, config = _engine(tmp_path)
    samples = [synthetic_sample(config, seed) for seed in range(4)]
    batched = engine.infer_batch(samples, 8)
    for sample, together in zip(samples, batched, strict=True):
        alone = engine.infer(sample, 8)
        np.testing.assert_array_equal(alone.allocation.mask, together.allocation.mask)
        np.testing.assert_allclose(alone.position_m, together.position_m, atol=1e-5)
        np.testing.assert_allclose(alone.covariance_m2, together.covariance_m2, atol=1e-6)


def test_localization_output_is_in_metres_with_a_valid_covariance(tmp_path):
    engine, config = _engine(tmp_path)
    result = engine.infer(synthetic_sample(config), 36)
    assert result.position_m.shape == (2,) and np.all(np.abs(result.position_m) <= 2.0 + 1e-6)
    assert np.all(np.linalg.eigvalsh(result.covariance_m2) >= (0.01 ** 2) * 0.999)  # ≥ 1 cm² floor
    assert result.flops > 0 and result.timings_ms["total"] > 0


def test_classification_bundle_gives_probabilities(tmp_path):
    engine, config = _engine(tmp_path, task="classification")
    result = engine.infer(synthetic_sample(config), 6)
    assert result.class_probabilities.shape == (5,)
    assert abs(float(result.class_probabilities.sum()) - 1.0) < 1e-5


def test_fewer_blocks_cost_fewer_flops(tmp_path):
    engine, config = _engine(tmp_path)
    sample = synthetic_sample(config)
    flops = [engine.infer(sample, budget).flops for budget in (3, 5, 8, 36)]
    assert flops == sorted(flops) and flops[0] < flops[-1] / 3


def test_engine_runs_in_another_dtype(tmp_path):
    config = micro_config()
    engine = InferenceEngine(random_bundle(config, [5]), dtype=torch.float64)
    result = engine.infer(synthetic_sample(config), 5)
    assert result.ran and np.isfinite(result.position_m).all()


def test_engine_moves_to_a_device_with_a_new_fast_path_of_the_same_options():
    """The node's fallback after the GPU ran out of memory: `move_to` moves model and controllers and rebuilds the
    fast path (its graphs and ONNX stages belong to the old device) with the same options; results stay equal."""
    config = micro_config()
    options = FastPathOptions(onnx=False, front_threads=2)
    engine = InferenceEngine(random_bundle(config, (5, 8), seed=1), fast=options)
    eager = InferenceEngine(random_bundle(config, (5, 8), seed=1))
    old = engine.fast
    engine.move_to("cpu")
    assert engine.device == torch.device("cpu") and engine.fast is not old and engine.fast.options is options
    assert engine.fast.device.type == "cpu" and engine.fast.model is engine.model
    samples = [synthetic_sample(config, seed) for seed in range(2)]
    for budget in (5, 8):
        for fast_result, eager_result in zip(engine.infer_batch(samples, budget), eager.infer_batch(samples, budget),
                                             strict=True):
            np.testing.assert_array_equal(fast_result.allocation.mask, eager_result.allocation.mask)
            np.testing.assert_allclose(fast_result.position_m, eager_result.position_m, atol=1e-5)
    eager.move_to("cpu")
    assert eager.fast is None and eager.infer(samples[0], 5).ran


def test_a_multi_frame_model_asked_for_the_fast_path_serves_the_eager_model(caplog):
    from dataclasses import replace

    from admn_core.presets import preset_config

    config = preset_config("tiny_ave")
    config = replace(config, modalities=tuple(replace(spec, frames=2) if spec.kind != "audio" else spec
                                              for spec in config.modalities))
    bundle = random_bundle(config, [], seed=2)
    with caplog.at_level("INFO", logger="admn_core.runtime"):
        engine = InferenceEngine(bundle, fast=True)
    assert engine.fast is None and engine.fast_options is None
    assert "several frames per view" in caplog.text
    result = engine.infer(synthetic_sample(config), engine.max_budget)
    expected = InferenceEngine(random_bundle(config, [], seed=2)).infer(synthetic_sample(config), engine.max_budget)
    np.testing.assert_allclose(result.class_probabilities, expected.class_probabilities, rtol=1e-5, atol=1e-6)
