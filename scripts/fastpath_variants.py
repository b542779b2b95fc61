"""A/B in one process: the fast path's batch-1 configurations (FastPathOptions), interleaved round-robin.

On a CPU (float32): every stage in PyTorch; the fixed stages (front, head) on ONNX Runtime with the front as one
stage; and the default, the front split over PyTorch's thread count (FastPathOptions.front_threads). On a GPU the
one graph path (admn_core.fastpath), for its latency per budget. The script relaunches itself with OpenMP's spin
capped (admn_core.openmp_spin), as `admn bench` does.

Ratios are only compared within this run. Prints a table and writes JSON. On a GPU machine (scripts/gpu_bench.sh):
  python scripts/fastpath_variants.py --preset paper --device cuda --dtype bfloat16 --repeats 40 --json ab.json
CPU: python scripts/fastpath_variants.py --preset tiny --device cpu --dtype float32 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from admn_core.bench import _synchronize, random_bundle
from admn_core.fastpath import FastPathOptions
from admn_core.openmp_spin import relaunch_with_spin_cap
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
    relaunch_with_spin_cap([__file__, *sys.argv[1:]])
    if args.threads:
        torch.set_num_threads(args.threads)
    config = preset_config(args.preset)
    full = 12 * len(config.modalities)
    bundle = random_bundle(config, [b for b in args.budgets if b < full], 0)
    threads = torch.get_num_threads()
    if torch.device(args.device).type == "cuda":
        variants = {"graphs": FastPathOptions()}
    else:
        variants = {"pytorch stages": FastPathOptions(onnx=False, front_threads=1),
                    "onnx stages": FastPathOptions(onnx=True, front_threads=1),
                    f"onnx, front on {threads} threads": FastPathOptions(onnx=True, front_threads=threads)}
    engines = {label: InferenceEngine(bundle, args.device, getattr(torch, args.dtype), fast=options)
               for label, options in variants.items()}
    engine = next(iter(engines.values()))
    if engine.device.type == "cpu" and not engines[f"onnx, front on {threads} threads"].fast.onnx_stages:
        raise SystemExit("the CPU comparison needs onnxruntime and float32")
    inputs = engine.preprocess([synthetic_sample(config, 0)])
    reference_label = next(iter(variants))
    outputs = {}

    def run(budget: int, label: str):
        masks, _, output = engines[label].allocate_and_run(inputs, budget)
        _synchronize(engine.device)
        return masks, output

    samples = {(v, b): [] for v in variants for b in args.budgets}
    with torch.inference_mode():
        for _ in range(3):  # capture, warm up
            for budget in args.budgets:
                for label in variants:
                    outputs[(label, budget)] = run(budget, label)
        for _ in range(args.repeats):
            for budget in args.budgets:
                for label in variants:
                    started = time.perf_counter()
                    run(budget, label)
                    samples[(label, budget)].append(1e3 * (time.perf_counter() - started))
    device_name = torch.cuda.get_device_name(engine.device) if engine.device.type == "cuda" else "cpu"
    print(f"preset={args.preset} device={device_name} dtype={args.dtype} batch=1 repeats={args.repeats} "
          f"torch={torch.__version__}; p50 ms, ratio to budget {max(args.budgets)}, fps, "
          f"max |output − {reference_label}|")
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
    counters = {label: engines[label].fast.counters for label in variants}
    print("counters:", counters)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"preset": args.preset, "device": device_name, "dtype": args.dtype, "repeats": args.repeats,
                       "torch": torch.__version__, "rows": rows, "counters": counters}, handle, indent=1)


if __name__ == "__main__":
    main()
