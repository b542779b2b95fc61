"""The one inference engine: Sample(s) + budget → allocation → masked backbones → fusion → head.

Used identically by the ROS node, bag replay and offline evaluation. Controller choice obeys the budget:
- budget ≥ the maximum → every block (the Upper Bound; no controller needed);
- a per-budget controller trained for exactly the request → that one;
- a universal (budget-conditioned) controller → exactly the request;
- per-budget controllers → the largest trained budget ≤ the request;
- no controller at or below the request → Naive Allocation at the request;
- below the always-on minimum → nothing runs; the Result says why (never rounded up).
`allocation="naive"` ignores the bundle's controllers: the paper's Naive Allocation baseline on the same Stage-1
model, e.g. evaluated beside ADMN on the same frames and budgets.
Samples in one batch with different allocations are grouped inside each backbone so every group runs
only its own blocks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from admn_core.allocation import (
    BudgetError,
    check_budget,
    layer_costs,
    mask_cost,
    maximum_budget,
    minimum_budget,
    naive_allocation,
    select_layers,
)
from admn_core.bundle import Bundle, ControllerInfo, load_bundle
from admn_core.config import ModelConfig
from admn_core.cost import model_flops
from admn_core.fastpath import FastPath, FastPathOptions
from admn_core.preprocess import Sample, preprocess_batch

logger = logging.getLogger(__name__)
ALLOCATIONS = ("admn", "naive")

@dataclass
class Allocation:
    modalities: tuple[str, ...]
    mask: np.ndarray  # bool [M, depth]
    budget_requested: int
    budget_used: int  # cost of the mask, ≤ budget_requested
    source: str  # "full", "controller:<name>", "naive"

    def active_blocks(self) -> dict[str, list[int]]:
        return {name: np.flatnonzero(row).tolist() for name, row in zip(self.modalities, self.mask, strict=True)}


@dataclass
class Result:
    allocation: Allocation | None
    skipped_reason: str | None = None
    position_m: np.ndarray | None = None  # [2] world frame, metres
    covariance_m2: np.ndarray | None = None  # [2, 2]
    class_probabilities: np.ndarray | None = None  # [classes]
    flops: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def ran(self) -> bool:
        return self.allocation is not None


class InferenceEngine:
    def __init__(self, bundle: Bundle, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 fast: bool | FastPathOptions = False, allocation: str = "admn"):
        """`fast` serves through `admn_core.fastpath.FastPath` (CUDA graphs on a GPU, a lean forward on the CPU):
        `True` with the default `FastPathOptions`, or the options themselves. The eager model stays the reference
        and is what `fast=False` (the default) runs. `allocation`: "admn" (the bundle's controllers) or "naive"
        (every budget split evenly, the controllers unused)."""
        if allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
        self.config: ModelConfig = bundle.config
        self.device = torch.device(device)
        self.dtype = dtype
        self.allocation = allocation
        self.model = bundle.model.to(self.device, dtype).eval()
        kept = bundle.controllers if allocation == "admn" else {}
        self.controllers = {n: c.to(self.device, dtype).eval() for n, c in kept.items()}
        self.controller_infos: dict[str, ControllerInfo] = {n: bundle.controller_infos[n] for n in kept}
        self.costs = layer_costs(self.config)
        self.min_budget = minimum_budget(self.config)
        self.max_budget = maximum_budget(self.config)
        self.fast_options = fast if isinstance(fast, FastPathOptions) else (FastPathOptions() if fast else None)
        self.fast = self._new_fast_path()

    @classmethod
    def from_bundle(cls, path, device="cpu", dtype=torch.float32, expected_sha256: str | None = None,
                    fast: bool | FastPathOptions = False, allocation: str = "admn"):
        return cls(load_bundle(path, "cpu", expected_sha256), device, dtype, fast=fast, allocation=allocation)

    def _new_fast_path(self) -> FastPath | None:
        if self.fast_options is None:
            return None
        multi_frame = [spec.name for spec in self.config.modalities if spec.frames > 1]
        if multi_frame:
            # The fast path's stages take one image per view; several frames per view run on the eager model.
            logger.info(f"fast path off: {', '.join(multi_frame)} take several frames per view; serving the eager "
                        "model")
            self.fast_options = None
            return None
        return FastPath(self.model, self.controllers, self.fast_options)

    def move_to(self, device: str | torch.device) -> None:
        """Serve from `device` from now on (e.g. the CPU after the GPU ran out of memory): the model and the
        controllers move there, in the same dtype, and a fast path is rebuilt for it with the same options (its
        CUDA graphs and ONNX stages belong to the old device)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        for controller in self.controllers.values():
            controller.to(self.device)
        self.fast = None  # the old device's graphs go before the new path is built
        self.fast = self._new_fast_path()

    @property
    def trained_budgets(self) -> list[int]:
        return sorted(info.budget for info in self.controller_infos.values() if info.budget is not None)

    @property
    def universal_controller(self) -> str | None:
        return next((n for n, info in self.controller_infos.items() if info.kind == "universal"), None)

    def controller_for(self, budget: int) -> str | None:
        """The per-budget controller with the largest trained budget ≤ `budget`, or None."""
        fitting = [(info.budget, name) for name, info in self.controller_infos.items()
                   if info.budget is not None and info.budget <= budget]
        return max(fitting)[1] if fitting else None

    def preprocess(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        batch = preprocess_batch(self.config, samples)
        return {k: v.to(self.device, self.dtype, non_blocking=True) for k, v in batch.items()}

    def _allocation_rule(self, budget: int) -> tuple[str, str | None]:
        """The module docstring's rule for a checked budget → (kind, controller name): ("full", None),
        ("universal", name), ("naive", None) or ("per_budget", name)."""
        if budget >= self.max_budget:
            return "full", None
        name = self.controller_for(budget)
        universal = self.universal_controller
        if universal is not None and (name is None or self.controller_infos[name].budget != budget):
            return "universal", universal  # serves exactly the request; a per-budget one trained for it still wins
        if name is None:
            return "naive", None
        return "per_budget", name

    @torch.inference_mode()
    def allocate(self, inputs: dict[str, torch.Tensor], budget: int) -> tuple[torch.Tensor, str]:
        """→ (bool masks [B, M, depth], source). Raises BudgetError below the minimum."""
        budget = check_budget(self.config, budget)
        batch = next(iter(inputs.values())).shape[0]
        kind, name = self._allocation_rule(budget)
        if kind == "full":
            depth = self.config.blocks_per_backbone
            return torch.ones(batch, len(self.costs), depth, dtype=torch.bool, device=self.device), "full"
        if kind == "universal":
            logits, _ = self.controllers[name](inputs, budget)
            return select_layers(logits.float(), budget, self.costs), f"controller:{name}"
        if kind == "naive":
            mask = naive_allocation(self.config, budget).to(self.device)
            return mask.expand(batch, -1, -1), "naive"
        controller_budget = self.controller_infos[name].budget
        if self.fast is not None:
            return self.fast.select(name, inputs, controller_budget, self.costs), f"controller:{name}"
        logits, _ = self.controllers[name](inputs)
        return select_layers(logits.float(), controller_budget, self.costs), f"controller:{name}"

    @torch.inference_mode()
    def allocate_and_run(self, inputs: dict[str, torch.Tensor], budget: int) -> tuple[torch.Tensor, str, object]:
        """`allocate` then `run_model` → (masks, source, output). On the fast path a per-budget controller runs
        overlapped with the patch embeddings and every block 0 (`FastPath.select_and_forward`); same results."""
        if self.fast is not None:
            kind, name = self._allocation_rule(check_budget(self.config, budget))
            if kind == "per_budget":
                controller_budget = self.controller_infos[name].budget
                masks, output = self.fast.select_and_forward(name, inputs, controller_budget, self.costs)
                return masks, f"controller:{name}", output
        masks, source = self.allocate(inputs, budget)
        return masks, source, self.run_model(inputs, masks)

    @torch.inference_mode()
    def infer(self, sample: Sample, budget: int) -> Result:
        return self.infer_batch([sample], budget)[0]

    @torch.inference_mode()
    def infer_batch(self, samples: Sequence[Sample], budget: int) -> list[Result]:
        started = time.perf_counter()
        try:
            check_budget(self.config, budget)
        except BudgetError as exc:
            return [Result(allocation=None, skipped_reason=str(exc)) for _ in samples]
        inputs = self.preprocess(samples)
        preprocessed = time.perf_counter()
        if self.fast is not None:  # controller and model overlap: one "model" figure that includes the controller
            masks, source, output = self.allocate_and_run(inputs, budget)
            allocated = preprocessed
        else:
            masks, source = self.allocate(inputs, budget)
            allocated = time.perf_counter()
            output = self.run_model(inputs, masks)
        results = self._results(output, masks, budget, source)
        finished = time.perf_counter()
        timings = {"preprocess": 1e3 * (preprocessed - started), "controller": 1e3 * (allocated - preprocessed),
                   "model": 1e3 * (finished - allocated), "total": 1e3 * (finished - started)}
        for result in results:
            result.timings_ms = dict(timings)
        return results

    @torch.inference_mode()
    def run_model(self, inputs: dict[str, torch.Tensor], masks: torch.Tensor):
        """The masked model forward on preprocessed inputs: the fast path when enabled, else the eager model."""
        return self.fast(inputs, masks) if self.fast is not None else self.model(inputs, masks)

    def _results(self, output, masks: torch.Tensor, budget: int, source: str) -> list[Result]:
        masks_cpu = masks.cpu()
        used = mask_cost(masks_cpu, self.costs).tolist()
        results = []
        for index, mask in enumerate(masks_cpu):
            allocation = Allocation(self.config.modality_names, mask.numpy().copy(), int(budget), int(used[index]),
                                    source)
            with_controller = source.startswith("controller:")
            flops = model_flops(self.config, mask, include_controller=with_controller).total
            result = Result(allocation=allocation, flops=flops)
            if self.config.head.task == "localization":
                unit = self.config.head.position_unit_m
                result.position_m = output.mean[index].float().cpu().numpy() * unit
                result.covariance_m2 = output.covariance[index].float().cpu().numpy() * unit ** 2
            else:
                result.class_probabilities = torch.softmax(output[index].float(), -1).cpu().numpy()
            results.append(result)
        return results
