"""The `admn` command: inspect presets and bundles, count FLOPs, benchmark budgets, make and import weights."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

import torch

from admn_core.allocation import maximum_budget, minimum_budget, naive_allocation
from admn_core.config import ConfigError, ModelConfig, save_model_config
from admn_core.data.errors import DataError
from admn_core.openmp_spin import relaunch_with_spin_cap
from admn_core.presets import PRESETS, load_model_config, preset_config

# Subcommand groups contributed by other modules: each exposes register(subparsers). Missing ones are skipped,
# so the core command works in a partial install.
COMMAND_GROUPS = ("admn_core.data.cli", "admn_core.train.cli")

logger = logging.getLogger(__name__)


def _model_config(args) -> ModelConfig:
    return load_model_config(args.config) if getattr(args, "config", None) else preset_config(args.preset)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model preset (default: tiny)")
    parser.add_argument("--config", help="model config YAML (overrides --preset)")


def command_flops(args) -> int:
    from admn_core.cost import model_flops

    config = _model_config(args)
    low, high = minimum_budget(config), maximum_budget(config)
    print(f"{config.name}: {len(config.modalities)} modalities ({', '.join(config.modality_names)}), "
          f"views {[len(m.views) for m in config.modalities]}, budgets {low}..{high}")
    print(f"{'budget':>6} {'blocks per modality (naive split)':<36} {'GFLOPs':>9} {'vs full':>8}")
    full = model_flops(config, naive_allocation(config, high), include_controller=False).total
    for budget in args.budgets or sorted({low, 6, 8, 12, 16, 24, high} & set(range(low, high + 1))):
        mask = naive_allocation(config, budget)
        flops = model_flops(config, mask, include_controller=budget < high).total
        split = " ".join(f"{n}={c}" for n, c in zip(config.modality_names, mask.sum(-1).tolist(), strict=True))
        print(f"{budget:>6} {split:<36} {flops / 1e9:>9.3f} {flops / full:>8.2f}")
    return 0


def command_bench(args) -> int:
    from admn_core.bench import benchmark_budgets, format_table

    torch.set_num_threads(args.threads) if args.threads else None
    results = []
    for preset in args.presets:
        config = preset_config(preset)
        budgets = [b for b in args.budgets if minimum_budget(config) <= b <= maximum_budget(config)]
        repeats = args.repeats if args.repeats else (30 if "tiny" in preset else 5)
        result = benchmark_budgets(config, budgets, repeats=repeats, device=args.device,
                                   dtype=getattr(torch, args.dtype), fast=args.fast,
                                   fast_dtype=getattr(torch, args.fast_dtype) if args.fast_dtype else None,
                                   throughput_batch=args.batch, distinct_allocations=args.distinct,
                                   throughput_repeats=args.throughput_repeats)
        results.append(result)
        print(format_table(result), flush=True)
        print()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


def command_make_bundle(args) -> int:
    from admn_core.bench import random_bundle
    from admn_core.bundle import save_bundle

    config = _model_config(args)
    path = save_bundle(args.out, random_bundle(config, args.controllers, args.seed))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {config.name}, random weights, "
          f"controllers for budgets {args.controllers}")
    return 0


def command_info(args) -> int:
    from admn_core.bundle import bundle_provenance, inspect_bundle

    header = inspect_bundle(args.bundle)  # validated header: a hostile file is a BundleError, reported by main()
    config, metadata = header.config, header.metadata
    print(f"{args.bundle}: format {metadata['format']} v{metadata['format_version']}, model {config.name}")
    print(f"  modalities: {', '.join(f'{m.name}×{len(m.views)}' for m in config.modalities)}; "
          f"budgets {minimum_budget(config)}..{maximum_budget(config)}")
    for info in header.controller_infos:
        print(f"  controller {info.name}: budget {info.budget} ({info.kind}, {info.variant})")
    print(f"  content sha256 {metadata['content_sha256']}")
    provenance = bundle_provenance(metadata)
    if provenance:
        print("  provenance:")
        for key, value in provenance.items():
            shown = f"{len(value)} characters of JSON (extra.provenance.settings)" if key == "settings" else value
            print(f"    {key if key.isprintable() else ascii(key)}: {shown if shown.isprintable() else ascii(shown)}")
    return 0


def command_publish(args) -> int:
    from admn_core.publish import publish_run

    torch.set_num_threads(args.threads) if args.threads else None
    publication = publish_run(args.run, args.out, half=args.half, overwrite=args.overwrite)
    record = publication.record
    print(f"wrote {publication.bundle} ({publication.bundle.stat().st_size / 1e6:.2f} MB, "
          f"{record['provenance']['storage_dtype']}), {publication.results}, {publication.markdown}")
    half = record.get("half_precision")
    if half is not None:
        print(f"float16 storage moved the test errors by at most {100 * half['max_abs_relative_change']:.3f} % "
              f"(limit {100 * half['limit']:g} %)")
    return 0


def command_config(args) -> int:
    config = _model_config(args)
    if args.out:
        save_model_config(config, args.out)
        print(f"wrote {args.out}")
    else:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False))
    return 0


def command_import_checkpoint(args) -> int:
    """Explicitly convert a third-party `.pth` (read weights-only, no pickled code) into safetensors."""
    from safetensors.torch import save_file

    from admn_core.pretrained import read_checkpoint

    state = read_checkpoint(args.checkpoint)
    save_file({k: v.contiguous() for k, v in state.items()}, args.out, metadata={"source": str(args.checkpoint)})
    print(f"wrote {args.out}: {len(state)} tensors from {args.checkpoint}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="admn", description=__doc__)
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", dest="log_level", action="store_const", const=logging.DEBUG,
                           default=logging.INFO, help="also log admn_core's debug messages")
    verbosity.add_argument("-q", "--quiet", dest="log_level", action="store_const", const=logging.WARNING,
                           help="log only warnings and errors (no progress lines)")
    commands = parser.add_subparsers(dest="command", required=True)

    flops = commands.add_parser("flops", help="per-budget FLOPs table of a model (analytic cost model)")
    _add_model_arguments(flops)
    flops.add_argument("--budgets", type=int, nargs="*")
    flops.set_defaults(handler=command_flops)

    bench = commands.add_parser("bench", help="per-budget FLOPs and batch-1 latency, ratios within one run")
    bench.add_argument("--presets", nargs="+", default=["tiny", "paper"], choices=sorted(PRESETS))
    bench.add_argument("--budgets", type=int, nargs="+", default=[6, 8, 12, 16, 24])
    bench.add_argument("--repeats", type=int, default=0, help="timed runs per budget (default: 30 tiny, 5 paper)")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    bench.add_argument("--threads", type=int, default=0)
    bench.add_argument("--fast", action="store_true", help="also time the fast path (admn_core.fastpath)")
    bench.add_argument("--fast-dtype", choices=["float32", "bfloat16", "float16"],
                       help="the fast path's dtype (default: --dtype)")
    bench.add_argument("--batch", type=int, default=0,
                       help="also measure allocation-grouped batching vs a per-sample loop at this batch size")
    bench.add_argument("--distinct", type=int, default=4, help="distinct allocations in that batch (default 4)")
    bench.add_argument("--throughput-repeats", type=int, default=3)
    bench.add_argument("--json", help="also write the results as JSON here")
    bench.set_defaults(handler=command_bench)

    make = commands.add_parser("make-bundle", help="write a bundle with random weights (tests, demos, benchmarks)")
    _add_model_arguments(make)
    make.add_argument("--out", required=True)
    make.add_argument("--controllers", type=int, nargs="*", default=[6, 8, 12, 16])
    make.add_argument("--seed", type=int, default=0)
    make.set_defaults(handler=command_make_bundle)

    info = commands.add_parser("info", help="describe and check a bundle (reads only its header)")
    info.add_argument("bundle")
    info.set_defaults(handler=command_info)

    publish = commands.add_parser(
        "publish", help="publish a finished training run's bundle with its provenance and recorded test results",
        description="Writes OUT (the run's bundle with provenance.* metadata), OUT's .json (the recorded results: "
                    "mean error per method and budget, per condition, ADMN's blocks per condition) and .md (paper "
                    "Table 1 layout + provenance), re-evaluating the published bundle on the run's test split.")
    publish.add_argument("run", help="a finished run directory (<out>/<corruption> of `admn train`)")
    publish.add_argument("--out", required=True, help="the published bundle, e.g. models/NAME.safetensors")
    publish.add_argument("--half", action="store_true",
                         help="store the weights in float16 (half the size); fails if that moves any recorded "
                              "mean error by 1 %% or more")
    publish.add_argument("--overwrite", action="store_true", help="replace an already published model of that name")
    publish.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    publish.set_defaults(handler=command_publish)

    config = commands.add_parser("config", help="print or write a model config as YAML")
    _add_model_arguments(config)
    config.add_argument("--out")
    config.set_defaults(handler=command_config)

    convert = commands.add_parser("import-checkpoint", help="convert a .pth (weights only) to .safetensors")
    convert.add_argument("checkpoint")
    convert.add_argument("--out", required=True)
    convert.set_defaults(handler=command_import_checkpoint)

    for module_name in COMMAND_GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise
        module.register(commands)
    return parser


def configure_logging(level: int = logging.INFO) -> None:
    """Progress and diagnostics (training stages, caches, skipped measurements) on stderr. Debug messages only of
    admn_core itself: other libraries' debug output (fonts, plugins) would bury them."""
    logging.basicConfig(level=max(level, logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("admn_core").setLevel(level)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None and args.handler is command_bench:  # the program itself, not a call from Python code
        relaunch_with_spin_cap(["-m", "admn_core.cli", *sys.argv[1:]])  # the CPU fast path's split front needs it
    configure_logging(args.log_level)
    try:
        return args.handler(args)
    except (ConfigError, DataError, ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"admn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
