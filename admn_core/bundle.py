"""Model bundle: one `.safetensors` file with the task model, every controller and the full config.

Layout (format "admn-bundle", version 2):
- tensors `model.<state-dict key>` and `controller.<name>.<state-dict key>`, floating ones stored in float32 or (a
  published model, `save_bundle(..., storage_dtype=torch.float16)`) float16, cast to the modules' float32 on loading;
- metadata (all strings): `format`, `format_version`, `config` (ModelConfig JSON), `controllers` (JSON list of
  ControllerInfo), `content_sha256`, `created_by`, and any user extras under `extra.<key>`. The content hash covers
  every other metadata entry (config, format version, ...) and every tensor's name, dtype, shape and bytes; in
  version 1 bundles, still read, it covers the tensors only.
Loading never unpickles. Before any tensor data is read or any module built, it checks that the path is a readable
regular file (stat first: a FIFO or device is never opened), the format and version, the config and controller
list (bounded JSON, every size within admn_core.config's limits), and that the tensor names and shapes in the
safetensors header are exactly those of the modules the config describes, built on the meta device (no memory).
Only then are the tensors read, the hash verified and the modules built and filled. Every failure raises
BundleError naming the file and the field or problem.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from admn_core.config import MAX_OUTPUTS, ConfigError, ModelConfig, _from_plain, check_ranges, parse_json
from admn_core.models.controller import QoIController
from admn_core.models.task_model import ADMNModel

BUNDLE_FORMAT = "admn-bundle"
BUNDLE_VERSION = 2
METADATA_HASHED_SINCE = 2  # version 1's content_sha256 covers the tensors only
MAX_CONTROLLERS = 256
PROVENANCE_PREFIX = "provenance."  # extras of a published model (admn_core.publish): extra.provenance.<field>
CONTROLLER_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")  # no ".": a name is part of its tensors' key prefix


class BundleError(RuntimeError):
    """A bundle file is missing, truncated, tampered with, or does not match its own config."""


@dataclass(frozen=True)
class ControllerInfo:
    name: str
    budget: int | None  # the budget it was trained for; None for a universal (budget-conditioned) controller
    kind: str = "per_budget"  # "per_budget" | "universal"
    variant: str = "untrained"  # how it was trained, e.g. "corruption_supervised", "autoencoder", "task_only"
    corruption_outputs: int = 0

    def __post_init__(self) -> None:
        if not CONTROLLER_NAME.fullmatch(self.name):
            raise ConfigError(f"controller name {self.name!r} must be 1-128 letters, digits, '_' or '-'")
        ranges = {"corruption_outputs": (0, MAX_OUTPUTS), **({} if self.budget is None else {"budget": (0, 10**6)})}
        check_ranges(f"controller {self.name!r}: ", vars(self), ranges)


@dataclass
class Bundle:
    config: ModelConfig
    model: ADMNModel
    controllers: dict[str, QoIController] = field(default_factory=dict)
    controller_infos: dict[str, ControllerInfo] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BundleHeader:
    """A bundle's safetensors header, validated (`inspect_bundle`): nothing here was read from tensor data."""

    path: Path
    metadata: dict[str, str]
    config: ModelConfig
    controller_infos: tuple[ControllerInfo, ...]
    tensor_shapes: dict[str, tuple[int, ...]]


def build_controller(config: ModelConfig, info: ControllerInfo) -> QoIController:
    if info.kind == "universal":
        from admn_core.models.universal_controller import build_universal_controller

        return build_universal_controller(config, info)
    if info.kind != "per_budget":
        raise BundleError(f"controller {info.name!r}: kind {info.kind!r} is not supported by this version")
    return QoIController(config, corruption_outputs=info.corruption_outputs)


def content_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """sha256 over `metadata` (every entry but content_sha256 itself; None for version 1) and every tensor."""
    digest = hashlib.sha256()
    if metadata is not None:
        covered = {key: value for key, value in metadata.items() if key != "content_sha256"}
        digest.update(json.dumps(covered, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_bundle(path: str | Path, bundle: Bundle, storage_dtype: torch.dtype | None = None) -> Path:
    """Write `bundle` atomically. `storage_dtype` (e.g. torch.float16, half the file) stores every floating tensor in
    that dtype; integer and boolean tensors are stored as they are. Loading casts back to the modules' own dtypes."""
    path = Path(path)
    tensors = {f"model.{k}": v for k, v in bundle.model.state_dict().items()}
    for name, controller in bundle.controllers.items():
        if name not in bundle.controller_infos:
            raise BundleError(f"controller {name!r} has no ControllerInfo")
        tensors.update({f"controller.{name}.{k}": v for k, v in controller.state_dict().items()})
    tensors = {k: _stored(k, v.detach().cpu().contiguous(), storage_dtype) for k, v in tensors.items()}
    metadata = {
        "format": BUNDLE_FORMAT,
        "format_version": str(BUNDLE_VERSION),
        "config": bundle.config.to_json(),
        "controllers": json.dumps([asdict(bundle.controller_infos[n]) for n in sorted(bundle.controllers)]),
        "created_by": "admn_core",
        **{f"extra.{k}": str(v) for k, v in bundle.extra.items()},
    }
    metadata["content_sha256"] = content_digest(tensors, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    save_file(tensors, str(temporary), metadata=metadata)
    os.chmod(temporary, 0o666 & ~_umask())  # safetensors creates 0600; a bundle is shared like any data file
    temporary.replace(path)  # atomic: a crash mid-write never leaves a half bundle under the real name
    return path


def _stored(name: str, tensor: torch.Tensor, storage_dtype: torch.dtype | None) -> torch.Tensor:
    """`tensor` in the storage dtype (floating tensors only); a finite value the dtype cannot hold is an error."""
    if storage_dtype is None or not tensor.is_floating_point() or tensor.dtype == storage_dtype:
        return tensor
    if not storage_dtype.is_floating_point:
        raise BundleError(f"storage dtype {storage_dtype} is not a floating-point dtype")
    stored = tensor.to(storage_dtype)
    if not torch.equal(torch.isfinite(stored), torch.isfinite(tensor)):
        raise BundleError(f"tensor {name!r} holds values beyond the range of {storage_dtype} "
                          f"(largest magnitude {tensor.abs().max().item():.4g}); store this bundle in float32")
    return stored


def _umask() -> int:
    """The process umask, read without setting it (os.umask would change it for every thread meanwhile)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def read_bundle_header(path: str | Path) -> dict[str, str]:
    """The raw metadata of a bundle without loading its tensors (`inspect_bundle` also validates it)."""
    path = _regular_file(path)
    return _read_header(path)[0]


def bundle_provenance(metadata: dict[str, str]) -> dict[str, str]:
    """The provenance fields of a published bundle's metadata (`extra.provenance.<field>`); {} for any other."""
    prefix = "extra." + PROVENANCE_PREFIX
    return {key.removeprefix(prefix): value for key, value in sorted(metadata.items()) if key.startswith(prefix)}


def inspect_bundle(path: str | Path) -> BundleHeader:
    """Everything `load_bundle` checks before reading tensor data: the file, format and version, the config and
    controller list, and every tensor's name and shape against the modules the config describes."""
    path = _regular_file(path)
    metadata, shapes = _read_header(path)
    _check_format(path, metadata)
    try:
        config = ModelConfig.from_json(metadata["config"])
    except ConfigError as exc:
        raise BundleError(f"{path}: metadata 'config' is invalid: {exc}") from None
    try:
        infos = _controller_infos(metadata["controllers"])
    except ConfigError as exc:
        raise BundleError(f"{path}: metadata 'controllers' is invalid: {exc}") from None
    owners = ["model"] + [f"controller.{info.name}" for info in infos]
    _check_shapes(path, shapes, _expected_shapes(path, config, infos), owners)
    return BundleHeader(path, metadata, config, infos, shapes)


def load_bundle(path: str | Path, device: str | torch.device = "cpu", expected_sha256: str | None = None) -> Bundle:
    header = inspect_bundle(path)
    path, metadata = header.path, header.metadata
    if expected_sha256 is not None:
        digest = hashlib.sha256()
        with path.open("rb") as file:  # in 1 MiB blocks: never the whole file in memory
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        actual = digest.hexdigest()
        if actual != expected_sha256.lower():
            raise BundleError(f"{path}: file sha256 {actual} does not match the expected {expected_sha256}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{path}: tensor data unreadable (truncated or corrupt?): {exc}") from None
    covered = metadata if int(metadata["format_version"]) >= METADATA_HASHED_SINCE else None
    if content_digest(tensors, covered) != metadata["content_sha256"]:
        raise BundleError(f"{path}: config or tensor contents do not match the recorded content_sha256 "
                          f"(modified or corrupt)")
    model = ADMNModel(header.config)
    model.load_state_dict(_owned_by(tensors, "model"), strict=True)
    controllers = {}
    for info in header.controller_infos:
        controllers[info.name] = build_controller(header.config, info)
        controllers[info.name].load_state_dict(_owned_by(tensors, f"controller.{info.name}"), strict=True)
    extra = {k.removeprefix("extra."): v for k, v in metadata.items() if k.startswith("extra.")}
    return Bundle(header.config, model.to(device).eval(), {n: c.to(device).eval() for n, c in controllers.items()},
                  {info.name: info for info in header.controller_infos}, extra)


def _regular_file(path: str | Path) -> Path:
    """The resolved path of a readable regular file, examined with stat before anything opens it."""
    resolved = Path(os.path.realpath(Path(path).expanduser()))
    try:
        mode = os.stat(resolved).st_mode
    except FileNotFoundError:
        raise BundleError(f"bundle not found: {resolved}") from None
    except OSError as exc:
        reason = "symlink loop" if exc.errno == errno.ELOOP else f"cannot be examined: {exc.strerror}"
        raise BundleError(f"{resolved}: {reason}") from None
    if stat.S_ISDIR(mode):
        raise BundleError(f"{resolved}: is a directory, not a bundle file")
    if not stat.S_ISREG(mode):
        raise BundleError(f"{resolved}: not a regular file (a FIFO, socket or device); a bundle is a .safetensors file")
    if not os.access(resolved, os.R_OK):
        raise BundleError(f"{resolved}: not readable (permission denied)")
    return resolved


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """→ (metadata, tensor name → shape), from the safetensors header only."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
            return dict(handle.metadata() or {}), shapes
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from None


def _check_format(path: Path, metadata: dict[str, str]) -> None:
    if metadata.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: not an ADMN bundle (metadata format={metadata.get('format')!r})")
    version = metadata.get("format_version", "")
    if not re.fullmatch(r"[0-9]{1,6}", version) or int(version) < 1:
        raise BundleError(f"{path}: bundle format version {version!r} is not a version number")
    if int(version) > BUNDLE_VERSION:
        raise BundleError(f"{path}: bundle format version {version!r} is newer than this code reads ({BUNDLE_VERSION})")
    for key in ("config", "controllers", "content_sha256"):
        if key not in metadata:
            raise BundleError(f"{path}: metadata lacks {key!r}")


def _controller_infos(text: str) -> tuple[ControllerInfo, ...]:
    items = parse_json(text, "controllers")
    if not isinstance(items, list):
        raise ConfigError(f"controllers: expected a list, got {type(items).__name__}")
    if len(items) > MAX_CONTROLLERS:
        raise ConfigError(f"controllers: at most {MAX_CONTROLLERS}, got {len(items)}")
    infos = tuple(_from_plain(ControllerInfo, item, f"controllers[{i}]") for i, item in enumerate(items))
    names = [info.name for info in infos]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"duplicate controller name {name!r}")
    return infos


def _expected_shapes(path: Path, config: ModelConfig, infos: tuple[ControllerInfo, ...]) -> dict[str, tuple]:
    """Tensor name → shape of the modules the config describes, built on the meta device (allocates nothing)."""
    try:
        with torch.device("meta"):
            modules = {"model": ADMNModel(config),
                       **{f"controller.{info.name}": build_controller(config, info) for info in infos}}
    except (ValueError, RuntimeError) as exc:  # e.g. a controller stem whose kernels exceed its input size
        raise BundleError(f"{path}: the config describes no buildable model: {exc}") from None
    return {f"{owner}.{key}": tuple(value.shape)
            for owner, module in modules.items() for key, value in module.state_dict().items()}


def _check_shapes(path: Path, found: dict[str, tuple], expected: dict[str, tuple], owners: list[str]) -> None:
    """The header's tensors are exactly the expected ones: per owner (model, each controller), then strays."""
    for owner in owners:
        want, have = _owned_by(expected, owner), _owned_by(found, owner)
        missing = sorted(set(want) - set(have))
        unexpected = sorted(set(have) - set(want))
        wrong_shape = sorted(f"{k}: file {list(have[k])} vs config {list(want[k])}"
                             for k in set(want) & set(have) if have[k] != want[k])
        problems = [f"{label} {_preview(keys)}" for label, keys in
                    (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong_shape)) if keys]
        if problems:
            raise BundleError(f"{path}: '{owner}' does not match its config: " + "; ".join(problems)
                              + _parameter_counts(found, expected))
    stray = sorted(name for name in found if not name.startswith(tuple(f"{owner}." for owner in owners)))
    if stray:
        raise BundleError(f"{path}: tensors that belong to nothing in the config: {_preview(stray)}")


def _parameter_counts(found: dict[str, tuple], expected: dict[str, tuple]) -> str:
    want, have = (sum(math.prod(shape) for shape in shapes.values()) for shapes in (expected, found))
    return "" if want == have else f" (the config describes {want:,} parameters, the file holds {have:,})"


def _owned_by(items: dict, owner: str) -> dict:
    """The entries under `owner.` with that prefix removed (state-dict keys of one module)."""
    prefix = f"{owner}."
    return {key[len(prefix):]: value for key, value in items.items() if key.startswith(prefix)}


def _preview(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return f"[{shown}{', …' if len(items) > limit else ''}] ({len(items)} in all)"
