"""`admn_replay_eval`: evaluate a rosbag2 offline exactly as admn_node would, and write CSV, summary and plot.

    admn_replay_eval BAG --model tiny.safetensors [--budget 12 | bag | 0:36,20:16] [--out DIR] [--namespace NS]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="admn_replay_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bag", help="rosbag2 directory (sqlite3 or mcap)")
    parser.add_argument("--model", required=True, help="model bundle (.safetensors)")
    parser.add_argument("--budget", default="12",
                        help="a fixed budget, 'bag' (the bag's /compute_budget) or a schedule 't:b,...' in seconds")
    parser.add_argument("--out", default="artifacts/replay", help="output directory (CSV, summary, PNG)")
    parser.add_argument("--namespace", default="", help="namespace of the bag's sensor topics")
    parser.add_argument("--device", default="cpu")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from admn_core.bundle import BundleError
    from admn_core.runtime import InferenceEngine
    from admn_ros.bag_reader import BagError
    from admn_ros.plots import plot_timeline
    from admn_ros.replay_eval import BudgetSource, evaluate_bag
    from admn_ros.replay_report import format_summary, summarize, write_csv

    try:
        engine = InferenceEngine.from_bundle(args.model, args.device)
        result = evaluate_bag(args.bag, engine, BudgetSource.parse(args.budget), namespace=args.namespace)
    except (BundleError, BagError, ValueError) as error:
        print(f"admn_replay_eval: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for warning in result.warnings:
        print(f"warning: {warning}")
    if result.stream_error:
        print(f"warning: the bag stopped early ({result.stream_error}); results up to that point follow")
    summary = format_summary(summarize(result.records), title=f"offline replay of {args.bag} (budget {args.budget})")
    print(summary)
    (out / "summary.txt").write_text(summary + "\n")
    print(f"wrote {write_csv(result.records, out / 'frames.csv')}, {out / 'summary.txt'}, "
          f"{plot_timeline(result.records, out / 'timeline.png', title=str(args.bag))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
