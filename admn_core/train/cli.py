"""`admn train` and `admn evaluate` (registered through admn_core.cli.COMMAND_GROUPS)."""

from __future__ import annotations

import argparse

from admn_core.data.corruptions.presets import PRESETS as CORRUPTION_PRESETS
from admn_core.presets import DATASET_PRESETS, PRESETS
from admn_core.train.config import STAGES


def command_train(args) -> int:
    import torch

    from admn_core.train.pipeline import run_pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    if (args.dataset is None) != (args.root is None):
        raise SystemExit("admn train: --dataset and --root go together (a dataset folder of that layout)")
    if args.dataset is not None and args.preset is not None and args.preset not in DATASET_PRESETS[args.dataset]:
        raise SystemExit(f"admn train: preset {args.preset!r} does not match the {args.dataset} reader; "
                         f"choose one of {list(DATASET_PRESETS[args.dataset])}")
    run_pipeline(args.out, preset=args.preset, corruptions=tuple(args.corruption or ()), quick=args.quick,
                 config_path=args.train_config, seed=args.seed, device=args.device, until=args.until,
                 dataset=args.dataset, root=args.root, budgets=tuple(args.budgets) if args.budgets else None)
    return 0


def command_evaluate(args) -> int:
    import torch

    from admn_core.train.pipeline import evaluate_from_disk

    if args.threads:
        torch.set_num_threads(args.threads)
    evaluate_from_disk(args.run)
    return 0


def register(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="run the whole pipeline: data → MAE → Stage 1 → controllers → baselines → eval → bundle",
        description="Generate (or reuse) the world caches, pretrain (MAE + LayerDrop), fine-tune with LayerDrop, "
                    "train the controllers and baselines, evaluate, and export <out>/bundle.safetensors. "
                    "Every stage is reused when its artifact exists (resumable).")
    train.add_argument("--preset", default=None, choices=sorted(PRESETS),
                       help="model preset (default: the training config's, else tiny)")
    train.add_argument("--out", default="artifacts/tiny", help="output directory (default artifacts/tiny)")
    train.add_argument("--corruption", nargs="+", choices=sorted(CORRUPTION_PRESETS),
                       help="corruption preset(s), on the world or a dataset; one run each under "
                            "<out>/<corruption>/ (default: the config's, gaussian)")
    train.add_argument("--dataset", choices=sorted(DATASET_PRESETS),
                       help="train on a dataset folder (--root) instead of the simulated world: from scratch, "
                            "corrupted on the fly by --corruption (default preset: "
                            + ", ".join(f"{d} {p[0]}" for d, p in sorted(DATASET_PRESETS.items())) + ")")
    train.add_argument("--root", help="the dataset folder (AVE: annotation files + New_Data/ or AVE/; MM-Fi: "
                                      "E*/S*/A*/; GDTM: train/ val/ test/)")
    train.add_argument("--budgets", type=int, nargs="+",
                       help="controller budgets in cost units (default: the training config's; for a dataset a "
                            "quarter, half and three quarters of the full model's cost)")
    train.add_argument("--quick", action="store_true", help="a seconds-long configuration for tests")
    train.add_argument("--train-config", help="pipeline settings YAML (e.g. config/train_tiny.yaml)")
    train.add_argument("--seed", type=int)
    train.add_argument("--device", help="cpu | cuda | cuda:N")
    train.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    train.add_argument("--until", choices=STAGES,
                       help="stop after this stage (e.g. Stage 1 on a GPU machine; rerun without it to continue)")
    train.set_defaults(handler=command_train)
    evaluate = subparsers.add_parser(
        "evaluate", help="(re)evaluate a finished pipeline run: tables, JSON, FLOPs/latency, figures",
        description="Rebuilds the run from <run>/settings.json, reusing every trained stage, and writes "
                    "<run>/eval/{results.md,results.json,error_vs_budget.png,allocations.png}.")
    evaluate.add_argument("--run", default="artifacts/tiny/gaussian", help="a run directory (<out>/<corruption>)")
    evaluate.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    evaluate.set_defaults(handler=command_evaluate)


_ = argparse  # the parser type comes from the caller
