"""The analytic cost model against torch.utils.flop_counter, at several budgets."""

import pytest
import torch

from admn_core.allocation import naive_allocation, select_layers
from admn_core.cost import count_flops, model_flops
from admn_core.models.controller import QoIController
from admn_core.models.task_model import ADMNModel
from admn_core.preprocess import preprocess_batch, synthetic_sample
from admn_core.presets import preset_config

from model_fixtures import micro_config


@pytest.mark.parametrize("config_name", ["micro", "micro_grid", "tiny"])
def test_analytic_flops_within_2_percent_of_the_counter(config_name):
    configs = {"micro": micro_config, "tiny": lambda: preset_config("tiny"),
               "micro_grid": lambda: micro_config(readout="grid", fusion_pooling="flatten")}
    config = configs[config_name]()
    torch.manual_seed(0)
    model, controller = ADMNModel(config).eval(), QoIController(config).eval()
    inputs = preprocess_batch(config, [synthetic_sample(config)])
    for budget in (3, 6, 8, 12, 16, 24, 36):
        with torch.no_grad():
            logits, _ = controller(inputs)
            mask = select_layers(logits, budget)
            counted = count_flops(lambda mask=mask: (controller(inputs), model(inputs, mask)))
        analytic = model_flops(config, mask[0], include_controller=True).total
        assert abs(analytic - counted) / counted <= 0.02, (budget, analytic, counted)


def test_flops_fall_with_the_budget_and_paper_shape_matches_the_issue_figures():
    config = preset_config("paper")
    full = model_flops(config, naive_allocation(config, 24), include_controller=False).total
    six = model_flops(config, naive_allocation(config, 6), include_controller=False).total
    # The paper preset's totals without the controller: 210.8 GFLOP at the full budget, 53.7 at budget 6.
    assert abs(full / 1e9 - 210.8) < 1.0
    assert abs(six / 1e9 - 53.7) < 1.0
