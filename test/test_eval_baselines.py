"""Baselines obey budgets; evaluation tables, JSON and PNGs are written with every method and budget."""

import json
from dataclasses import replace

import pytest
import torch

from admn_core.allocation import layer_costs, mask_cost, naive_allocation
from admn_core.eval.data import tensor_set
from admn_core.eval.metrics import evaluate_rule, fixed_rule
from admn_core.eval.plots import allocation_examples, line_plot
from admn_core.eval.report import layerdrop_markdown, results_markdown
from admn_core.models.task_model import ADMNModel
from admn_core.presets import preset_config
from admn_core.train.baselines import (
    ScratchConfig,
    fixed_masks,
    mns_expert_masks,
    single_modality_mask,
    train_fixed_mask_model,
)
from admn_core.train.toy import SquareDataset, toy_config


@pytest.mark.parametrize("budget", [3, 4, 6, 8, 12, 16, 24, 35])
def test_fixed_baselines_obey_budget(budget):
    config = preset_config("tiny")
    costs = layer_costs(config)
    for name, mask in {**fixed_masks(config, budget), **mns_expert_masks(config, budget)}.items():
        assert int(mask_cost(mask[None], costs)) <= budget, name
        assert mask[:, 0].all(), name  # block 0 always on


def test_single_modality_gets_the_rest():
    config = preset_config("tiny")
    mask = single_modality_mask(config, 8, "depth")
    assert mask.sum(-1).tolist() == [1, 6, 1]


def test_scratch_model_and_rule_evaluation():
    config = toy_config()
    data = tensor_set(config, SquareDataset(config, length=8))
    mask = naive_allocation(config, 6)
    model, _ = train_fixed_mask_model(config, data, mask, ScratchConfig(epochs=1, batch_size=4))
    result = evaluate_rule(model, data, fixed_rule(mask))
    assert result["max_cost"] <= 6 and result["error_cm"] > 0
    assert len(result["errors_cm"]) == 8


def test_scratch_clean_warmup_trains_on_the_clean_twin_only():
    config = toy_config()
    clean = tensor_set(config, SquareDataset(config, length=8))
    generator = torch.Generator().manual_seed(1)
    corrupted = type(clean)({k: torch.randn(v.shape, generator=generator) * 5 for k, v in clean.inputs.items()},
                            clean.targets, clean.raw_targets)
    mask = naive_allocation(config, 6)
    warm = ScratchConfig(epochs=1, batch_size=4, clean_warmup_epochs=1, warmup_cosine_fraction=0.5)
    warmed, history = train_fixed_mask_model(config, corrupted, mask, warm, clean=clean)
    assert history[0]["clean"] == 1
    plain = replace(warm, clean_warmup_epochs=0, full_backbone_drop=0.0)
    on_clean, _ = train_fixed_mask_model(config, clean, mask, plain)
    on_corrupted, _ = train_fixed_mask_model(config, corrupted, mask, plain)
    same = [torch.equal(a, b) for a, b in zip(warmed.parameters(), on_clean.parameters(), strict=True)]
    differs = [torch.equal(a, b) for a, b in zip(warmed.parameters(), on_corrupted.parameters(), strict=True)]
    assert all(same) and not all(differs)
    with pytest.raises(ValueError, match="clean twin"):
        train_fixed_mask_model(config, corrupted, mask, warm)


def test_error_by_condition_groups_samples_and_is_reported():
    from admn_core.eval.evaluate import _error_by_condition
    from admn_core.eval.report import condition_markdown

    by = _error_by_condition([10.0, 20.0, 30.0, 50.0], ["clean", "rgb:lowlight2", "clean", "rgb:lowlight2"])
    assert by == {"clean": 20.0, "rgb:lowlight2": 35.0}
    detail = {"ADMN": {"6": {"error_by_condition": by}},
              "Naive Alloc.": {"6": {"error_by_condition": {"clean": 25.0, "rgb:lowlight2": 80.0}}}}
    text = condition_markdown({"detail": detail}, budgets=(6, 8))
    assert "L=6" in text and "L=8" not in text
    assert "| Naive Alloc. | 25.0 | 80.0 |" in text and "| ADMN | 20.0 | 35.0 |" in text
    assert text.index("| Naive Alloc.") < text.index("| ADMN |")  # the paper's method order


def test_report_and_plots_contain_every_method(tmp_path):
    budgets = [6, 8, 12, 16]
    methods = ["Upper Bound", "Naive Alloc.", "ADMN", "MNS", "Naive Scratch"]
    table = {m: {str(b): 10.0 + i + b / 10 for b in budgets} for i, m in enumerate(methods)}
    results = {"preset": "tiny", "corruption": "gaussian", "seed": 100, "test_samples": 3, "budgets": budgets,
               "table_cm": table, "costs": {str(b): {"naive_gflops": 0.1} for b in budgets},
               "upper_bound": {"gflops": 1.0, "latency_ms": 2.0}, "machine": "test",
               "layerdrop_ablation": {"12": {"with_layerdrop": 1.0, "without_layerdrop": 2.0}}}
    text = results_markdown(results) + layerdrop_markdown(results)
    for method in methods:
        assert f"| {method} |" in text
    for budget in budgets:
        assert f"L={budget}" in text
    (tmp_path / "r.json").write_text(json.dumps(results))
    png = line_plot({m: {int(b): v for b, v in row.items()} for m, row in table.items()}, tmp_path / "f.png")
    assert png.stat().st_size > 1000
    rows = [{"images": [("rgb", torch.rand(8, 8).numpy())], "mask": torch.ones(2, 12, dtype=torch.bool).numpy(),
             "caption": "x"}]
    assert allocation_examples(rows, tmp_path / "a.png", ("rgb", "depth"), 12).stat().st_size > 500


def test_upper_bound_rule_runs_every_block():
    config = toy_config()
    data = tensor_set(config, SquareDataset(config, length=4))
    result = evaluate_rule(ADMNModel(config), data, fixed_rule(None))
    assert result["cost"] == 24
