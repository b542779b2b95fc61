"""Budget invariants as hypothesis properties, measured on what actually RUNS (forward hooks on every backbone block).

For random budget sequences and random (also degenerate: black, saturated, silent) inputs, single samples and mixed
batches, with per-budget controllers, a universal controller, no controller (naive) and unequal layer costs:

* executed compute (block calls counted by hooks, per view row, weighted by the modality's layer cost) equals the cost
  of the published masks and never exceeds the budget, for every sample of a batch;
* block 0 of every modality is always on; below the minimum nothing runs at all;
* the allocation uses exactly the budget whenever it is feasible: full at >= max, a per-budget controller trained for
  the request exactly, the universal controller exactly at every budget, naive fills to the budget (equal costs:
  exactly; unequal costs: nothing that still fits is left out); a per-budget controller between trained budgets uses
  its own trained budget (the documented "largest trained budget <= request").
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from admn_core.allocation import layer_costs, mask_cost
from admn_core.bench import random_bundle
from admn_core.bundle import Bundle, ControllerInfo, build_controller
from admn_core.models.task_model import ADMNModel
from admn_core.preprocess import synthetic_sample
from admn_core.runtime import InferenceEngine

from model_fixtures import micro_config

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


class BlockCounter:
    """Forward hooks on every block of every backbone: rows processed per (modality, block)."""

    def __init__(self, engine: InferenceEngine):
        self.engine = engine
        self.rows: dict[str, np.ndarray] = {}
        for spec in engine.config.modalities:
            self.rows[spec.name] = np.zeros(spec.depth, dtype=np.int64)
            for index, block in enumerate(engine.model.backbones[spec.name].blocks):
                block.register_forward_hook(self._hook(spec.name, index))

    def _hook(self, modality: str, index: int):
        def hook(module, inputs, output):
            self.rows[modality][index] += inputs[0].shape[0]
        return hook

    def reset(self) -> None:
        for counts in self.rows.values():
            counts[:] = 0

    def executed_cost(self) -> int:
        """Cost units executed, per sample (each view of a sample runs its modality's blocks once)."""
        total = 0
        for spec in self.engine.config.modalities:
            rows = int(self.rows[spec.name].sum())
            assert rows % len(spec.views) == 0, "every view of a sample must run the same blocks"
            total += rows // len(spec.views) * spec.layer_cost
        return total

    def per_block_samples(self, modality: str) -> np.ndarray:
        return self.rows[modality] // len(self.engine.config.modality(modality).views)


def _config(unequal_costs: bool):
    config = micro_config()
    if not unequal_costs:
        return config
    costs = {"rgb": 2, "depth": 1, "mic": 3}
    return dataclasses.replace(config, modalities=tuple(dataclasses.replace(s, layer_cost=costs[s.name])
                                                         for s in config.modalities))


def _engine(kind: str, unequal_costs: bool = False) -> tuple[InferenceEngine, BlockCounter]:
    config = _config(unequal_costs)
    if kind == "per_budget":
        bundle = random_bundle(config, budgets=[5, 8, 20] if not unequal_costs else [12, 30], seed=3)
    elif kind == "universal":
        torch.manual_seed(3)
        info = ControllerInfo("universal", None, kind="universal")
        bundle = Bundle(config, ADMNModel(config), {"universal": build_controller(config, info)}, {"universal": info})
    else:
        torch.manual_seed(3)
        bundle = Bundle(config, ADMNModel(config))
    engine = InferenceEngine(bundle)
    return engine, BlockCounter(engine)


ENGINES = {}


def engine_for(kind: str, unequal_costs: bool = False):
    key = (kind, unequal_costs)
    if key not in ENGINES:
        ENGINES[key] = _engine(kind, unequal_costs)
    return ENGINES[key]


@st.composite
def samples(draw, config, max_batch=2):
    """A batch of 1..max_batch samples: random, or degenerate (all zero / saturated / silent)."""
    batch = draw(st.integers(1, max_batch))
    out = []
    for _ in range(batch):
        sample = synthetic_sample(config, draw(st.integers(0, 2**16)))
        kind = draw(st.sampled_from(["random", "random", "zero", "saturated"]))
        if kind != "random":
            for key, array in sample.items():
                if kind == "zero":
                    sample[key] = np.zeros_like(array)
                elif array.dtype == np.float32:
                    sample[key] = np.ones_like(array)  # full-scale audio
                else:
                    sample[key] = np.full_like(array, np.iinfo(array.dtype).max)
        out.append(sample)
    return out


def _run_and_check(engine: InferenceEngine, counter: BlockCounter, batch, budget: int):
    counter.reset()
    results = engine.infer_batch(batch, budget)
    if budget < engine.min_budget:
        assert all(not r.ran and "below the minimum" in r.skipped_reason for r in results)
        assert counter.executed_cost() == 0, "something ran below the minimum budget"
        return None
    masks = torch.stack([torch.from_numpy(r.allocation.mask) for r in results])
    costs = mask_cost(masks, layer_costs(engine.config)).tolist()
    # What ran is exactly what the masks say, block by block, and no sample exceeds the budget.
    for index, spec in enumerate(engine.config.modalities):
        np.testing.assert_array_equal(counter.per_block_samples(spec.name), masks[:, index].sum(0).numpy())
    assert counter.executed_cost() == sum(costs)
    for result, cost in zip(results, costs, strict=True):
        assert result.allocation.budget_used == cost <= budget
        assert result.allocation.mask[:, 0].all(), "block 0 of every modality is always on"
    return results


BUDGETS = st.lists(st.integers(-5, 45), min_size=1, max_size=3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is fastest and steady on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@SETTINGS
@given(data=st.data(), budgets=BUDGETS)
def test_per_budget_controllers_never_exceed_and_are_exact_where_trained(data, budgets):
    engine, counter = engine_for("per_budget")
    trained = engine.trained_budgets
    for budget in [*budgets, data.draw(st.sampled_from(trained))]:
        batch = data.draw(samples(engine.config))
        results = _run_and_check(engine, counter, batch, budget)
        if results is None:
            continue
        used = {r.allocation.budget_used for r in results}
        if budget >= engine.max_budget:
            assert used == {engine.max_budget} and results[0].allocation.source == "full"
        elif budget in trained:
            assert used == {budget}, "a controller trained for exactly this budget must use all of it"
        elif engine.controller_for(budget) is not None:
            assert used == {max(b for b in trained if b <= budget)}
        else:
            assert used == {budget} and results[0].allocation.source == "naive"


@SETTINGS
@given(data=st.data(), budgets=BUDGETS)
def test_the_universal_controller_uses_exactly_every_feasible_budget(data, budgets):
    engine, counter = engine_for("universal")
    for budget in budgets:
        results = _run_and_check(engine, counter, data.draw(samples(engine.config)), budget)
        if results is not None:
            assert {r.allocation.budget_used for r in results} == {min(budget, engine.max_budget)}


@SETTINGS
@given(data=st.data(), budgets=BUDGETS)
def test_naive_allocation_fills_to_the_budget(data, budgets):
    engine, counter = engine_for("naive")
    for budget in budgets:
        results = _run_and_check(engine, counter, data.draw(samples(engine.config)), budget)
        if results is not None:
            assert {r.allocation.budget_used for r in results} == {min(budget, engine.max_budget)}
            assert results[0].allocation.source == ("full" if budget >= engine.max_budget else "naive")


@SETTINGS
@given(data=st.data(), kind=st.sampled_from(["per_budget", "naive"]), budgets=st.lists(st.integers(-2, 80),
                                                                                        min_size=1, max_size=3))
def test_unequal_layer_costs_never_exceed_and_leave_nothing_that_fits(data, kind, budgets):
    engine, counter = engine_for(kind, unequal_costs=True)
    assert engine.min_budget == 6 and engine.max_budget == 72
    costs = layer_costs(engine.config).tolist()
    for budget in budgets:
        results = _run_and_check(engine, counter, data.draw(samples(engine.config)), budget)
        if results is None or results[0].allocation.source.startswith("controller:"):
            continue
        for result in results:
            spare = min(budget, engine.max_budget) - result.allocation.budget_used
            room = [cost for cost, row in zip(costs, result.allocation.mask, strict=True) if not row.all()]
            assert all(cost > spare for cost in room), "naive left out a block that still fits"


def test_mixed_batches_run_each_sample_with_its_own_allocation():
    """Different inputs in one batch get different masks; grouping runs each group's blocks only."""
    engine, counter = engine_for("per_budget")
    config = engine.config
    batch = [synthetic_sample(config, seed) for seed in range(6)]
    batch[1] = {k: np.zeros_like(v) for k, v in batch[1].items()}
    budget = 8
    results = _run_and_check(engine, counter, batch, budget)
    masks = {r.allocation.mask.tobytes() for r in results}
    assert len(masks) >= 2, "random weights + different inputs should give a mixed batch"
    singles = []
    for sample in batch:
        singles.append(_run_and_check(engine, counter, [sample], budget)[0])
    for batched, single in zip(results, singles, strict=True):
        np.testing.assert_array_equal(batched.allocation.mask, single.allocation.mask)
        np.testing.assert_allclose(batched.position_m, single.position_m, rtol=1e-4, atol=1e-5)


@SETTINGS
@given(data=st.data())
def test_any_mixed_batch_of_masks_executes_exactly_its_masks(data):
    """The masked forward itself (whatever chose the masks): per sample its own blocks, nothing more, nothing less."""
    engine, counter = engine_for("naive")
    config = engine.config
    batch = data.draw(st.integers(1, 4))
    depth, modalities = config.blocks_per_backbone, len(config.modalities)
    masks = torch.zeros(batch, modalities, depth, dtype=torch.bool)
    masks[:, :, 0] = True
    for b in range(batch):
        for m in range(modalities):
            extra = data.draw(st.sets(st.integers(1, depth - 1), max_size=depth - 1))
            masks[b, m, sorted(extra)] = True
    inputs = engine.preprocess([synthetic_sample(config, data.draw(st.integers(0, 99))) for _ in range(batch)])
    counter.reset()
    with torch.inference_mode():
        engine.model(inputs, masks)
    for index, spec in enumerate(config.modalities):
        np.testing.assert_array_equal(counter.per_block_samples(spec.name), masks[:, index].sum(0).numpy())
    assert counter.executed_cost() == int(mask_cost(masks, layer_costs(config)).sum())
