"""Per-budget FLOPs and latency benchmark (batch 1), all budgets measured in one run so ratios are fair.

For each budget the engine runs a per-budget controller (random weights unless a bundle is given), so the
measured path is exactly the deployed one: controller → top-L selection → only the active blocks.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from admn_core.bundle import Bundle, ControllerInfo
from admn_core.config import ModelConfig
from admn_core.cost import count_flops, model_flops
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


def random_bundle(config: ModelConfig, budgets, seed: int = 0) -> Bundle:
    """A bundle with random weights and one controller per budget (for benchmarks, demos and node tests)."""
    torch.manual_seed(seed)
    model = ADMNModel(config)
    controllers = {f"budget_{b}": QoIController(config) for b in budgets}
    infos = {f"budget_{b}": ControllerInfo(f"budget_{b}", b) for b in budgets}
    return Bundle(config, model, controllers, infos)


def benchmark_budgets(config: ModelConfig, budgets=DEFAULT_BUDGETS, repeats: int = 20, warmup: int = 3,
                      device: str = "cpu", reference_budget: int = 24, seed: int = 0,
                      dtype: torch.dtype = torch.float32) -> dict:
    engine = InferenceEngine(random_bundle(config, [b for b in budgets if b < 12 * len(config.modalities)], seed),
                             device, dtype)
    inputs = engine.preprocess([synthetic_sample(config, seed)])

    def run(budget: int):
        masks, _ = engine.allocate(inputs, budget)
        output = engine.model(inputs, masks)
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)
        return output, masks

    samples: dict[int, list[float]] = {budget: [] for budget in budgets}
    with torch.inference_mode():
        masks = {budget: run(budget)[1][0].cpu() for budget in budgets}
        counted = {budget: count_flops(run, budget) for budget in budgets}
        for _ in range(warmup):
            for budget in budgets:
                run(budget)
        # Round-robin over budgets so drifting machine load affects every budget alike (ratios stay fair).
        for _ in range(repeats):
            for budget in budgets:
                started = time.perf_counter()
                run(budget)
                samples[budget].append(1e3 * (time.perf_counter() - started))
    rows = []
    for budget in budgets:
        with_controller = bool(engine.controller_for(budget)) and budget < engine.max_budget
        analytic = model_flops(config, masks[budget], include_controller=with_controller).total
        blocks = dict(zip(config.modality_names, masks[budget].sum(-1).tolist(), strict=True))
        rows.append(BudgetRow(budget, blocks, analytic, counted[budget], statistics.median(samples[budget]),
                              statistics.quantiles(samples[budget], n=10)[-1]))
    reference = next((r for r in rows if r.budget == reference_budget), rows[-1])
    for row in rows:
        row.latency_ratio_to_reference = row.latency_ms_p50 / reference.latency_ms_p50
        row.flops_ratio_to_reference = row.flops_analytic / reference.flops_analytic
    return {
        "preset": config.name,
        "device": _device_name(engine.device),
        "dtype": str(dtype).removeprefix("torch."),
        "machine": f"{platform.machine()} {platform.processor() or ''} threads={torch.get_num_threads()}".strip(),
        "torch": torch.__version__,
        "reference_budget": reference.budget,
        "rows": [asdict(r) for r in rows],
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def format_table(result: dict) -> str:
    reference = result["reference_budget"]
    lines = [f"preset={result['preset']} device={result['device']} dtype={result['dtype']} "
             f"({result['machine']}, torch {result['torch']})",
             f"{'budget':>6} {'blocks per modality':<28} {'GFLOPs':>9} {'counted':>9} {'p50 ms':>8} {'p90 ms':>8} "
             f"{'lat/' + str(reference):>8} {'flops/' + str(reference):>9}"]
    for row in result["rows"]:
        blocks = " ".join(f"{k}={v}" for k, v in row["blocks_per_modality"].items())
        lines.append(f"{row['budget']:>6} {blocks:<28} {row['flops_analytic'] / 1e9:>9.3f} "
                     f"{row['flops_counted'] / 1e9:>9.3f} {row['latency_ms_p50']:>8.2f} {row['latency_ms_p90']:>8.2f} "
                     f"{row['latency_ratio_to_reference']:>8.2f} {row['flops_ratio_to_reference']:>9.2f}")
    return "\n".join(lines)


def to_json(results: list[dict]) -> str:
    return json.dumps(results, indent=2)
