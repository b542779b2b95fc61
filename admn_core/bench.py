"""Per-budget benchmark: FLOPs, batch-1 latency (eager and fast path), grouped-batching throughput, memory.

All budgets are measured in one run, interleaved round-robin, so ratios to the reference (full) budget are fair on
a noisy machine. For each budget the engine runs a per-budget controller (random weights unless a bundle is
given), so the measured path is the deployed one: controller → top-L selection → only the active blocks.

* latency: batch 1, `engine.allocate_and_run` (controller → top-L → masked model; preprocessing excluded), p50 / p90,
  for the eager engine (the reference) and, with `fast=True`, for the fast path (`admn_core.fastpath`, where the
  controller overlaps the embeddings and every block 0) in `fast_dtype`; the controller alone is timed too, and a
  fit splits the latency into a fixed part and a per-block part.
* throughput: `batch` samples whose allocations differ (`distinct_allocations` different masks at the budget,
  assigned round-robin) run as one allocation-grouped batch vs one at a time, controller included in both.
* memory: CUDA max allocated per budget on a GPU; the process's resident set (current and peak) on a CPU.
Figures, not pass/fail: benchmarks on shared machines are noisy.
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from admn_core.allocation import select_layers
from admn_core.bundle import Bundle, ControllerInfo
from admn_core.config import ModelConfig
from admn_core.cost import count_flops, model_flops
from admn_core.fastpath import FastPathOptions
from admn_core.models.controller import QoIController
from admn_core.models.task_model import ADMNModel
from admn_core.preprocess import synthetic_sample
from admn_core.runtime import InferenceEngine

DEFAULT_BUDGETS = (6, 8, 12, 16, 24)


@dataclass
class BudgetRow:
    budget: int
    blocks_per_modality: dict[str, int]
    flops_analytic: int
    flops_counted: int
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ratio_to_reference: float = float("nan")
    flops_ratio_to_reference: float = float("nan")
    controller_flops: int = 0
    fast_latency_ms_p50: float | None = None
    fast_latency_ms_p90: float | None = None
    fast_latency_ratio_to_reference: float | None = None
    fast_max_abs_error: float | None = None  # fast path vs eager on this budget's batch-1 output
    controller_ms_p50: float | None = None  # `allocate` alone (controller → top-L), eager engine; 0 at full budget
    fast_controller_ms_p50: float | None = None
    grouped_samples_per_s: float | None = None
    loop_samples_per_s: float | None = None
    grouped_speedup: float | None = None
    peak_memory_mb: dict[str, float] = field(default_factory=dict)


def random_bundle(config: ModelConfig, budgets, seed: int = 0) -> Bundle:
    """A bundle with random weights and one controller per budget (for benchmarks, demos and node tests)."""
    torch.manual_seed(seed)
    model = ADMNModel(config)
    controllers = {f"budget_{b}": QoIController(config) for b in budgets}
    infos = {f"budget_{b}": ControllerInfo(f"budget_{b}", b) for b in budgets}
    return Bundle(config, model, controllers, infos)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _percentiles(samples: list[float]) -> tuple[float, float]:
    if len(samples) < 2:
        return samples[0], samples[0]
    return statistics.median(samples), statistics.quantiles(samples, n=10)[-1]


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize() / 2 ** 20
    except OSError:
        return float("nan")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def mixed_masks(engine: InferenceEngine, budget: int, batch: int, distinct: int, seed: int = 0) -> torch.Tensor:
    """`batch` bool masks [batch, M, depth] at `budget`: `distinct` different valid allocations, round-robin."""
    generator = torch.Generator().manual_seed(seed)
    depth = engine.config.blocks_per_backbone
    if budget >= engine.max_budget:
        return torch.ones(batch, len(engine.costs), depth, dtype=torch.bool, device=engine.device)
    logits = torch.rand(distinct, len(engine.costs), depth, generator=generator)
    allocations = select_layers(logits, budget, engine.costs)
    return allocations[torch.arange(batch) % distinct].to(engine.device)


def _controller_name(engine: InferenceEngine, budget: int) -> str | None:
    return engine.controller_for(budget) if budget < engine.max_budget else None


def grouped_throughput(engine: InferenceEngine, inputs: dict[str, torch.Tensor], masks: torch.Tensor,
                       budget: int, repeats: int = 3) -> tuple[float, float]:
    """(grouped samples/s, per-sample loop samples/s) for a batch with the given (mixed) allocations.

    Both include the controller (run on the batch, or on each sample) and impose `masks` on the model, so the
    allocations are mixed whatever the random controller would pick."""
    batch = masks.shape[0]
    name = _controller_name(engine, budget)
    singles = [{k: v[i:i + 1] for k, v in inputs.items()} for i in range(batch)]

    def grouped():
        if name is not None:
            engine.allocate(inputs, budget)
        engine.run_model(inputs, masks)

    def loop():
        for index, single in enumerate(singles):
            if name is not None:
                engine.allocate(single, budget)
            engine.run_model(single, masks[index:index + 1])

    timings = {grouped: [], loop: []}
    with torch.inference_mode():
        for function in (grouped, loop):  # warm-up (and graph capture on the fast path)
            function()
        _synchronize(engine.device)
        for _ in range(repeats):
            for function in (grouped, loop):
                started = time.perf_counter()
                function()
                _synchronize(engine.device)
                timings[function].append(time.perf_counter() - started)
    return batch / statistics.median(timings[grouped]), batch / statistics.median(timings[loop])


def benchmark_budgets(config: ModelConfig, budgets=DEFAULT_BUDGETS, repeats: int = 20, warmup: int = 3,
                      device: str = "cpu", reference_budget: int = 24, seed: int = 0,
                      dtype: torch.dtype = torch.float32, fast: bool | FastPathOptions = False,
                      fast_dtype: torch.dtype | None = None,
                      throughput_batch: int = 0, distinct_allocations: int = 4, throughput_repeats: int = 3,
                      throughput_path: str = "auto") -> dict:
    """Benchmark every budget in one run. `fast` (True: the default options) adds the fast path's latency (in
    `fast_dtype`, default `dtype`); `throughput_batch > 0` adds grouped-vs-loop throughput at that batch size (on
    the fast path when `throughput_path` is "fast" or "auto" with `fast`, else on the eager engine)."""
    budgets = list(budgets)
    trained = [b for b in budgets if b < 12 * len(config.modalities)]
    engine = InferenceEngine(random_bundle(config, trained, seed), device, dtype)
    fast_engine = None
    if fast:
        fast_dtype = fast_dtype or dtype
        fast_engine = InferenceEngine(random_bundle(config, trained, seed), device, fast_dtype, fast=fast)
    inputs = engine.preprocess([synthetic_sample(config, seed)])
    fast_inputs = fast_engine.preprocess([synthetic_sample(config, seed)]) if fast_engine else None

    def run(budget: int, which: InferenceEngine = engine, tensors=None):
        tensors = inputs if tensors is None else tensors
        masks, _, output = which.allocate_and_run(tensors, budget)  # the fast path overlaps controller and model
        _synchronize(which.device)
        return output, masks

    paths = [("eager", engine, inputs)] + ([("fast", fast_engine, fast_inputs)] if fast_engine else [])
    samples: dict[tuple[str, int], list[float]] = {(p, b): [] for p, _, _ in paths for b in budgets}
    memory: dict[int, dict[str, float]] = {b: {} for b in budgets}
    errors: dict[int, float] = {}
    with torch.inference_mode():
        masks = {budget: run(budget)[1][0].cpu() for budget in budgets}
        counted = {budget: count_flops(run, budget) for budget in budgets}
        for budget in budgets:  # peak memory of one run per budget and path; fast-vs-eager difference
            for label, which, tensors in paths:
                if which.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(which.device)
                output, _ = run(budget, which, tensors)
                if which.device.type == "cuda":
                    memory[budget][label] = torch.cuda.max_memory_allocated(which.device) / 2 ** 20
                else:
                    memory[budget][label] = _rss_mb()
                if label == "eager":
                    reference_output = output
                else:
                    errors[budget] = _max_abs_difference(reference_output, output)
        for _ in range(warmup):
            for budget in budgets:
                for _, which, tensors in paths:
                    run(budget, which, tensors)
        # Round-robin over budgets (and paths) so drifting machine load affects every figure alike.
        for _ in range(repeats):
            for budget in budgets:
                for label, which, tensors in paths:
                    started = time.perf_counter()
                    run(budget, which, tensors)
                    samples[(label, budget)].append(1e3 * (time.perf_counter() - started))
        # The controller's share of the latency: `allocate` alone, same round-robin.
        allocate_samples: dict[tuple[str, int], list[float]] = {key: [] for key in samples}
        for _ in range(max(3, repeats // 2)):
            for budget in budgets:
                for label, which, tensors in paths:
                    started = time.perf_counter()
                    which.allocate(tensors, budget)
                    _synchronize(which.device)
                    allocate_samples[(label, budget)].append(1e3 * (time.perf_counter() - started))
    throughput: dict[int, tuple[float, float]] = {}
    if throughput_batch:
        use_fast = fast_engine is not None and throughput_path in ("auto", "fast")
        which = fast_engine if use_fast else engine
        batch_inputs = which.preprocess([synthetic_sample(config, seed + i) for i in range(throughput_batch)])
        for budget in budgets:
            mixed = mixed_masks(which, budget, throughput_batch, distinct_allocations, seed)
            throughput[budget] = grouped_throughput(which, batch_inputs, mixed, budget, throughput_repeats)
    rows = []
    for budget in budgets:
        with_controller = _controller_name(engine, budget) is not None
        breakdown = model_flops(config, masks[budget], include_controller=with_controller)
        blocks = dict(zip(config.modality_names, masks[budget].sum(-1).tolist(), strict=True))
        p50, p90 = _percentiles(samples[("eager", budget)])
        row = BudgetRow(budget, blocks, breakdown.total, counted[budget], p50, p90,
                        controller_flops=breakdown.controller, peak_memory_mb=memory[budget],
                        controller_ms_p50=statistics.median(allocate_samples[("eager", budget)]))
        if fast_engine is not None:
            row.fast_latency_ms_p50, row.fast_latency_ms_p90 = _percentiles(samples[("fast", budget)])
            row.fast_max_abs_error = errors.get(budget)
            row.fast_controller_ms_p50 = statistics.median(allocate_samples[("fast", budget)])
        if budget in throughput:
            row.grouped_samples_per_s, row.loop_samples_per_s = throughput[budget]
            row.grouped_speedup = row.grouped_samples_per_s / row.loop_samples_per_s
        rows.append(row)
    reference = next((r for r in rows if r.budget == reference_budget), rows[-1])
    for row in rows:
        row.latency_ratio_to_reference = row.latency_ms_p50 / reference.latency_ms_p50
        row.flops_ratio_to_reference = row.flops_analytic / reference.flops_analytic
        if row.fast_latency_ms_p50 is not None:
            row.fast_latency_ratio_to_reference = row.fast_latency_ms_p50 / reference.fast_latency_ms_p50
    low = min(rows, key=lambda r: r.budget)
    return {
        "preset": config.name,
        "device": _device_name(engine.device),
        "dtype": str(dtype).removeprefix("torch."),
        "fast_dtype": str(fast_dtype).removeprefix("torch.") if fast_engine else None,
        "machine": _machine(),
        "torch": torch.__version__,
        "reference_budget": reference.budget,
        "repeats": repeats,
        "throughput_batch": throughput_batch,
        "distinct_allocations": distinct_allocations if throughput_batch else None,
        "throughput_path": ("fast" if fast_engine is not None and throughput_path in ("auto", "fast") else "eager")
        if throughput_batch else None,
        "controller_flop_share": {"budget": low.budget, "share": low.controller_flops / low.flops_analytic},
        "peak_rss_mb": _peak_rss_mb(),
        "rows": [asdict(r) for r in rows],
        "latency_model": {label: latency_model(rows, label) for label, _, _ in paths},
    }


def latency_model(rows: list[BudgetRow], path: str = "eager") -> dict[str, float]:
    """Least-squares fit of the p50 latency over the budgets that run a controller as fixed + per_block · (active
    blocks): the fixed part (controller — overlapped on the fast path —, embeddings, readouts, fusion, head, host
    work) is what keeps latency(6)/latency(24) above the FLOP ratio. Also the controller alone (`allocate`)."""
    prefix = "fast_" if path == "fast" else ""
    with_controller = [r for r in rows if r.controller_flops]
    points = [(sum(r.blocks_per_modality.values()), getattr(r, f"{prefix}latency_ms_p50")) for r in with_controller]
    if len({blocks for blocks, _ in points}) < 2:
        return {}
    mean_blocks = statistics.fmean(b for b, _ in points)
    mean_ms = statistics.fmean(m for _, m in points)
    per_block = (sum((b - mean_blocks) * (m - mean_ms) for b, m in points)
                 / sum((b - mean_blocks) ** 2 for b, _ in points))
    return {"fixed_ms": mean_ms - per_block * mean_blocks, "per_block_ms": per_block,
            "controller_ms": statistics.fmean(getattr(r, f"{prefix}controller_ms_p50") for r in with_controller)}


def _max_abs_difference(reference, output) -> float:
    if isinstance(reference, torch.Tensor):
        return float((reference.float() - output.float()).abs().max())
    return max(float((getattr(reference, k).float() - getattr(output, k).float()).abs().max())
               for k in vars(reference))


def _machine() -> str:
    processor = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            processor = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
                             processor)
    except OSError:
        pass
    return f"{platform.machine()} {processor} threads={torch.get_num_threads()}".strip()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def _format(value, spec: str, width: int) -> str:
    return f"{value:>{width}{spec}}" if value is not None else f"{'-':>{width}}"


def format_table(result: dict) -> str:
    reference = result["reference_budget"]
    fast = result.get("fast_dtype")
    lines = [f"preset={result['preset']} device={result['device']} dtype={result['dtype']}"
             + (f" fast_dtype={fast}" if fast else "")
             + f" ({result['machine']}, torch {result['torch']})"]
    header = (f"{'budget':>6} {'blocks per modality':<26} {'GFLOPs':>8} {'counted':>8} {'p50 ms':>8} {'p90 ms':>8} "
              f"{'lat/' + str(reference):>7} {'flops/' + str(reference):>8}")
    if fast:
        header += f" {'fast p50':>8} {'fast p90':>8} {'fast/' + str(reference):>7} {'|fast-eager|':>12}"
    header += f" {'grouped/s':>9} {'loop/s':>8} {'speedup':>7} {'mem MB':>8}"
    lines.append(header)
    for row in result["rows"]:
        blocks = " ".join(f"{k}={v}" for k, v in row["blocks_per_modality"].items())
        line = (f"{row['budget']:>6} {blocks:<26} {row['flops_analytic'] / 1e9:>8.3f} "
                f"{row['flops_counted'] / 1e9:>8.3f} {row['latency_ms_p50']:>8.2f} {row['latency_ms_p90']:>8.2f} "
                f"{row['latency_ratio_to_reference']:>7.2f} {row['flops_ratio_to_reference']:>8.2f}")
        if fast:
            line += (f" {_format(row.get('fast_latency_ms_p50'), '.2f', 8)} "
                     f"{_format(row.get('fast_latency_ms_p90'), '.2f', 8)} "
                     f"{_format(row.get('fast_latency_ratio_to_reference'), '.2f', 7)} "
                     f"{_format(row.get('fast_max_abs_error'), '.1e', 12)}")
        memory = row.get("peak_memory_mb") or {}
        line += (f" {_format(row.get('grouped_samples_per_s'), '.1f', 9)} "
                 f"{_format(row.get('loop_samples_per_s'), '.1f', 8)}"
                 f" {_format(row.get('grouped_speedup'), '.2f', 7)} "
                 f"{_format(max(memory.values()) if memory else None, '.0f', 8)}")
        lines.append(line)
    for path, fit in (result.get("latency_model") or {}).items():
        if fit:
            lines.append(f"{path}: latency ≈ {fit['fixed_ms']:.3f} ms fixed + {fit['per_block_ms']:.3f} ms per block "
                         f"(budgets with a controller); the controller alone {fit['controller_ms']:.3f} ms")
    share = result.get("controller_flop_share")
    if share:
        lines.append(f"controller share of FLOPs at budget {share['budget']}: {100 * share['share']:.2f} %")
    if result.get("throughput_batch"):
        lines.append(f"throughput: {result['throughput_batch']} samples, {result['distinct_allocations']} distinct "
                     f"allocations, {result['throughput_path']} path; grouped batch vs per-sample loop")
    return "\n".join(lines)


def to_json(results: list[dict]) -> str:
    return json.dumps(results, indent=2)
