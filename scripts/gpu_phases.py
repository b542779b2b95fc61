"""Where the fast path's fixed latency goes on a GPU: each phase of a batch-1 inference captured in its own CUDA graph
and replayed alone, timed with CUDA events (GPU time of the phase plus one graph launch), then the controller's
kernels from the profiler. On a GPU machine (scripts/gpu_bench.sh); needs CUDA.
Usage: python scripts/gpu_phases.py --preset paper --dtype bfloat16 --budget 6 --json phases.json
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from admn_core.allocation import select_layers
from admn_core.bench import random_bundle
from admn_core.fastpath import lean_encoder
from admn_core.preprocess import synthetic_sample
from admn_core.presets import preset_config
from admn_core.runtime import InferenceEngine


def _graph_time_ms(function, repeats: int) -> float:
    """Median GPU time of one replay of `function` captured as a graph (warm-up on a side stream first)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        function()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        function()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--budget", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--json")
    args = parser.parse_args()
    config = preset_config(args.preset)
    engine = InferenceEngine(random_bundle(config, [args.budget], 0), "cuda", getattr(torch, args.dtype), fast=True)
    fast = engine.fast
    name = f"budget_{args.budget}"
    controller = engine.controllers[name]
    inputs = engine.preprocess([synthetic_sample(config, 0)])
    costs = engine.costs
    results = {}
    with torch.inference_mode():
        stem_tokens = fast._stem_tokens(controller, inputs)
        logits = fast.controller_logits(controller, inputs)
        embedded = fast._embed(inputs)
        first = config.modality_names[0]

        def stems_per_modality():
            return torch.cat([controller.stems[s.name](inputs[s.name].flatten(0, 1)).view(1, len(s.views), -1)
                              for s in config.modalities], dim=1)

        def encoder_and_logits():
            tokens = torch.cat([controller.cls.expand(1, -1, -1), stem_tokens], dim=1)
            e_corr = lean_encoder(controller.encoder, tokens, fast.manual_encoder_attention)[:, 0]
            return controller.layer_logits(e_corr)

        phases = {
            "empty graph (one tiny kernel)": lambda: stem_tokens.add(0),
            "controller stems, fused (block-diagonal convs)": lambda: fast._stem_tokens(controller, inputs),
            "controller stems, per modality (modules)": stems_per_modality,
            "controller encoder + layer logits": encoder_and_logits,
            "top-L selection": lambda: select_layers(logits.float(), args.budget, costs),
            "whole controller (stems fused → mask)": lambda: select_layers(
                fast.controller_logits(controller, inputs).float(), args.budget, costs),
            "patch embeddings (every modality)": lambda: fast._embed(inputs),
            f"one backbone block ({first})": lambda: fast.blocks[first][1](embedded[first]),
            "readouts + adapters + fusion + head": lambda: fast._head(embedded, 1),
        }
        for label, function in phases.items():
            results[label] = _graph_time_ms(function, args.repeats)
        torch.backends.cudnn.benchmark = True
        results["controller stems, fused, cudnn.benchmark"] = _graph_time_ms(
            lambda: fast._stem_tokens(controller, inputs), args.repeats)
        results["controller stems, per modality, cudnn.benchmark"] = _graph_time_ms(stems_per_modality, args.repeats)
        torch.backends.cudnn.benchmark = False
        # torch.compile (inductor, default mode: fused pointwise kernels, cuBLAS matmuls) of the launch-bound phases,
        # compiled by a warm-up call and then captured like the others. Not used by the fast path (yet): a figure
        # for deciding whether to. A failure is printed, not raised.
        compiled = {
            "controller encoder + layer logits, compiled": encoder_and_logits,
            "readouts + adapters + fusion + head, compiled": lambda: fast._head(embedded, 1),
        }
        for label, function in compiled.items():
            try:
                results[label] = _graph_time_ms(torch.compile(function, dynamic=False), args.repeats)
            except Exception as error:  # an experiment: report and go on
                print(f"  {label}: failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
        print(f"preset={args.preset} dtype={args.dtype} budget={args.budget} device={torch.cuda.get_device_name()} "
              f"torch={torch.__version__}: GPU ms per phase (graph replay, median of {args.repeats})")
        for label, value in results.items():
            print(f"  {value:8.4f}  {label}")
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
            for _ in range(5):
                select_layers(fast.controller_logits(controller, inputs).float(), args.budget, costs)
            torch.cuda.synchronize()
        print(profiler.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"preset": args.preset, "dtype": args.dtype, "budget": args.budget,
                       "device": torch.cuda.get_device_name(), "torch": torch.__version__, "phase_ms": results},
                      handle, indent=1)


if __name__ == "__main__":
    main()
