import pytest
import torch

from admn_core.allocation import (
    OFFICIAL_KEEP_SETS,
    BudgetError,
    check_budget,
    keep_set,
    mask_cost,
    maximum_budget,
    minimum_budget,
    naive_allocation,
    select_layers,
)
from admn_core.presets import preset_config


@pytest.mark.parametrize("budget", [3, 4, 6, 8, 12, 16, 24, 35, 36])
def test_top_l_selection_uses_exactly_the_budget_with_block_0_on(budget):
    logits = torch.randn(16, 3, 12, generator=torch.Generator().manual_seed(budget))
    negative = -logits.abs() - 1  # all-negative logits: block 0's excluded slot must still never be picked
    for scores in (logits, negative):
        for training, straight_through in ((False, True), (True, True), (True, False)):
            mask = select_layers(scores, budget, training=training, straight_through=straight_through)
            assert mask.detach().bool().sum(dim=(1, 2)).eq(budget).all()
            assert mask.detach().bool()[:, :, 0].all()


def test_inference_selection_is_top_k_of_the_raw_logits():
    logits = torch.zeros(1, 2, 12)
    logits[0, 1, 5], logits[0, 0, 9], logits[0, 0, 0] = 3.0, 2.0, 100.0  # block 0 never competes
    mask = select_layers(logits, budget=4)
    assert mask[0].nonzero().tolist() == [[0, 0], [0, 9], [1, 0], [1, 5]]


def test_unequal_costs_never_exceed_the_budget():
    costs = torch.tensor([3, 1])  # paper Table 4: a vision block costs 3 audio blocks
    generator = torch.Generator().manual_seed(0)
    for budget in range(4, 49):
        logits = torch.randn(8, 2, 12, generator=generator)
        mask = select_layers(logits, budget, costs)
        spent = mask_cost(mask, costs)
        assert (spent <= budget).all() and (spent >= budget - 2).all()  # at most a vision block's worth unspent


def test_budget_below_minimum_is_refused_not_rounded_up():
    config = preset_config("tiny")
    assert minimum_budget(config) == 3 and maximum_budget(config) == 36
    with pytest.raises(BudgetError, match="below the minimum 3"):
        check_budget(config, 2)
    with pytest.raises(BudgetError, match="integer"):
        check_budget(config, 6.5)
    assert check_budget(config, 100) == 36


def test_keep_sets_follow_the_official_table_and_every_other_elsewhere():
    for layers, kept in OFFICIAL_KEEP_SETS.items():
        assert keep_set(layers) == kept
    for layers in range(13):
        kept = keep_set(layers)
        assert len(kept) == layers and len(set(kept)) == layers
        if layers >= 2:
            assert kept[0] == 0 and kept[-1] == 11


def test_naive_allocation_splits_evenly_within_budget():
    config = preset_config("tiny")
    for budget in range(3, 37):
        mask = naive_allocation(config, budget)
        per_modality = mask.sum(-1)
        assert int(per_modality.sum()) == budget
        assert int(per_modality.max() - per_modality.min()) <= 1
        assert mask[:, 0].all()
    paper = preset_config("paper")
    assert naive_allocation(paper, 12)[0].nonzero().flatten().tolist() == list(OFFICIAL_KEEP_SETS[6])
