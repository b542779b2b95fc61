"""Resumable training state: tensors in safetensors, everything else as JSON in its metadata — never pickle.

One file, `<run_dir>/checkpoint.safetensors`, written atomically (temporary name, then rename) by rank 0:
- tensors: `module.<name>.<state-dict key>` for every module; `optimizer.<param index>.<key>` for the optimizer's
  tensor state (Adam's step, exp_avg, exp_avg_sq); `rng.torch`, `rng.cuda.<i>`, `rng.numpy` (RNG states);
- metadata key `admn_train_state`: JSON with format/version, `epoch` (the last completed epoch), the optimizer's
  param groups and non-tensor state, the scheduler's state dict, python/numpy RNG scalars, and caller extras
  (config, metrics history).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

CHECKPOINT_NAME = "checkpoint.safetensors"
STATE_FORMAT = "admn-train-state"
STATE_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable or does not match the modules/optimizer it is loaded into."""


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_NAME


def save_checkpoint(path: str | Path, *, epoch: int, modules: dict[str, nn.Module],
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    extra: dict[str, Any] | None = None) -> Path:
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"module.{name}.{key}"] = value
    meta: dict[str, Any] = {"format": STATE_FORMAT, "version": STATE_VERSION, "epoch": int(epoch),
                            "modules": sorted(modules), "extra": extra or {}}
    if optimizer is not None:
        state = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for index, param_state in state["state"].items():
            for key, value in param_state.items():
                if torch.is_tensor(value):
                    tensors[f"optimizer.{index}.{key}"] = value
                else:
                    scalars.setdefault(str(index), {})[key] = value
        meta["optimizer"] = {"param_groups": state["param_groups"], "scalars": scalars}
    if scheduler is not None:
        meta["scheduler"] = scheduler.state_dict()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = cuda_state
    name, keys, position, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    python_version, python_state, python_gauss = random.getstate()
    meta["rng"] = {"numpy": [name, int(position), int(has_gauss), float(cached)],
                   "python": [python_version, list(python_state), python_gauss]}
    # clone: safetensors refuses tensors sharing storage (views, tied weights)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    save_file(tensors, str(temporary), metadata={"admn_train_state": json.dumps(meta)})
    temporary.replace(path)
    return path


def load_checkpoint(path: str | Path, *, modules: dict[str, nn.Module],
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    restore_rng: bool = True) -> dict[str, Any]:
    """Restore modules (strictly), optimizer, scheduler and RNG states; → {"epoch": …, "extra": {…}}."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {})["admn_train_state"])
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable training checkpoint: {exc}") from None
    if meta.get("format") != STATE_FORMAT or meta.get("version", 0) > STATE_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format')!r} v{meta.get('version')}")
    if sorted(modules) != meta["modules"]:
        raise CheckpointError(f"{path}: holds modules {meta['modules']}, asked to restore {sorted(modules)}")
    for name, module in modules.items():
        prefix = f"module.{name}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: module {name!r} does not match: {exc}") from None
    if optimizer is not None:
        if "optimizer" not in meta:
            raise CheckpointError(f"{path}: has no optimizer state")
        optimizer.load_state_dict(_optimizer_state(optimizer, meta["optimizer"], tensors))
    if scheduler is not None and "scheduler" in meta:
        scheduler.load_state_dict(meta["scheduler"])
    if restore_rng:
        torch.set_rng_state(tensors["rng.torch"])
        cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        name, position, has_gauss, cached = meta["rng"]["numpy"]
        np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), position, has_gauss, cached))
        version, state, gauss = meta["rng"]["python"]
        random.setstate((version, tuple(state), gauss))
    return {"epoch": meta["epoch"], "extra": meta.get("extra", {})}


def _optimizer_state(optimizer: torch.optim.Optimizer, saved: dict, tensors: dict[str, torch.Tensor]) -> dict:
    current_groups = optimizer.state_dict()["param_groups"]
    if len(current_groups) != len(saved["param_groups"]):
        raise CheckpointError("optimizer has a different number of parameter groups than the checkpoint")
    groups = []
    for current, stored in zip(current_groups, saved["param_groups"]):
        group = dict(current)
        for key, value in stored.items():  # JSON turned tuples (Adam betas) into lists: restore the type
            group[key] = tuple(value) if isinstance(current.get(key), tuple) else value
        groups.append(group)
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, scalars in saved.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(scalars)
    return {"state": state, "param_groups": groups}
