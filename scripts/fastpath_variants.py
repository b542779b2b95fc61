"""A/B in one process: the GPU fast path's batch-1 variants (FastPath switches), interleaved round-robin.

"per-block graphs": controller graph, embeddings graph, block graphs, head graph, every switch off;
"concurrent controller": the default — the controller on a second stream beside the embeddings and block 0s in one
graph, one graph per allocation for given masks (the full budget);
"one graph": controller → top-L → slot blocks → head in one graph (admn_core.slot_blocks), allocation graphs on.
On a CPU (float32) the variants are the lean forward with every stage in PyTorch, with the fixed stages
(controller, embeddings, head) on ONNX Runtime where timing kept them (admn_core.onnx_cpu), and the latter with the
front split over PyTorch's thread count (FastPath.front_threads, the default).

Ratios are only compared within this run. Prints a table and writes JSON. On a GPU machine (scripts/gpu_bench.sh):
  python scripts/fastpath_variants.py --preset paper --device cuda --dtype bfloat16 --repeats 40 --json ab.json
CPU: python scripts/fastpath_variants.py --preset tiny --device cpu --dtype float32 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import admn_core  # noqa: F401  (before torch: caps OpenMP's spin, see admn_core/__init__)

# isort: split
import torch

from admn_core.bench import _synchronize, random_bundle
from admn_core.preprocess import synthetic_sample
from admn_core.presets import preset_config
from admn_core.runtime import InferenceEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--budgets", type=int, nargs="+", default=[6, 8, 12, 16, 24])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = preset_config(args.preset)
    full = 12 * len(config.modalities)
    engine = InferenceEngine(random_bundle(config, [b for b in args.budgets if b < full], 0), args.device,
                             getattr(torch, args.dtype), fast=True)
    inputs = engine.preprocess([synthetic_sample(config, 0)])
    # FastPath switches per variant (all read at call time).
    threads = torch.get_num_threads()
    cpu_variants = {"pytorch stages": dict(onnx_stages=False, front_threads=1),
                    "onnx stages": dict(onnx_stages=True, front_threads=1),
                    f"onnx, front on {threads} threads": dict(onnx_stages=True, front_threads=threads)}
    gpu_variants = {
        "per-block graphs": dict(slot_graph_at_batch_1=False, allocation_graphs_at_batch_1=False,
                                 concurrent_controller=False),
        "concurrent controller": dict(slot_graph_at_batch_1=False, allocation_graphs_at_batch_1=True,
                                      concurrent_controller=True),
        "one graph": dict(slot_graph_at_batch_1=True, allocation_graphs_at_batch_1=True,
                          concurrent_controller=False),
    }
    variants = gpu_variants if engine.device.type == "cuda" else cpu_variants
    if engine.device.type == "cpu" and not engine.fast.onnx_stages:
        raise SystemExit("the CPU comparison needs onnxruntime and ADMN_FASTPATH_ONNX unset (or not 0)")
    reference_label = next(iter(variants))
    outputs = {}

    def run(budget: int, switches: dict):
        for switch, value in switches.items():
            setattr(engine.fast, switch, value)
        masks, _, output = engine.allocate_and_run(inputs, budget)
        _synchronize(engine.device)
        return masks, output

    samples = {(v, b): [] for v in variants for b in args.budgets}
    with torch.inference_mode():
        for _ in range(3):  # capture, warm up
            for budget in args.budgets:
                for label, switches in variants.items():
                    outputs[(label, budget)] = run(budget, switches)
        for _ in range(args.repeats):
            for budget in args.budgets:
                for label, switches in variants.items():
                    started = time.perf_counter()
                    run(budget, switches)
                    samples[(label, budget)].append(1e3 * (time.perf_counter() - started))
    device_name = torch.cuda.get_device_name(engine.device) if engine.device.type == "cuda" else "cpu"
    print(f"preset={args.preset} device={device_name} dtype={args.dtype} batch=1 repeats={args.repeats} "
          f"torch={torch.__version__}; p50 ms, ratio to budget {max(args.budgets)}, fps, max |output − per-block|")
    full = {v: statistics.median(samples[(v, max(args.budgets))]) for v in variants}
    rows = []
    for budget in args.budgets:
        masks = outputs[(reference_label, budget)][0]
        blocks = dict(zip(config.modality_names, masks[0].sum(-1).tolist(), strict=True))
        row = {"budget": budget, "blocks": blocks}
        cells = []
        for label in variants:
            p50 = statistics.median(samples[(label, budget)])
            reference_output, output = outputs[(reference_label, budget)][1], outputs[(label, budget)][1]
            difference = float((getattr(output, "mean", output).float()
                                - getattr(reference_output, "mean", reference_output).float()).abs().max())
            same_masks = torch.equal(outputs[(label, budget)][0], masks)
            row[label] = {"p50_ms": p50, "ratio_to_full": p50 / full[label], "fps": 1e3 / p50,
                          "max_abs_difference": difference, "same_masks": same_masks}
            cells.append(f"{label}: {p50:6.3f} {p50 / full[label]:4.2f} {1e3 / p50:5.0f} fps {difference:.0e}"
                         + ("" if same_masks else " (masks differ!)"))
        rows.append(row)
        blocks_text = " ".join(f"{k}={n}" for k, n in blocks.items())
        print(f"{budget:>4} {blocks_text:>16} | " + " | ".join(cells))
    print("counters:", engine.fast.counters)
    if engine.device.type == "cpu":
        kept = sorted({key[0] for key, stage in engine.fast._onnx.items() if stage is not None})
        print("ONNX stages kept by timing:", kept or "none")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"preset": args.preset, "device": device_name, "dtype": args.dtype, "repeats": args.repeats,
                       "torch": torch.__version__, "rows": rows, "counters": engine.fast.counters}, handle, indent=1)


if __name__ == "__main__":
    main()
