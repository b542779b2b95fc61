"""`admn world-*` subcommands. `register(subparsers)` adds them to the main command's argparse subparsers.

Each subcommand is a plain function too: world_generate, world_bench, world_inspect, world_bag, world_probe.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from admn_core.data.corruptions.presets import PRESETS, get_preset
from admn_core.data.errors import WorldConfigError
from admn_core.data.world import World, WorldConfig


def parse_resolution(text: str | int | tuple) -> tuple[int, int]:
    """"64" → (64, 64); "640x480" (width × height) → (480, 640) as (H, W); a tuple is (H, W)."""
    if isinstance(text, tuple):
        return text
    if isinstance(text, int):
        return (text, text)
    parts = str(text).lower().split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise WorldConfigError(f"resolution must be N or WIDTHxHEIGHT, got {text!r}") from None
    if len(numbers) == 1:
        return (numbers[0], numbers[0])
    if len(numbers) == 2:
        return (numbers[1], numbers[0])
    raise WorldConfigError(f"resolution must be N or WIDTHxHEIGHT, got {text!r}")


def _world_config(resolution, seed: int = 0) -> WorldConfig:
    return WorldConfig(image_size=parse_resolution(resolution), seed=seed)


def world_generate(out: str | Path, samples: int = 1000, preset: str = "mixed", seed: int = 0,
                   resolution="64", workers: int = 1, overwrite: bool = False) -> Path:
    from admn_core.data.cache import write_cache

    return write_cache(out, samples, preset, seed, _world_config(resolution), workers, overwrite)


def world_bench(seconds: float = 3.0, workers: int | None = None, preset: str = "mixed", resolution="64") -> float:
    from admn_core.data.bench import benchmark

    rate = benchmark(seconds, workers, preset, _world_config(resolution))
    cpu_rate = benchmark(seconds, workers, preset, _world_config(resolution), cpu_rate=True)
    print(f"{rate:.0f} fully corrupted three-view samples/s (preset {preset}, {parse_resolution(resolution)}, "
          f"{workers or 'default'} workers); {cpu_rate:.0f}/s per CPU-second summed over workers "
          f"(the rate on otherwise idle cores)")
    return rate


def world_inspect(out: str | Path, preset: str = "mixed", index: int = 0, seed: int = 0, resolution="64",
                  cache: str | Path | None = None, showcase: bool = False, small: bool = False) -> Path:
    """Contact sheet of one sample (from the world or a cache), or with --showcase one row per preset condition."""
    from admn_core.data.contact_sheet import contact_sheet

    if cache is not None:
        from admn_core.data.cache import WorldCache

        store = WorldCache(cache)
        rows = [(store.sample(index), store.target(index))]
        title = f"{cache} sample {index}"
    else:
        world = World(_world_config(resolution))
        chosen = get_preset(preset)
        if showcase:
            rows = [world.generate(index + row, chosen, seed,
                                   plan=chosen.expand(condition, world.config.sensor_kinds, world.config.views))
                    for row, condition in enumerate(chosen.showcase)]
        else:
            rows = [world.generate(index, chosen, seed)]
        title = f"preset {preset}: {chosen.description}"
    path = contact_sheet(rows, out, title=title, tile=96 if small else 128, palette_colors=96 if small else None)
    print(f"wrote {path}")
    return path


def world_bag(out: str | Path, duration: float = 20.0, seed: int = 0, storage: str = "sqlite3",
              resolution="64", rate: float = 15.0) -> Path:
    from admn_core.data.bag_writer import write_trajectory_bag

    return write_trajectory_bag(out, duration, seed, storage, _world_config(resolution), camera_rate_hz=rate, log=print)


def world_probe(train: int = 1500, test: int = 400, epochs: int = 12, seed: int = 0, resolution="64",
                modalities: tuple[str, ...] | None = None):
    from admn_core.data.probe import run_probe

    return run_probe(train, test, epochs, seed, _world_config(resolution), modalities)


def register(subparsers) -> None:
    """Add world-generate, world-bench, world-inspect, world-bag and world-probe to an argparse subparsers."""
    presets = sorted(PRESETS)

    def add(name: str, help_text: str, handler) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)

        def run(args) -> int:  # the `admn` command expects `handler(args) -> exit code`
            handler(args)
            return 0

        parser.set_defaults(func=handler, handler=run)  # func: the plain function (returns its result)
        return parser

    def resolution_arg(parser):
        parser.add_argument("--resolution", default="64", help="N (square) or WIDTHxHEIGHT, e.g. 640x480 (default 64)")

    p = add("world-generate", "generate a cached simulated dataset", lambda a: world_generate(
        a.out, a.samples, a.preset, a.seed, a.resolution, a.workers, a.overwrite))
    p.add_argument("--out", required=True, help="cache directory to create")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--preset", choices=presets, default="mixed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--overwrite", action="store_true")
    resolution_arg(p)

    p = add("world-bench", "print fully corrupted samples/s", lambda a: world_bench(
        a.seconds, a.workers, a.preset, a.resolution))
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: min(2, CPUs))")
    p.add_argument("--preset", choices=presets, default="mixed")
    resolution_arg(p)

    p = add("world-inspect", "write a PNG contact sheet of a sample", lambda a: world_inspect(
        a.out, a.preset, a.index, a.seed, a.resolution, a.cache, a.showcase, a.small))
    p.add_argument("--out", required=True, help="PNG path")
    p.add_argument("--preset", choices=presets, default="mixed")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="inspect sample --index of this cache instead of generating")
    p.add_argument("--showcase", action="store_true", help="one row per representative condition of the preset")
    p.add_argument("--small", action="store_true", help="96 px tiles, indexed colours (small PNGs for docs)")
    resolution_arg(p)

    p = add("world-bag", "write a trajectory rosbag2 with corruption episodes", lambda a: world_bag(
        a.out, a.duration, a.seed, a.storage, a.resolution, a.rate))
    p.add_argument("--out", required=True, help="rosbag2 folder to create (also when named *.bag; admn_replay_eval "
                                                "reads it as a rosbag2 folder)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.add_argument("--rate", type=float, default=15.0, help="camera/depth rate in Hz")
    resolution_arg(p)

    p = add("world-probe", "single-modality localization probe, clean vs corrupted", lambda a: world_probe(
        a.train, a.test, a.epochs, a.seed, a.resolution, tuple(a.modalities) if a.modalities else None))
    p.add_argument("--train", type=int, default=1500)
    p.add_argument("--test", type=int, default=400)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modalities", nargs="*", default=None, help="subset of rgb depth mic")
    resolution_arg(p)
