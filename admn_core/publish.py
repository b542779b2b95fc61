"""`admn publish RUN_DIR --out models/NAME.safetensors [--half]`: a finished training run's bundle as a published
model, with its provenance and its recorded test results.

Writes three files side by side, all or none:

    NAME.safetensors   the run's bundle (float16 storage with --half) + `extra.provenance.*` metadata (hashed)
    NAME.json          the recorded results (schema PUBLISHED_FORMAT, below) of the published bundle on the run's
                       test split, evaluated by admn_core.eval.evaluate.evaluate_run (the pipeline's evaluation)
    NAME.md            the same as paper Table 1 + per-condition tables + allocations + provenance

Provenance (every value a string, in the bundle under `extra.provenance.<field>` and in NAME.json "provenance"):
command, seed, settings (the run's settings.json), package_version, git_commit, created, machine, evaluated_on,
torch, training_wall_s, storage_dtype, data_fingerprint, test_fingerprint, world. A world cache's identity is its
manifest without the wall time (`cache_fingerprint`): `World.generate(i, preset, seed)` with the recorded world
settings is bit-exact, so `provenance.world` is enough to regenerate the test split (`regenerate_test_split`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import torch
import yaml

from admn_core.bundle import PROVENANCE_PREFIX, load_bundle, read_bundle_header, save_bundle
from admn_core.data.cache import WorldCache, write_cache
from admn_core.data.dataset import WorldCacheDataset
from admn_core.eval.evaluate import evaluate_run
from admn_core.eval.report import condition_markdown, results_markdown
from admn_core.train.pipeline import Pipeline, PipelineSettings, load_settings, settings_from_dict

logger = logging.getLogger(__name__)

PUBLISHED_FORMAT = "admn-published-model"
PUBLISHED_VERSION = 1
MAX_HALF_CHANGE = 0.01  # float16 storage may move no recorded mean error by 1 % or more
CACHE_IDENTITY_KEYS = ("format", "format_version", "num_samples", "views", "modalities", "categories", "preset",
                       "seed", "world", "source")  # every manifest entry but the wall time
REPOSITORY = Path(__file__).resolve().parents[1]


class PublishError(RuntimeError):
    """A run cannot be published: unfinished, inconsistent, or float16 storage moves its results too much."""


@dataclass(frozen=True)
class Publication:
    bundle: Path
    results: Path
    markdown: Path
    record: dict


# ---------------------------------------------------------------------------------------------- publishing
def publish_run(run_dir: str | Path, out: str | Path, half: bool = False, overwrite: bool = False,
                max_half_change: float = MAX_HALF_CHANGE) -> Publication:
    """Publish `run_dir` (`<out>/<corruption>/` of `admn train`) as `out` (+ `.json`, `.md` beside it)."""
    run_dir, out = Path(run_dir), Path(out)
    targets = _targets(out, overwrite)
    settings, timings = _finished_run(run_dir)
    run_bundle = load_bundle(run_dir / "bundle.safetensors")
    if run_bundle.config.head.task != "localization":
        raise PublishError(f"{run_dir}: publishing records localization errors; this run's head is "
                           f"{run_bundle.config.head.task!r}")
    test = run_test_split(settings, run_dir)
    storage = torch.float16 if half else None
    with tempfile.TemporaryDirectory(prefix=".publish-", dir=out.parent) as work:
        work = Path(work)
        provenance = run_provenance(run_dir, settings, timings, storage)
        staged = save_bundle(work / out.name, replace(run_bundle, extra={**run_bundle.extra, **{
            PROVENANCE_PREFIX + key: value for key, value in provenance.items()}}), storage_dtype=storage)
        results = evaluate_bundle(staged, settings, test, work / "eval")
        provenance = {**provenance, "evaluated_on": results["machine"]}  # recorded in NAME.json / .md only
        half_precision = None
        if half:
            reference = evaluate_bundle(run_dir / "bundle.safetensors", settings, test, work / "eval_float32")
            half_precision = half_precision_change(reference["table_cm"], results["table_cm"], max_half_change)
            _log_half_precision(half_precision)
            if half_precision["moved"]:
                raise PublishError("float16 storage moves " + ", ".join(half_precision["moved"]) + f" by "
                                   f"{100 * max_half_change:g} % or more; publish in float32 (without --half). "
                                   f"Nothing was written to {out.parent}")
        record = published_record(staged, provenance, results, half_precision)
        staged.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
        staged.with_suffix(".md").write_text(published_markdown(out.stem, record, results))
        for target in targets:
            os.replace(work / target.name, target)
    logger.info(f"published {out} ({out.stat().st_size / 1e6:.2f} MB), {targets[1].name}, {targets[2].name}")
    return Publication(*targets, record)


def _targets(out: Path, overwrite: bool) -> tuple[Path, Path, Path]:
    if out.suffix != ".safetensors":
        raise PublishError(f"--out must name a .safetensors file, got {out}")
    targets = (out, out.with_suffix(".json"), out.with_suffix(".md"))
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise PublishError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace a published model")
    out.parent.mkdir(parents=True, exist_ok=True)
    return targets


def _finished_run(run_dir: Path) -> tuple[PipelineSettings, dict]:
    for name in ("settings.json", "timings.json", "bundle.safetensors"):
        if not (run_dir / name).is_file():
            raise PublishError(f"{run_dir} is not a finished training run (no {name}); run `admn train` to the end")
    timings = json.loads((run_dir / "timings.json").read_text())
    if "total" not in timings:
        raise PublishError(f"{run_dir}/timings.json has no total: the run did not finish")
    return settings_from_dict(json.loads((run_dir / "settings.json").read_text())), timings


def run_test_split(settings: PipelineSettings, run_dir: Path):
    """The test split the run was evaluated on: its world cache, or the dataset/cache split it corrupts on the fly."""
    if settings.data.source != "world":
        return Pipeline(settings, run_dir).data()[1]  # reads dataset folders / caches outside the run; writes nothing
    root = run_dir / "data" / "test"
    manifest = WorldCache(root).manifest
    recorded = (manifest["num_samples"], manifest["preset"], manifest["seed"])
    expected = (settings.data.test, settings.corruption, settings.data.test_seed)
    if recorded != expected:
        raise PublishError(f"{root}: the cache holds (samples, preset, seed) {recorded}, the run's settings say "
                           f"{expected}; rerun `admn train` to regenerate it")
    return WorldCacheDataset(root)


def evaluate_bundle(bundle_path: str | Path, settings: PipelineSettings, test, work_dir: str | Path) -> dict:
    """The pipeline's evaluation (admn_core.eval.evaluate.evaluate_run) of a bundle's model and controllers on
    `test`; figures and results files go to `work_dir`."""
    bundle = load_bundle(bundle_path)
    # The bundle carries its model: a model file the settings name need not be at hand (another checkout, another
    # working directory). A bundle of a plain preset must be that preset.
    pipeline = Pipeline(settings, work_dir, config=bundle.config if settings.model else None)
    if pipeline.config != bundle.config:
        raise PublishError(f"{bundle_path}: the bundle's model config is not the run's preset {settings.preset!r}")
    controllers = {name: (bundle.controller_infos[name], module) for name, module in bundle.controllers.items()}
    return evaluate_run(pipeline, bundle.model, None, controllers, {}, test)


def half_precision_change(reference: dict, half: dict, limit: float = MAX_HALF_CHANGE) -> dict:
    """Relative change of every mean error (method → budget → error) from `reference` (float32) to `half`."""
    change = {method: {budget: _relative_change(error, half[method][budget]) for budget, error in row.items()}
              for method, row in reference.items()}
    moved = [f"{method} L={budget} ({100 * value:+.2f} %)" for method, row in change.items()
             for budget, value in row.items() if abs(value) >= limit]
    largest = max((abs(v) for row in change.values() for v in row.values()), default=0.0)
    return {"reference": "the run's float32 bundle", "relative_change": change, "max_abs_relative_change": largest,
            "limit": limit, "moved": moved}


def _relative_change(reference: float, value: float) -> float:
    if reference == 0:
        return 0.0 if value == 0 else float("inf")
    return (value - reference) / reference


def _log_half_precision(half_precision: dict) -> None:
    for method, row in half_precision["relative_change"].items():
        logger.info(f"float16 storage vs float32, {method}: "
                    + ", ".join(f"L={b} {100 * v:+.3f} %" for b, v in row.items()))
    logger.info(f"largest change {100 * half_precision['max_abs_relative_change']:.3f} % "
                f"(limit {100 * half_precision['limit']:g} %)")


# ---------------------------------------------------------------------------------------------- provenance
def run_provenance(run_dir: Path, settings: PipelineSettings, timings: dict,
                   storage: torch.dtype | None) -> dict[str, str]:
    recorded_settings = json.loads((run_dir / "settings.json").read_text())
    return {
        "command": training_command(settings, run_dir),
        "seed": str(settings.seed),
        "settings": json.dumps(recorded_settings, sort_keys=True, separators=(",", ":")),
        "package_version": _package_version(),
        "git_commit": _git_commit(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": training_machine(settings, run_dir),
        "torch": torch.__version__,
        "training_wall_s": f"{timings['total']:.2f}",
        "storage_dtype": str(storage or torch.float32).removeprefix("torch."),
        **data_provenance(settings, run_dir),
    }


def training_command(settings: PipelineSettings, run_dir: Path) -> str:
    """The `admn train` command that reproduces the run: the repository's training config whose settings are the
    run's (with --seed, --corruption, --quick as needed); without one, the recorded settings as the config."""
    tail = f"--out {_shown(run_dir.parent)} --seed {settings.seed}"
    for path in sorted((REPOSITORY / "config").glob("*.yaml")):
        for quick in (False, True):
            try:
                candidate = load_settings(path, quick=quick, seed=settings.seed, corruption=settings.corruption)
                base = load_settings(path)
            except (ValueError, TypeError, AttributeError, OSError, yaml.YAMLError):  # not a training config
                break
            if replace(candidate, progress=settings.progress) == settings:
                flags = ([f"--corruption {settings.corruption}"] if base.corruption != settings.corruption else []) \
                    + (["--quick"] if quick else [])
                return " ".join(["admn train --train-config", _shown(path), *flags, tail])
    return f"admn train --train-config SETTINGS.yaml {tail} (SETTINGS.yaml: provenance.settings)"


def training_machine(settings: PipelineSettings, run_dir: Path) -> str:
    """Where the run trained: the CPU and core count its evaluation stage recorded, or its GPU device."""
    if settings.device.startswith("cuda"):
        return f"GPU ({settings.device}; the run records no device name)"
    results = run_dir / "eval" / "results.json"
    if results.is_file():
        return json.loads(results.read_text()).get("machine", "unknown")
    return "unknown (the run recorded no machine)"


def data_provenance(settings: PipelineSettings, run_dir: Path) -> dict[str, str]:
    data = settings.data
    if data.source == "world":
        roots = {"train": run_dir / "data" / "train", "test": run_dir / "data" / "test"}
        world = {"source": "world", "corruption": settings.corruption, "world_seed": data.world_seed,
                 "test_seed": data.test_seed, "test_samples": data.test, "train_seed": data.train_seed,
                 "train_samples": data.train}
    elif data.source == "cache":
        roots = {"train": Path(data.root), "test": Path(data.test_root)}
        world = {"source": "cache", "corruption": settings.corruption, "train_root": data.root,
                 "test_root": data.test_root}
    else:
        return {"data_fingerprint": f"none: {data.source} dataset folder {data.root} (not a cache)",
                "test_fingerprint": "none", "world": json.dumps({"source": data.source, "root": data.root})}
    fingerprints = {split: cache_fingerprint(root) for split, root in roots.items()}
    return {"data_fingerprint": _sha256_json(fingerprints), "test_fingerprint": fingerprints["test"],
            "world": json.dumps(world, sort_keys=True)}


def cache_fingerprint(root: str | Path) -> str:
    """sha256 of a cache's identity: its manifest (format, size, views, modalities, preset, seed, world settings,
    source of given samples) without the wall time it took to write."""
    manifest = WorldCache(root).manifest
    return _sha256_json({key: manifest[key] for key in CACHE_IDENTITY_KEYS if key in manifest})


def regenerate_test_split(world: dict, out: str | Path, workers: int = 1) -> Path:
    """The test split of a world run from its `provenance.world` (parsed), written as a cache at `out`."""
    from admn_core.data.world import WorldConfig

    if world.get("source") != "world":
        raise PublishError(f"only a simulated-world test split can be regenerated, not a {world.get('source')!r} one")
    return write_cache(out, world["test_samples"], world["corruption"], world["test_seed"],
                       WorldConfig(seed=world["world_seed"]), workers)


def _sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _shown(path: Path) -> str:
    """A path as the training command shows it: relative to the repository when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPOSITORY)) if resolved.is_relative_to(REPOSITORY) else str(resolved)


def _package_version() -> str:
    try:
        return importlib.metadata.version("admn_ros")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _git_commit() -> str:
    if shutil.which("git") is None or not (REPOSITORY / ".git").exists():
        return "none (not a git checkout)"
    try:
        commit = subprocess.run(["git", "-C", str(REPOSITORY), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(REPOSITORY), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return "unknown (git failed)"
    return f"{commit} (with uncommitted changes)" if changed else commit


# ---------------------------------------------------------------------------------------------- records
def published_record(bundle_path: Path, provenance: dict[str, str], results: dict,
                     half_precision: dict | None) -> dict:
    """NAME.json: what the published bundle scored on the run's test split, and where it came from."""
    digest = hashlib.sha256()
    with bundle_path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    detail = results["detail"]
    return {
        "format": PUBLISHED_FORMAT, "format_version": PUBLISHED_VERSION,
        "bundle": bundle_path.name, "bundle_sha256": digest.hexdigest(),
        "content_sha256": read_bundle_header(bundle_path)["content_sha256"],
        "provenance": provenance,
        "evaluation": {key: results[key] for key in ("preset", "corruption", "seed", "test_samples", "budgets",
                                                     "machine")},
        "table_cm": results["table_cm"],
        "error_by_condition_cm": {method: {budget: row["error_by_condition"] for budget, row in rows.items()}
                                  for method, rows in detail.items()},
        "blocks_by_condition": {key.removeprefix("ADMN "): per_condition
                                for key, per_condition in results["allocation_by_condition"].items()},
        "costs": results["costs"], "upper_bound": results["upper_bound"],
        **({"half_precision": half_precision} if half_precision is not None else {}),
    }


def published_markdown(name: str, record: dict, results: dict) -> str:
    provenance, evaluation = record["provenance"], record["evaluation"]
    lines = [f"# Published model `{name}`", "",
             f"Published {provenance['created']}; evaluated on {evaluation['machine']}; trained on "
             f"{provenance['machine']} in {float(provenance['training_wall_s']) / 3600:.2f} h; stored as "
             f"{provenance['storage_dtype']}.", "",
             results_markdown(results), condition_markdown(results, tuple(results["budgets"])),
             blocks_markdown(record["blocks_by_condition"])]
    half = record.get("half_precision")
    if half is not None:
        lines += ["### float16 storage vs the float32 run bundle (relative change of the mean error)", "",
                  "| Method | " + " | ".join(f"L={b}" for b in results["budgets"]) + " |",
                  "|---|" + "---|" * len(results["budgets"])]
        lines += [f"| {method} | " + " | ".join(f"{100 * row[str(b)]:+.3f} %" if str(b) in row else "—"
                                                for b in results["budgets"]) + " |"
                  for method, row in half["relative_change"].items()]
        lines += ["", f"Largest: {100 * half['max_abs_relative_change']:.3f} % (limit {100 * half['limit']:g} %).", ""]
    lines += ["### Provenance", "", "| Field | Value |", "|---|---|"]
    lines += [f"| {key} | `{value}` |" for key, value in provenance.items() if key != "settings"]
    lines += ["", f"The full training settings are in the bundle's `extra.provenance.settings` and in `{name}.json`.",
              ""]
    return "\n".join(lines)


def blocks_markdown(blocks_by_condition: dict) -> str:
    """Mean blocks per modality chosen by ADMN per corruption condition, one table per budget."""
    lines = []
    for budget, per_condition in blocks_by_condition.items():
        modalities = list(next(iter(per_condition.values()), {}))
        lines += [f"### ADMN blocks per modality by condition at L={budget}", "",
                  "| Condition | " + " | ".join(modalities) + " |", "|---|" + "---|" * len(modalities)]
        lines += [f"| {condition} | " + " | ".join(f"{blocks[m]:.2f}" for m in modalities) + " |"
                  for condition, blocks in per_condition.items()]
        lines.append("")
    return "\n".join(lines)
