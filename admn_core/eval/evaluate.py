"""Evaluate a pipeline run: the paper-style table, FLOPs and CPU latency per budget, the figure, the LayerDrop
ablation (paper Table 8's shape) and allocation examples. Called by the pipeline; `admn evaluate --run DIR`
re-runs it from the artifacts on disk (every stage is reused, only evaluation runs).
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from admn_core.allocation import keep_set, masks_from_keep_sets, naive_allocation
from admn_core.cost import controller_flops, model_flops
from admn_core.eval.data import tensor_set
from admn_core.eval.metrics import controller_rule, evaluate_rule, fixed_rule
from admn_core.eval.plots import allocation_examples, line_plot
from admn_core.eval.report import condition_markdown, layerdrop_markdown, results_markdown
from admn_core.train.baselines import fixed_masks, upper_bound_mask

logger = logging.getLogger(__name__)

ABLATION_LAYERS = (12, 8, 6, 4, 3)  # per backbone, official keep sets (paper Table 8 removes blocks the same way)


def _mns_rule(gate, masks: dict):
    names = list(masks)
    stacked = torch.stack([masks[n] for n in names])  # [E, M, depth]

    def choose(inputs):
        return gate(inputs).argmax(-1)
    return names, stacked, choose


@torch.no_grad()
def evaluate_mns(gate, experts: dict, masks: dict, data, batch_size: int = 64) -> dict:
    """Argmax gate → only the chosen expert's prediction counts (all experts are run here for simplicity; the FLOPs
    and latency reported count the chosen expert only)."""
    names, stacked, choose = _mns_rule(gate, masks)
    errors, chosen = [], []
    unit_cm = next(iter(experts.values())).config.head.position_unit_m * 100
    for _, inputs, target in data.batches(batch_size):
        pick = choose(inputs)
        batch = target.shape[0]
        means = torch.stack([experts[n](inputs, masks[n].expand(batch, -1, -1)).mean for n in names], 1)
        mean = means[torch.arange(batch), pick]
        errors.append(torch.linalg.vector_norm(mean - target, dim=-1) * unit_cm)
        chosen.append(pick)
    errors_t, chosen_t = torch.cat(errors), torch.cat(chosen)
    share = {n: (chosen_t == i).float().mean().item() for i, n in enumerate(names)}
    return {"error_cm": errors_t.mean().item(), "errors_cm": errors_t.tolist(), "expert_share": share,
            "chosen": chosen_t, "names": names, "stacked": stacked}


@torch.no_grad()
def _latency_ms(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(1e3 * (time.perf_counter() - started))
    return statistics.median(times)


def evaluate_run(pipeline, model, model_nold, controllers: dict, baselines: dict, test) -> dict:
    settings, config = pipeline.settings, pipeline.config
    out = pipeline.path("eval")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_grad_enabled(False)
    try:
        data = tensor_set(config, test, corruption=pipeline.targets)
        budgets = tuple(settings.budgets)
        table: dict[str, dict[int, float]] = {}
        detail: dict[str, dict] = {}
        masks_seen: dict[str, torch.Tensor] = {}
        conditions = [_condition(t, config.modality_names) for t in data.raw_targets]

        def record(method: str, budget: int, result: dict, within_budget: bool = True):
            table.setdefault(method, {})[budget] = result["error_cm"]
            detail.setdefault(method, {})[str(budget)] = {k: v for k, v in result.items()
                                                          if k not in ("errors_cm", "masks", "chosen", "stacked")}
            detail[method][str(budget)]["error_by_condition"] = _error_by_condition(result["errors_cm"], conditions)
            if within_budget and "max_cost" in result and result["max_cost"] > budget:
                raise AssertionError(f"{method} exceeded budget {budget}: {result['max_cost']}")

        full = evaluate_rule(model, data, fixed_rule(None))
        for budget in budgets:
            record("Upper Bound", budget, full, within_budget=False)  # every block: the reference, not a method
            for name, mask in fixed_masks(config, budget).items():
                label = "Naive Alloc." if name == "naive" else name.replace("_only", " only")
                record(label, budget, evaluate_rule(model, data, fixed_rule(mask)))
        per_budget = {info.budget: (n, m) for n, (info, m) in controllers.items()
                      if info.variant == "corruption_supervised" and info.kind == "per_budget"}
        for budget in budgets:
            if budget in per_budget:
                name, module = per_budget[budget]
                result = evaluate_rule(model, data, controller_rule(config, module, budget), keep_masks=True)
                masks_seen[f"ADMN {budget}"] = result["masks"]
                record("ADMN", budget, result)
        universal = next(((n, m) for n, (info, m) in controllers.items() if info.kind == "universal"), None)
        if universal is not None:
            for budget in sorted(set(budgets) | set(settings.universal_extra_budgets)):
                record("ADMN universal", budget, evaluate_rule(model, data, controller_rule(config, universal[1],
                                                                                             budget)))
        for variant, label in (("autoencoder", "ADMN_AE"), ("plain_st", "ADMN plain ST")):
            for _name, (info, module) in controllers.items():
                if info.variant == variant and info.budget is not None:
                    record(label, info.budget, evaluate_rule(model, data, controller_rule(config, module,
                                                                                          info.budget)))
        for budget, scratch in baselines.get("scratch", {}).items():
            if budget in budgets:
                record("Naive Scratch", budget, evaluate_rule(scratch, data,
                                                              fixed_rule(naive_allocation(config, budget))))
        mns_flops = {}
        for budget, (gate, experts, masks) in baselines.get("mns", {}).items():
            result = evaluate_mns(gate, experts, masks, data)
            flops = [model_flops(config, result["stacked"][i], include_controller=False).total
                     for i in result["chosen"].tolist()]
            mns_flops[budget] = float(np.mean(flops)) + controller_flops(config)
            record("MNS", budget, {**result, "max_cost": budget})

        # FLOPs and latency per budget (batch 1, CPU)
        costs = {}
        sample_inputs = {k: v[:1] for k, v in data.inputs.items()}
        repeats = max(1, settings.latency_samples)
        threads = torch.get_num_threads()
        for budget in budgets:
            naive_mask = naive_allocation(config, budget)
            row = {"naive_gflops": model_flops(config, naive_mask, include_controller=False).total / 1e9,
                   "naive_latency_ms": _latency_ms(lambda m=naive_mask: model(sample_inputs, m[None]), repeats)}
            if budget in per_budget:
                name, module = per_budget[budget]
                corr = 0 if module.corruption_head is None else module.corruption_head[-1].out_features
                rule = controller_rule(config, module, budget)
                mask = rule(sample_inputs)[0]
                row["admn_gflops"] = model_flops(config, mask, include_controller=True,
                                                 corruption_outputs=corr).total / 1e9
                row["admn_latency_ms"] = _latency_ms(lambda r=rule: model(sample_inputs, r(sample_inputs)), repeats)
            if budget in mns_flops:
                row["mns_gflops"] = mns_flops[budget] / 1e9
            costs[budget] = row
        full_mask = upper_bound_mask(config)
        upper = {"gflops": model_flops(config, full_mask, include_controller=False).total / 1e9,
                 "latency_ms": _latency_ms(lambda: model(sample_inputs, full_mask[None]), repeats)}

        # LayerDrop ablation (Table 8 shape): the same block removal for every modality, with and without LayerDrop
        ablation = {}
        for layers in ABLATION_LAYERS:
            mask = masks_from_keep_sets(config, [keep_set(layers, config.blocks_per_backbone)] * len(config.modalities))
            row = {"with_layerdrop": evaluate_rule(model, data, fixed_rule(mask))["error_cm"]}
            if model_nold is not None:
                row["without_layerdrop"] = evaluate_rule(model_nold, data, fixed_rule(mask))["error_cm"]
            ablation[layers] = row

        # Figure and allocation examples
        plotted = {k: v for k, v in table.items()}
        line_plot(plotted, out / "error_vs_budget.png",
                  title=f"{settings.preset} / {settings.corruption} / seed {settings.seed}")
        allocation_examples(_allocation_rows(config, test, masks_seen, data, budgets), out / "allocations.png",
                            config.modality_names, config.blocks_per_backbone)
        allocation_summary = _allocation_summary(config, data, masks_seen, pipeline.targets)

        results = {"preset": settings.preset, "corruption": settings.corruption, "seed": settings.seed,
                   "test_samples": len(data), "train_samples": settings.data.train,
                   "machine": _machine(threads), "budgets": list(budgets),
                   "table_cm": {m: {str(b): v for b, v in row.items()} for m, row in table.items()},
                   "detail": detail, "costs": {str(b): v for b, v in costs.items()}, "upper_bound": upper,
                   "layerdrop_ablation": {str(k): v for k, v in ablation.items()},
                   "allocation_by_condition": allocation_summary,
                   "timings_s": pipeline.timings}
        (out / "results.json").write_text(json.dumps(results, indent=1))
        (out / "results.md").write_text(results_markdown(results) + "\n" + condition_markdown(results) + "\n"
                                        + layerdrop_markdown(results))
        logger.info((out / "results.md").read_text())
        return results
    finally:
        torch.set_grad_enabled(True)


def _machine(threads: int) -> str:
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}; {os.cpu_count()} CPUs visible, torch threads {threads}; torch {torch.__version__}"


def _condition(raw: dict, names) -> str:
    labels = raw.get("corruption", {})
    parts = []
    for name in names:
        label = labels.get(name)
        if isinstance(label, dict) and label.get("severity", 0):
            parts.append(f"{name}:{label.get('category', '?')}{label.get('severity')}")
    return ", ".join(parts) or "clean"


def _error_by_condition(errors_cm: list[float], conditions: list[str]) -> dict[str, float]:
    """Mean error (cm) per corruption condition, e.g. {"clean": …, "rgb:lowlight2": …}."""
    groups: dict[str, list[float]] = {}
    for error, condition in zip(errors_cm, conditions, strict=True):
        groups.setdefault(condition, []).append(error)
    return {condition: float(np.mean(values)) for condition, values in sorted(groups.items())}


def _allocation_summary(config, data, masks_seen: dict, targets) -> dict:
    """Mean blocks per modality chosen by ADMN, per corruption condition and budget."""
    summary = {}
    conditions = [_condition(t, config.modality_names) for t in data.raw_targets]
    for key, masks in masks_seen.items():
        per = {}
        for condition in sorted(set(conditions)):
            rows = [i for i, c in enumerate(conditions) if c == condition]
            blocks = masks[rows].sum(-1).float().mean(0)
            per[condition] = {n: round(blocks[i].item(), 2) for i, n in enumerate(config.modality_names)}
        summary[key] = per
    return summary


def _allocation_rows(config, test, masks_seen: dict, data, budgets) -> list[dict]:
    if not masks_seen:
        return []
    budget_key = next((f"ADMN {b}" for b in budgets if f"ADMN {b}" in masks_seen), None)
    if budget_key is None:
        return []
    masks = masks_seen[budget_key]
    conditions = [_condition(t, config.modality_names) for t in data.raw_targets]
    chosen, seen = [], set()
    for index, condition in enumerate(conditions):
        if condition not in seen:
            seen.add(condition)
            chosen.append(index)
        if len(chosen) >= 6:
            break
    rows = []
    view = config.modalities[0].views[0]
    for index in chosen:
        sample, _ = test[index]
        images = []
        for spec in config.modalities:
            if spec.kind == "audio":
                array = data.inputs[spec.name][index, 0, 0].numpy()
                images.append((f"{spec.name} (log-mel)", array))
            else:
                images.append((f"{spec.name} {view}", np.asarray(sample[(view, spec.name)])))
        rows.append({"images": images, "mask": masks[index].numpy(),
                     "caption": f"{budget_key} | sample {index} | {conditions[index]}"})
    return rows
