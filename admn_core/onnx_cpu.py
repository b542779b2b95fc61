"""The CPU fast path's fixed stages as ONNX Runtime sessions (an addition of ours; not in the paper or its code).

At the tiny preset's batch 1 on a CPU the stages that run whatever the budget — the QoI controller (stems,
4-token transformer, layer MLP), the patch embeddings and the readout → fusion → head chain — are a few hundred
tiny ops, each costing PyTorch far more dispatch time than arithmetic. So they, not the blocks, set the latency
floor, and running fewer blocks barely lowers the latency. ONNX Runtime runs a whole traced graph in one call with a
fraction of that per-op cost.

`OnnxStage(function, example_inputs)` traces `function` (torch tensors in, a tensor / tuple / dataclass of tensors
out) with the TorchScript ONNX exporter into an in-memory model and runs it on ONNX Runtime's CPU provider;
calling it takes and returns torch tensors (zero-copy through numpy). The trace bakes in the example's shapes, so
a stage serves one batch size (the fast path keeps one per batch size). The outputs agree with PyTorch's within
float32 rounding (test/test_onnx_cpu.py). `onnxruntime` is optional: without it (or with
`FastPathOptions(onnx=False)`) the fast path runs every stage in PyTorch.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn


def onnx_runtime_available() -> bool:
    """Whether onnxruntime is importable."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _Traced(nn.Module):
    """Wraps a function of tensors so the exporter can trace it; outputs flattened to a tuple of tensors."""

    def __init__(self, function: Callable, flatten: Callable, modules: Sequence[nn.Module]):
        super().__init__()
        self.function, self.flatten = function, flatten
        # The modules whose parameters `function` reads: registered here, the tracer exports them as weights
        # (a parameter it met only through the closure would be an illegal constant).
        self.owners = nn.ModuleList(modules)

    def forward(self, *tensors):
        return self.flatten(self.function(*tensors))


def _structure(output) -> tuple[Callable, Callable]:
    """(flatten, rebuild) for a tensor, a tuple/list of tensors or a dataclass of tensors."""
    if isinstance(output, torch.Tensor):
        return (lambda value: (value,)), (lambda tensors: tensors[0])
    if dataclasses.is_dataclass(output):
        names = [f.name for f in dataclasses.fields(output)]
        kind = type(output)
        return ((lambda value: tuple(getattr(value, n) for n in names)),
                (lambda tensors: kind(**dict(zip(names, tensors)))))
    if isinstance(output, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in output):
        return (lambda value: tuple(value)), (lambda tensors: tuple(tensors))
    raise TypeError(f"cannot export an output of type {type(output).__name__}")


class OnnxStage:
    """`function(*example_inputs)` exported once and run on ONNX Runtime (CPU, float32, the example's shapes)."""

    def __init__(self, function: Callable, example_inputs: Sequence[torch.Tensor], modules: Sequence[nn.Module] = (),
                 threads: int | None = None):
        """modules: every module whose parameters `function` reads."""
        import onnxruntime as ort

        if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in example_inputs):
            raise ValueError("ONNX stages take float32 CPU tensors")
        self.function = function
        self.shapes = [tuple(t.shape) for t in example_inputs]
        with torch.inference_mode():
            example_output = function(*example_inputs)
        flatten, self._rebuild = _structure(example_output)
        names = [f"input_{i}" for i in range(len(example_inputs))]
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notices
            torch.onnx.export(_Traced(function, flatten, modules), tuple(example_inputs), buffer, input_names=names,
                              opset_version=17, dynamo=False, do_constant_folding=True)
        options = ort.SessionOptions()
        # One thread by default: these stages are too small to split, and a second ORT thread has to be woken each
        # run and competes with PyTorch's OpenMP team, which runs the blocks in between; spinning ORT threads beside
        # PyTorch's would take the cores the blocks need.
        options.intra_op_num_threads = threads or 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        self.input_names = names

    def __call__(self, *tensors: torch.Tensor):
        if [tuple(t.shape) for t in tensors] != self.shapes:
            raise ValueError(f"this ONNX stage was traced for shapes {self.shapes}, "
                             f"got {[tuple(t.shape) for t in tensors]}")
        feed = {name: t.detach().contiguous().numpy() for name, t in zip(self.input_names, tensors)}
        return self._rebuild([torch.from_numpy(array) for array in self.session.run(None, feed)])
