"""A/B in one process: the fast path at batch 1 as one CUDA graph vs the per-block graphs.

"one graph": controller → top-L → slot blocks → head in one graph (admn_core.slot_blocks) where a controller runs,
one graph per allocation where it does not (the full budget); "per-block graphs": both off.

Every budget and both variants interleaved round-robin (ratios are only compared within this run). Prints a table and
writes JSON. For a lent GPU (scripts/gpu_bench.sh); runs on a CPU too, where both variants are the same lean forward.
Usage: python scripts/one_graph_ab.py --preset paper --device cuda --dtype bfloat16 --repeats 40 --json ab.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from admn_core.bench import random_bundle
from admn_core.preprocess import synthetic_sample
from admn_core.presets import preset_config
from admn_core.runtime import InferenceEngine


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--budgets", type=int, nargs="+", default=[6, 8, 12, 16, 24])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--json")
    args = parser.parse_args()
    config = preset_config(args.preset)
    full = 12 * len(config.modalities)
    engine = InferenceEngine(random_bundle(config, [b for b in args.budgets if b < full], 0), args.device,
                             getattr(torch, args.dtype), fast=True)
    inputs = engine.preprocess([synthetic_sample(config, 0)])
    variants = {"one graph": True, "per-block graphs": False}
    outputs = {}

    def run(budget: int, one_graph: bool):
        engine.fast.slot_graph_at_batch_1 = engine.fast.allocation_graphs_at_batch_1 = one_graph
        masks, _, output = engine.allocate_and_run(inputs, budget)
        _synchronize(engine.device)
        return masks, output

    samples = {(v, b): [] for v in variants for b in args.budgets}
    with torch.inference_mode():
        for _ in range(3):  # capture, warm up
            for budget in args.budgets:
                for label, flag in variants.items():
                    outputs[(label, budget)] = run(budget, flag)
        for _ in range(args.repeats):
            for budget in args.budgets:
                for label, flag in variants.items():
                    started = time.perf_counter()
                    run(budget, flag)
                    samples[(label, budget)].append(1e3 * (time.perf_counter() - started))
    device_name = torch.cuda.get_device_name(engine.device) if engine.device.type == "cuda" else "cpu"
    print(f"preset={args.preset} device={device_name} dtype={args.dtype} batch=1 repeats={args.repeats} "
          f"torch={torch.__version__}")
    print(f"{'budget':>6} {'blocks':>16} " + " ".join(f"{v + ' p50 ms':>22} {'/24':>5}" for v in variants)
          + f" {'speedup':>8} {'fps (one graph)':>16} {'|A-B|':>8}")
    rows = []
    reference = {v: statistics.median(samples[(v, max(args.budgets))]) for v in variants}
    for budget in args.budgets:
        p50 = {v: statistics.median(samples[(v, budget)]) for v in variants}
        masks = outputs[("one graph", budget)][0][0].cpu()
        blocks = dict(zip(config.modality_names, masks.sum(-1).tolist(), strict=True))
        mean_a = outputs[("one graph", budget)][1]
        mean_b = outputs[("per-block graphs", budget)][1]
        a, b = (getattr(mean_a, "mean", mean_a), getattr(mean_b, "mean", mean_b))
        difference = float((a.float() - b.float()).abs().max())
        same_masks = torch.equal(outputs[("one graph", budget)][0], outputs[("per-block graphs", budget)][0])
        row = {"budget": budget, "blocks": blocks, "same_masks": same_masks, "max_abs_difference": difference,
               **{f"{v} p50 ms": p50[v] for v in variants},
               **{f"{v} ratio to {max(args.budgets)}": p50[v] / reference[v] for v in variants}}
        rows.append(row)
        blocks_text = " ".join(f"{k}={n}" for k, n in blocks.items())
        print(f"{budget:>6} {blocks_text:>16} "
              + " ".join(f"{p50[v]:>22.3f} {p50[v] / reference[v]:>5.2f}" for v in variants)
              + f" {p50['per-block graphs'] / p50['one graph']:>8.2f} {1e3 / p50['one graph']:>16.0f}"
              + f" {difference:>8.1e}" + ("" if same_masks else "  (masks differ!)"))
    # Where the one-graph latency goes at each budget with a controller: the graph's replay alone (GPU time of the
    # whole inference, plus one launch) vs the engine call around it (host work: checks, dispatch, output copies).
    if engine.device.type == "cuda":
        state = engine.fast._graph_state.get(1)
        for budget in args.budgets:
            name = engine.controller_for(budget) if budget < engine.max_budget else None
            entry = state.graphs.get(("one graph", name, engine.controller_infos[name].budget)) if name else None
            if entry is None:
                continue
            graph = entry[0]
            replays = []
            with torch.inference_mode():
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    graph.replay()
                    torch.cuda.synchronize(engine.device)
                    replays.append(1e3 * (time.perf_counter() - started))
            replay = statistics.median(replays)
            total = statistics.median(samples[("one graph", budget)])
            print(f"budget {budget}: one-graph replay alone {replay:.3f} ms of {total:.3f} ms "
                  f"(host {total - replay:.3f})")
            rows[args.budgets.index(budget)]["one graph replay alone ms"] = replay
    print("counters:", engine.fast.counters)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"preset": args.preset, "device": device_name, "dtype": args.dtype, "repeats": args.repeats,
                       "torch": torch.__version__, "rows": rows, "counters": engine.fast.counters}, handle, indent=1)


if __name__ == "__main__":
    main()
