"""`admn_replay_eval`: evaluate a rosbag2 offline exactly as admn_node would, and write CSV, summary and plot.

    admn_replay_eval BAG --model tiny.safetensors [--budget 12 | bag | 0:36,20:16] [--out DIR] [--namespace NS]
                     [--remap FROM:=TO ...] [--device cpu|cuda] [--quiet]

BAG: a rosbag2 folder, its metadata.yaml, or a .db3/.mcap file. Per-frame rows go to OUT/frames.csv as they are
computed (an interrupted run leaves a valid partial file). Exit codes: 0 evaluated; 2 bad arguments, model or bag;
3 nothing was evaluated (no set ran); 130 interrupted (Ctrl-C), what was evaluated so far is written.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from admn_core.ros_interface import NODE_DEFAULTS

EXIT_BAD_INPUT = 2
EXIT_NOTHING_EVALUATED = 3
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="admn_replay_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bag", help="rosbag2 folder, its metadata.yaml, or a .db3/.mcap file")
    parser.add_argument("--model", required=True, help="model bundle (.safetensors)")
    parser.add_argument("--budget", default="12",
                        help="a fixed budget, 'bag' (the bag's /compute_budget) or a schedule 't:b,...' in seconds")
    parser.add_argument("--out", default="artifacts/replay", help="output directory (CSV, summary, PNG)")
    parser.add_argument("--namespace", default="", help="namespace of the bag's sensor topics")
    parser.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                        help="read input topic FROM from bag topic TO (repeatable; relative names resolve in "
                             "--namespace), e.g. node_1/camera/image_raw:=/camera/camera/color/image_raw")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--fast-path", action=argparse.BooleanOptionalAction, default=NODE_DEFAULTS.fast_path,
                        help="the inference path admn_node serves by default (its fast_path parameter), so results "
                             "match the node's bit for bit; --no-fast-path: the eager reference model")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


class UsageError(ValueError):
    """An argument that cannot work; the text names it."""


def prepare_out_dir(out: str | Path) -> Path:
    """Create `out` (and parents) and prove it writable, before anything slow runs."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise UsageError(f"--out {out}: cannot write results there ({error.strerror or error})") from None
    return out


def check_device(device: str) -> None:
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as error:
        raise UsageError(f"--device {device!r}: {error}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    if parsed.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {device}: only cpu and cuda are supported")


def check_bag_for_model(bag: str, model: str, namespace: str, remap: dict) -> None:
    """Open the bag and plan its topics for the bundle's config (read from the header, no weights loaded). A bundle
    whose config cannot be read is left to the model loader, which says what is wrong with it."""
    from admn_core.bundle import read_bundle_header
    from admn_core.config import ConfigError, ModelConfig
    from admn_ros.bags.bag_reader import open_bag, open_reader

    open_reader(bag).close()  # the bag's own problems first: they do not depend on the model
    try:
        config = ModelConfig.from_json(read_bundle_header(model)["config"])
    except (ConfigError, KeyError, ValueError):
        return
    open_bag(bag, config, namespace, remap=remap).close()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("admn_replay_eval: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args) -> int:
    from admn_core.bundle import BundleError
    from admn_ros.bags.bag_reader import BagError, parse_remaps
    from admn_ros.bags.replay_eval import BudgetSource, evaluate_bag
    from admn_ros.bags.replay_report import FrameCsv

    try:
        budget = BudgetSource.parse(args.budget)
        remap = parse_remaps(args.remap)
        out = prepare_out_dir(args.out)
        check_bag_for_model(args.bag, args.model, args.namespace, remap)
        check_device(args.device)
        from admn_core.runtime import InferenceEngine

        engine = InferenceEngine.from_bundle(args.model, args.device, fast=args.fast_path)
        with FrameCsv(out / "frames.csv", [spec.name for spec in engine.config.modalities]) as frames:
            result = evaluate_bag(args.bag, engine, budget, namespace=args.namespace, remap=remap,
                                  on_record=frames.write, progress=None if args.quiet else sys.stderr)
    except (BundleError, BagError, ValueError, OSError) as error:
        print(f"admn_replay_eval: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return _report(args, out, result, engine)


def _report(args, out: Path, result, engine) -> int:
    from admn_ros.bags.plots import plot_timeline
    from admn_ros.bags.replay_report import format_reading, format_summary, summarize, write_csv

    for warning in result.warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    if result.stream_error:
        print(f"WARNING: the bag stopped early ({result.stream_error}); results up to that point follow",
              file=sys.stderr)
    title = f"offline replay of {args.bag} (budget {args.budget})"
    summary = format_summary(summarize(result.records), title=title) + "\n" + format_reading(result)
    if result.warnings:
        summary += "\nwarnings\n" + "\n".join(f"  {warning}" for warning in result.warnings)
    print(summary)
    (out / "summary.txt").write_text(summary + "\n")
    csv_path = write_csv(result.records, out / "frames.csv", [spec.name for spec in engine.config.modalities])
    print(f"wrote {csv_path}, {out / 'summary.txt'}, "
          f"{plot_timeline(result.records, out / 'timeline.png', title=str(args.bag))}")
    if result.interrupted:
        return EXIT_INTERRUPTED
    if not result.ok_records():
        print(f"admn_replay_eval: nothing was evaluated ({result.sets} synchronized sets, none ran); see the "
              "warnings above", file=sys.stderr)
        return EXIT_NOTHING_EVALUATED
    return 0


if __name__ == "__main__":
    sys.exit(main())
