"""The CPU fast path's ONNX Runtime stages (admn_core.onnx_cpu) equal PyTorch, every stage runs on ONNX Runtime when
asked (nothing is timed), and a stage that cannot be exported falls back to PyTorch with a warning instead of failing
the call."""

import pytest
import torch

from admn_core.allocation import layer_costs
from admn_core.bench import random_bundle
from admn_core.fastpath import FastPath, FastPathOptions
from admn_core.models.heads import GaussianPrediction
from admn_core.onnx_cpu import OnnxStage
from admn_core.preprocess import preprocess_batch, synthetic_sample
from admn_core.presets import preset_config

from model_fixtures import assert_outputs_close, micro_config

pytest.importorskip("onnxruntime")


def _close(reference, output, atol=1e-5):
    assert_outputs_close(reference, output, atol=atol, rtol=1e-4)


def test_a_stage_equals_its_function_and_keeps_the_output_structure():
    torch.manual_seed(0)
    linear = torch.nn.Linear(5, 4)

    def gaussian(x, y):
        return GaussianPrediction(mean=linear(x) * y, covariance=torch.relu(linear(x)) + 1)

    x, y = torch.randn(3, 5), torch.randn(3, 4)
    stage = OnnxStage(gaussian, [x, y], [linear])
    output = stage(x, y)
    assert isinstance(output, GaussianPrediction)
    _close(gaussian(x, y), output)
    pair = OnnxStage(lambda a: (a + 1, a.sum(0)), [x])
    first, second = pair(x)
    torch.testing.assert_close(first, x + 1)
    torch.testing.assert_close(second, x.sum(0))
    with pytest.raises(ValueError, match="traced for shapes"):
        stage(torch.randn(2, 5), torch.randn(2, 4))
    with pytest.raises(ValueError, match="float32 CPU"):
        OnnxStage(linear, [x.double()])


@pytest.mark.parametrize("preset,front_threads", [("micro", 1), ("micro", 2), ("tiny", 1), ("tiny", 2)])
def test_fast_path_with_onnx_stages_equals_eager(preset, front_threads):
    config = micro_config() if preset == "micro" else preset_config("tiny")
    bundle = random_bundle(config, (6,), seed=5)
    model = bundle.model.eval()
    controllers = {n: c.eval() for n, c in bundle.controllers.items()}
    fast = FastPath(model, controllers, FastPathOptions(onnx=True, front_threads=front_threads))
    costs = layer_costs(config)
    name = next(iter(controllers))
    for batch in (1, 3):
        inputs = preprocess_batch(config, [synthetic_sample(config, seed) for seed in range(batch)])
        with torch.inference_mode():
            logits = fast.controller_logits(controllers[name], inputs)
            reference_logits, _ = controllers[name](inputs)
            torch.testing.assert_close(logits, reference_logits, atol=1e-5, rtol=1e-4)
            masks, output = fast.select_and_forward(name, inputs, 6, costs)
            _close(model(inputs, masks), output)
            _close(model(inputs, None), fast(inputs, None))
    stages = [key[0] for key, stage in fast._onnx.items() if stage is not None]
    assert sorted(set(stages)) == ["controller", "embed", "front", "head"]
    assert fast.counters["onnx_runs"] >= 3 * 2
    # Split front: one stage per group and batch size, run at once on `front_threads` threads.
    front_stages = [key for key, stage in fast._onnx.items() if key[0] == "front" and stage is not None]
    assert len(front_stages) == 2 * len(fast.front_groups())
    assert fast.counters["parallel_fronts"] == (2 if front_threads > 1 else 0)


def test_front_groups_spread_modalities_and_keep_the_controller_in_the_last():
    model = random_bundle(preset_config("tiny"), (6,), seed=5).model.eval()  # rgb, depth, mic
    groups = {threads: FastPath(model, options=FastPathOptions(onnx=False, front_threads=threads)).front_groups()
              for threads in (1, 2, 8)}
    assert groups[1] == [(("rgb", "depth", "mic"), True)]
    assert groups[2] == [(("rgb", "mic"), False), (("depth",), True)]
    assert groups[8] == [(("rgb",), False), (("depth",), False), (("mic",), False), ((), True)]


def test_front_stays_on_one_thread_when_a_group_runs_in_pytorch():
    config = micro_config()
    bundle = random_bundle(config, (6,), seed=5)
    model = bundle.model.eval()
    controllers = {n: c.eval() for n, c in bundle.controllers.items()}
    name = next(iter(controllers))
    inputs = preprocess_batch(config, [synthetic_sample(config, 0)])
    fast = FastPath(model, controllers, FastPathOptions(onnx=True, front_threads=2))
    with torch.inference_mode():
        fast.select_and_forward(name, inputs, 6, layer_costs(config))
        assert fast.counters["parallel_fronts"] == 1
        # As when the controller group's export failed: that group runs in PyTorch, the groups in turn.
        controller_group = next(key for key in fast._onnx if key[0] == "front" and key[1] is not None)
        fast._onnx[controller_group] = None
        runs = fast.counters["onnx_runs"]
        masks, output = fast.select_and_forward(name, inputs, 6, layer_costs(config))
        _close(model(inputs, masks), output)
    assert fast.counters["parallel_fronts"] == 1
    assert fast.counters["onnx_runs"] == runs + len(fast.front_groups()) - 1 + 1  # other group(s) + head


def test_a_stage_that_cannot_export_falls_back_to_pytorch_with_a_warning():
    config = micro_config()
    bundle = random_bundle(config, (6,), seed=5)
    fast = FastPath(bundle.model.eval(), options=FastPathOptions(onnx=True))
    x = torch.randn(4, 4)

    def eigenvalues(matrix):  # no ONNX operator for a symmetric eigendecomposition
        return torch.linalg.eigvalsh(matrix @ matrix.T)

    with pytest.warns(RuntimeWarning, match="ONNX export of a fast-path stage failed"):
        result = fast._staged(("custom",), eigenvalues, [x])
    torch.testing.assert_close(result, eigenvalues(x))
    assert fast._staged(("custom",), eigenvalues, [x]) is not None  # remembered: no second warning or export
    assert fast.counters["onnx_runs"] == 0


def test_onnx_off_keeps_pytorch():
    config = micro_config()
    model = random_bundle(config, (6,), seed=5).model.eval()
    fast = FastPath(model, options=FastPathOptions(onnx=False))
    inputs = preprocess_batch(config, [synthetic_sample(config, 0)])
    with torch.inference_mode():
        _close(model(inputs, None), fast(inputs, None))
    assert not fast._onnx and fast.counters["onnx_runs"] == 0
