"""Evaluate a classification pipeline run (a dataset such as AVE or MM-Fi): accuracy per allocation method and
budget — Upper Bound (every block), Naive Alloc., each single modality, ADMN per budget and universal — with
every allocation checked against its budget, accuracy per corruption condition and ADMN's blocks per condition.
Writes <run>/eval/results.json and results.md; `admn evaluate --run DIR` re-runs it from the artifacts.
"""

from __future__ import annotations

import json
import logging

import torch

from admn_core.allocation import layer_costs, mask_cost
from admn_core.eval.data import tensor_set
from admn_core.eval.evaluate import _allocation_summary, _condition, _error_by_condition
from admn_core.eval.metrics import controller_rule, fixed_rule
from admn_core.train.baselines import fixed_masks

logger = logging.getLogger(__name__)


@torch.no_grad()
def accuracy_under_rule(model, data, rule, batch_size: int = 64, keep_masks: bool = False) -> dict:
    """→ {"accuracy", "correct" (per sample 0/1), "cost" (mean), "max_cost", "blocks" {modality: mean}}."""
    model.cpu().eval()
    costs = layer_costs(model.config)
    correct, used, all_masks = [], [], []
    for _, inputs, target in data.batches(batch_size):
        masks = rule(inputs)
        logits = model(inputs, masks)
        correct.append((logits.argmax(-1) == target).float())
        if masks is None:
            masks = torch.ones(target.shape[0], len(model.config.modalities), model.config.blocks_per_backbone,
                               dtype=torch.bool)
        masks = masks.bool().cpu()
        used.append(mask_cost(masks, costs).float())
        all_masks.append(masks)
    correct_t, used_t, masks_t = torch.cat(correct), torch.cat(used), torch.cat(all_masks)
    blocks = masks_t.sum(-1).float().mean(0)
    result = {"accuracy": correct_t.mean().item(), "correct": correct_t.tolist(), "cost": used_t.mean().item(),
              "max_cost": used_t.max().item(),
              "blocks": {n: blocks[i].item() for i, n in enumerate(model.config.modality_names)}}
    if keep_masks:
        result["masks"] = masks_t
    return result


def evaluate_classification_run(pipeline, model, controllers: dict, test) -> dict:
    settings, config = pipeline.settings, pipeline.config
    out = pipeline.path("eval")
    out.mkdir(parents=True, exist_ok=True)
    data = tensor_set(config, test, corruption=pipeline.targets)
    conditions = [_condition(t, config.modality_names) for t in data.raw_targets]
    budgets = tuple(settings.budgets)
    table: dict[str, dict[int, float]] = {}
    detail: dict[str, dict] = {}
    masks_seen: dict[str, torch.Tensor] = {}

    def record(method: str, budget: int, result: dict, within_budget: bool = True) -> None:
        if within_budget and result["max_cost"] > budget:
            raise AssertionError(f"{method} exceeded budget {budget}: cost {result['max_cost']}")
        table.setdefault(method, {})[budget] = result["accuracy"]
        detail.setdefault(method, {})[str(budget)] = {
            "accuracy": result["accuracy"], "cost": result["cost"], "max_cost": result["max_cost"],
            "blocks": result["blocks"], "accuracy_by_condition": _error_by_condition(result["correct"], conditions)}

    full = accuracy_under_rule(model, data, fixed_rule(None))
    per_budget = {info.budget: module for info, module in controllers.values()
                  if info.variant == "corruption_supervised" and info.kind == "per_budget"}
    universal = next((module for info, module in controllers.values() if info.kind == "universal"), None)
    for budget in budgets:
        record("Upper Bound", budget, full, within_budget=False)  # every block: the reference, not a method
        for name, mask in fixed_masks(config, budget).items():
            label = "Naive Alloc." if name == "naive" else name.replace("_only", " only")
            record(label, budget, accuracy_under_rule(model, data, fixed_rule(mask)))
        if budget in per_budget:
            result = accuracy_under_rule(model, data, controller_rule(config, per_budget[budget], budget),
                                         keep_masks=True)
            masks_seen[f"ADMN {budget}"] = result["masks"]
            record("ADMN", budget, result)
        if universal is not None:
            record("ADMN universal", budget, accuracy_under_rule(model, data,
                                                                 controller_rule(config, universal, budget)))
    results = {"preset": settings.preset, "dataset": settings.data.source, "corruption": settings.corruption,
               "seed": settings.seed, "test_samples": len(data), "classes": list(pipeline.classes),
               "budgets": list(budgets), "layer_costs": layer_costs(config).tolist(),
               "table_accuracy": {m: {str(b): v for b, v in row.items()} for m, row in table.items()},
               "detail": detail,
               "allocation_by_condition": _allocation_summary(config, data, masks_seen, pipeline.targets),
               "timings_s": pipeline.timings}
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(accuracy_markdown(results))
    logger.info((out / "results.md").read_text())
    return results


def accuracy_markdown(results: dict) -> str:
    budgets = results["budgets"]
    lines = [f"# {results['preset']} on {results['dataset']} / {results['corruption']} / seed {results['seed']}: "
             f"accuracy (%) on {results['test_samples']} test samples, {len(results['classes'])} classes", "",
             f"Budgets in cost units (block costs {results['layer_costs']} per modality).", "",
             "| Method | " + " | ".join(f"L={b}" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for method, row in results["table_accuracy"].items():
        cells = [f"{100 * row[str(b)]:.1f}" if str(b) in row else "–" for b in budgets]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", "ADMN blocks per modality by condition:", ""]
    for key, per in results["allocation_by_condition"].items():
        lines.append(f"- {key}: " + "; ".join(f"{c}: {blocks}" for c, blocks in per.items()))
    return "\n".join(lines) + "\n"
