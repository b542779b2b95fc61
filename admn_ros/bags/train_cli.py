"""`admn_train_bags`: train a model bundle on recorded bags, from the very sets admn_node forms from those topics.

    admn_train_bags --bags run1/ run2/ --val-bags run3/ --out DIR [--gt-topic TOPIC] [--max-gap 0.1]
                    [--preset tiny] [--train-config config/train_tiny_demo.yaml] [--corruption gaussian]
                    [--classes NAME ...] [--namespace NS] [--remap FROM:=TO ...] [--device cpu|cuda]
                    [--threads N] [--quiet]

Each bag set goes through admn_node's frame pipeline (admn_ros.bags.bag_dataset) into a sample cache under
DIR/bag_cache/{train,test} (reused while the bags and options are unchanged), then the training pipeline runs on
those caches: Stage 1 -> controllers -> evaluation on the held-out bags -> DIR/bundle.safetensors. A localization
preset learns from a pose topic (default /ground_truth/pose), a classification preset (tiny_ave, tiny_mmfi, ...) from
a std_msgs/Int32 class-label topic (default /ground_truth/class; a label holds until the next one), its classes named
by --classes or, without it, 0 .. the largest index in the training bags. Training and
evaluation samples are corrupted on the fly by the `--corruption` preset (default: the train config's), which also
supervises the controllers; `--corruption clean` trains on the recorded frames as they are. Evaluate the bundle as
the node would run it: `admn_replay_eval run4/ --model DIR/bundle.safetensors`.

Exit codes: 0 trained; 2 bad arguments, bags, topics or ground truth (the message names the bag and topic);
130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

_log = logging.getLogger("admn_ros.bags.train_cli")


def build_parser() -> argparse.ArgumentParser:
    from admn_ros.bags.bag_dataset import DEFAULT_GT_MAX_GAP_S

    parser = argparse.ArgumentParser(prog="admn_train_bags", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bags", nargs="+", required=True, help="training bags (rosbag2 folders or files)")
    parser.add_argument("--val-bags", nargs="+", required=True, help="held-out bags for the evaluation")
    parser.add_argument("--out", required=True, help="run directory (caches, stages, bundle.safetensors)")
    parser.add_argument("--gt-topic", default="",
                        help="ground-truth topic: poses (PoseStamped, PoseWithCovarianceStamped, PointStamped, "
                             "Odometry; default /ground_truth/pose) or, for a classifier, class indices "
                             "(std_msgs/Int32; default /ground_truth/class)")
    parser.add_argument("--max-gap", type=float, default=DEFAULT_GT_MAX_GAP_S,
                        help="seconds: a set's pose is interpolated between poses at most this far from its stamp")
    parser.add_argument("--preset", default=None, help="model preset (default: the train config's, else tiny)")
    parser.add_argument("--train-config", default=None, help="training settings YAML (admn train's format)")
    parser.add_argument("--corruption", default=None, help="corruption preset applied on the fly (clean: none)")
    parser.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                        help="a classifier's class names, in index order (default: 0 .. the largest label)")
    parser.add_argument("--namespace", default="", help="namespace of the bags' sensor topics")
    parser.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                        help="read input topic FROM from bag topic TO (repeatable)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: the train config's)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from admn_core.cli import configure_logging

    configure_logging()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("admn_train_bags: interrupted; rerun the same command to continue (finished stages are reused)",
              file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args) -> int:
    from admn_core.config import ConfigError
    from admn_core.data.errors import CacheFormatError
    from admn_core.train.pipeline import Pipeline, load_settings, settings_model_config
    from admn_ros.bags.bag_dataset import CacheOptions, write_bag_cache
    from admn_ros.bags.bag_reader import BagError, parse_remaps

    out = Path(args.out)
    try:
        settings = load_settings(args.train_config, preset=args.preset, corruption=args.corruption,
                                 device=args.device)
        config = settings_model_config(settings)
        if args.classes and config.head.task != "classification":
            raise ConfigError(f"--classes names a classifier's classes; preset {settings.preset!r} is a "
                              f"{config.head.task} model")
        options = CacheOptions(args.gt_topic, args.max_gap, args.namespace, tuple(parse_remaps(args.remap).items()))
        progress = None if args.quiet else sys.stderr
        splits = (("train", args.bags), ("test", args.val_bags))
        for split, bags in splits:
            check_same_bags(out, split, bags, config, options)
        check_same_classes(out, tuple(args.classes or ()))
        caches = {}
        for split, bags in splits:
            _log.info(f"{split}: {len(bags)} bag(s) through admn_node's frame pipeline")
            caches[split], _ = write_bag_cache(bags, out / "bag_cache" / split, config, options, progress)
        from admn_core.data.cache import WorldCache

        sizes = {split: len(WorldCache(path)) for split, path in caches.items()}
        data = {"source": "cache", "root": str(caches["train"]), "test_root": str(caches["test"]),
                "train": sizes["train"], "test": sizes["test"], "val": 0, "classes": tuple(args.classes or ())}
        settings = load_settings(args.train_config, preset=settings.preset, corruption=settings.corruption,
                                 device=settings.device, data=data)
        if args.quiet:
            settings = replace(settings, progress=False)
        pipeline = Pipeline(settings, out)
        pipeline.cache_splits()  # refuses a corruption preset that recorded frames cannot take, before training
    except (BagError, ConfigError, CacheFormatError, ValueError, OSError) as error:
        print(f"admn_train_bags: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    _log.info(f"training {settings.preset} on {sizes['train']} recorded samples, evaluating on {sizes['test']} "
              f"held-out ones; corruption preset {settings.corruption!r} applied on the fly (it also labels the "
              "controllers' corruption supervision)")
    pipeline.run()
    print(f"bundle: {out / 'bundle.safetensors'}; evaluate it as admn_node runs it: admn_replay_eval BAG --model "
          f"{out / 'bundle.safetensors'}")
    return 0


def check_same_bags(out: Path, split: str, bags, config, options) -> None:
    """A run directory whose stages were trained on other bags or options would be reused as it is: refused."""
    from admn_core.data.cache import WorldCache
    from admn_core.data.errors import CacheFormatError
    from admn_ros.bags.bag_dataset import cache_fingerprint

    try:
        recorded = WorldCache(out / "bag_cache" / split).manifest.get("source", {}).get("fingerprint")
    except CacheFormatError:
        return
    if (out / "settings.json").is_file() and recorded != cache_fingerprint(bags, config, options):
        raise ValueError(f"--out {out} holds a run trained on other {split} bags or options (or the bags changed "
                         "since); its finished stages would be reused: choose a new --out")


def check_same_classes(out: Path, classes: tuple[str, ...]) -> None:
    """A classifier trained with other class names (or another count) would be reused as it is: refused."""
    settings = out / "settings.json"
    if not settings.is_file():
        return
    recorded = tuple(json.loads(settings.read_text()).get("data", {}).get("classes", ()))
    if recorded != classes:
        raise ValueError(f"--out {out} holds a run trained with other classes ({', '.join(recorded) or 'unnamed'}); "
                         "its finished stages would be reused: choose a new --out")


if __name__ == "__main__":
    sys.exit(main())
