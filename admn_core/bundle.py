"""Model bundle: one `.safetensors` file with the task model, every controller and the full config.

Layout (format "admn-bundle", version 1):
- tensors `model.<state-dict key>` and `controller.<name>.<state-dict key>`;
- metadata (all strings): `format`, `format_version`, `config` (ModelConfig JSON), `controllers` (JSON list of
  ControllerInfo), `content_sha256` (over every tensor's name, dtype, shape and bytes, in name order),
  `created_by`, and any user extras under `extra.<key>`.
Loading never unpickles, checks the format and version, the content hash (tampering), and that keys and
shapes match a freshly built model exactly; every failure raises BundleError naming the file and problem.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from admn_core.config import ConfigError, ModelConfig
from admn_core.models.controller import QoIController
from admn_core.models.task_model import ADMNModel

BUNDLE_FORMAT = "admn-bundle"
BUNDLE_VERSION = 1


class BundleError(RuntimeError):
    """A bundle file is missing, truncated, tampered with, or does not match its own config."""


@dataclass(frozen=True)
class ControllerInfo:
    name: str
    budget: int | None  # the budget it was trained for; None for a universal (budget-conditioned) controller
    kind: str = "per_budget"  # "per_budget" | "universal"
    variant: str = "untrained"  # how it was trained, e.g. "corruption_supervised", "autoencoder", "task_only"
    corruption_outputs: int = 0


@dataclass
class Bundle:
    config: ModelConfig
    model: ADMNModel
    controllers: dict[str, QoIController] = field(default_factory=dict)
    controller_infos: dict[str, ControllerInfo] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)


def build_controller(config: ModelConfig, info: ControllerInfo) -> QoIController:
    if info.kind == "universal":
        from admn_core.train.universal import build_universal_controller

        return build_universal_controller(config, info)
    if info.kind != "per_budget":
        raise BundleError(f"controller {info.name!r}: kind {info.kind!r} is not supported by this version")
    return QoIController(config, corruption_outputs=info.corruption_outputs)


def content_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_bundle(path: str | Path, bundle: Bundle) -> Path:
    path = Path(path)
    tensors = {f"model.{k}": v for k, v in bundle.model.state_dict().items()}
    for name, controller in bundle.controllers.items():
        if name not in bundle.controller_infos:
            raise BundleError(f"controller {name!r} has no ControllerInfo")
        tensors.update({f"controller.{name}.{k}": v for k, v in controller.state_dict().items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = {
        "format": BUNDLE_FORMAT,
        "format_version": str(BUNDLE_VERSION),
        "config": bundle.config.to_json(),
        "controllers": json.dumps([asdict(bundle.controller_infos[n]) for n in sorted(bundle.controllers)]),
        "content_sha256": content_digest(tensors),
        "created_by": "admn_core",
        **{f"extra.{k}": str(v) for k, v in bundle.extra.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    save_file(tensors, str(temporary), metadata=metadata)
    temporary.replace(path)  # atomic: a crash mid-write never leaves a half bundle under the real name
    return path


def read_bundle_header(path: str | Path) -> dict[str, str]:
    """The metadata of a bundle without loading its tensors (for `admn info` and quick checks)."""
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from None


def load_bundle(path: str | Path, device: str | torch.device = "cpu", expected_sha256: str | None = None) -> Bundle:
    path = _existing(path)
    if expected_sha256 is not None:
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != expected_sha256.lower():
            raise BundleError(f"{path}: file sha256 {actual} does not match the expected {expected_sha256}")
    metadata = read_bundle_header(path)
    _check_format(path, metadata)
    try:
        config = ModelConfig.from_json(metadata["config"])
        infos = [ControllerInfo(**item) for item in json.loads(metadata["controllers"])]
    except (ConfigError, json.JSONDecodeError, TypeError, KeyError) as exc:
        raise BundleError(f"{path}: bundle config is invalid: {exc}") from None
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{path}: tensor data unreadable (truncated or corrupt?): {exc}") from None
    if content_digest(tensors) != metadata.get("content_sha256"):
        raise BundleError(f"{path}: tensor contents do not match the recorded content_sha256 (modified or corrupt)")
    model = ADMNModel(config)
    _load_exact(path, model, tensors, "model.")
    controllers, controller_infos = {}, {}
    for info in infos:
        controller = build_controller(config, info)
        _load_exact(path, controller, tensors, f"controller.{info.name}.")
        controllers[info.name], controller_infos[info.name] = controller, info
    known = {f"model.{k}" for k in model.state_dict()} | {
        f"controller.{n}.{k}" for n, c in controllers.items() for k in c.state_dict()}
    stray = sorted(set(tensors) - known)
    if stray:
        raise BundleError(f"{path}: tensors that belong to nothing in the config: {_preview(stray)}")
    extra = {k.removeprefix("extra."): v for k, v in metadata.items() if k.startswith("extra.")}
    bundle = Bundle(config, model.to(device).eval(), {n: c.to(device).eval() for n, c in controllers.items()},
                    controller_infos, extra)
    return bundle


def _existing(path: str | Path) -> Path:
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise BundleError(f"bundle not found: {path}")
    return path


def _check_format(path: Path, metadata: dict[str, str]) -> None:
    if metadata.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: not an ADMN bundle (metadata format={metadata.get('format')!r})")
    version = metadata.get("format_version", "")
    if not version.isdigit() or int(version) > BUNDLE_VERSION:
        raise BundleError(f"{path}: bundle format version {version!r} is newer than this code reads ({BUNDLE_VERSION})")
    for key in ("config", "controllers", "content_sha256"):
        if key not in metadata:
            raise BundleError(f"{path}: metadata lacks {key!r}")


def _load_exact(path: Path, module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    expected = module.state_dict()
    present = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = sorted(set(expected) - set(present))
    unexpected = sorted(set(present) - set(expected))
    wrong_shape = sorted(f"{k}: file {list(present[k].shape)} vs config {list(expected[k].shape)}"
                         for k in set(expected) & set(present) if present[k].shape != expected[k].shape)
    problems = []
    if missing:
        problems.append(f"missing {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected {_preview(unexpected)}")
    if wrong_shape:
        problems.append(f"shape mismatch {_preview(wrong_shape)}")
    if problems:
        raise BundleError(f"{path}: '{prefix.rstrip('.')}' does not match its config: " + "; ".join(problems))
    module.load_state_dict(present, strict=True)


def _preview(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{', …' if len(items) > limit else ''}] ({len(items)} in all)"
