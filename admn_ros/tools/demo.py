"""admn_demo (`make run`): ADMN adapting live to a heating-up robot and corrupted sensors, end to end over ROS 2.

1. model: reuse artifacts/tiny/bundle.safetensors, else train it (`admn train --preset tiny --out artifacts/tiny`);
   if training is unavailable or fails, a RANDOM-WEIGHTS bundle stands in (announced loudly; errors are then
   meaningless, the adaptation is still real);
2. a trajectory bag with corruption episodes (`admn world-bag`: lights dimming, blur, rain, depth dropout, a noisy
   microphone), cached under artifacts/demo/;
3. admn_node (use_sim_time, following the bag's /clock) and thermal_monitor with a scripted heat-up / cool-down
   profile scaled to the bag (wall clock: its scripted profile starts at its first reading, which under sim time
   happens before the first /clock and would skip the whole script);
4. the bag replayed live over DDS with /clock (`ros2 bag play --clock` equivalent), a live terminal view of budget,
   allocation per modality and error;
5. a summary table (per budget, per corruption episode), per-frame CSV and a PNG plot under artifacts/demo/, and
   the same bag evaluated offline under the live budgets to show the two agree.

Environment: loopback-only discovery (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and a private ROS_DOMAIN_ID unless
set; logs under artifacts/demo/logs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from admn_core.ros_interface import DIAGNOSTICS_TOPIC, NODE_DEFAULTS
from admn_ros.tools.bringup import ProcessSpec, node_command, start_process

BAR = 12
LOUD = "!" * 100


# The first run trains a short version of every stage (minutes on 2 cores); `--full-training` runs the full one.
DEMO_TRAIN_CONFIG = "train_tiny_demo.yaml"

def log(text: str = "") -> None:
    print(text, flush=True)


class Timer:
    def __init__(self):
        self.steps: list[tuple[str, float]] = []
        self.started = time.monotonic()

    def step(self, name: str):
        timer = self

        class _Step:
            def __enter__(self):
                self.t = time.monotonic()
                log(f"== {name} ...")

            def __exit__(self, *exc):
                seconds = time.monotonic() - self.t
                timer.steps.append((name, seconds))
                log(f"== {name}: {seconds:.1f} s")

        return _Step()

    def table(self) -> str:
        lines = [f"  {name:42s} {seconds:7.1f} s" for name, seconds in self.steps]
        lines.append(f"  {'total':42s} {time.monotonic() - self.started:7.1f} s")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- model


def train_available(python: str = sys.executable) -> bool:
    probe = subprocess.run([python, "-m", "admn_core.cli", "train", "--help"], capture_output=True, text=True)
    return probe.returncode == 0


def train_settings(full_training: bool) -> list[str]:
    """`admn train` options: the shipped short schedule (config/train_tiny_demo.yaml), or none for the full one."""
    if full_training:
        return []
    from admn_ros.tools.share import config_file

    try:
        return ["--train-config", str(config_file(DEMO_TRAIN_CONFIG))]
    except FileNotFoundError as error:
        raise SystemExit(f"admn_demo: {error}. Reinstall the package, or pass --full-training to train the full "
                         "tiny pipeline (much longer)") from error


def get_bundle(args) -> tuple[Path, str]:
    """-> (bundle path, how it was obtained: reused | trained | RANDOM)."""
    if args.bundle:
        path = Path(args.bundle)
        if not path.is_file():
            raise SystemExit(f"admn_demo: --bundle {path} does not exist")
        return path, "given"
    trained = Path(args.train_out) / "bundle.safetensors"
    if trained.is_file() and not args.random_bundle:
        return trained, "reused"
    if not args.random_bundle:
        if train_available():
            settings = train_settings(args.full_training)
            log(f"training the tiny preset: admn train --preset tiny --out {args.train_out} {' '.join(settings)} "
                "(first run only)")
            threads = ["--threads", str(args.threads)] if args.threads else []
            done = subprocess.run([sys.executable, "-m", "admn_core.cli", "train", "--preset", "tiny", "--out",
                                   args.train_out, *settings, *threads])
            if done.returncode == 0 and trained.is_file():
                return trained, "trained"
            reason = f"`admn train` failed (exit code {done.returncode}) or wrote no {trained}"
        else:
            reason = "`admn train` is not available in this checkout"
    else:
        reason = "--random-bundle was given"
    random_path = Path(args.out) / "random_tiny.safetensors"
    log(LOUD)
    log(f"!!  NO TRAINED MODEL: {reason}.")
    log("!!  Using a RANDOM-WEIGHTS tiny bundle: the budget/allocation adaptation is real, the ERRORS ARE MEANINGLESS.")
    log(LOUD)
    if not random_path.is_file():
        random_path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "admn_core.cli", "make-bundle", "--preset", "tiny", "--out",
                        str(random_path)], check=True)
    return random_path, "RANDOM"


# ------------------------------------------------------------------------------------------------- world


def get_bag(out: Path, duration: float, rate: float, seed: int) -> tuple[Path, bool]:
    bag = out / f"bag_{duration:g}s_{rate:g}hz_seed{seed}"
    if (bag / "metadata.yaml").is_file():
        return bag, True
    if bag.exists():
        shutil.rmtree(bag)  # a half-written bag from an interrupted run
    from admn_core.data.cli import world_bag  # what `admn world-bag` runs

    world_bag(bag, duration, seed, "sqlite3", "64", rate)
    return bag, False


def write_thermal_profile(path: Path, duration: float) -> Path:
    """Heat-up to 86 °C by 50 % of the bag, hold, cool down to 45 °C by the end (thermal_monitor's YAML format)."""
    points = [(0.0, 45.0), (0.12, 58.0), (0.30, 72.0), (0.45, 86.0), (0.55, 86.0), (0.80, 60.0), (0.92, 45.0)]
    lines = ["# admn_demo: scripted heat-up / cool-down scaled to the bag (seconds since thermal_monitor started)",
             "loop: false", "points:"]
    lines += [f"  - [{fraction * duration:.2f}, {celsius:.1f}]" for fraction, celsius in points]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def thermal_command(profile: Path, duration: float) -> ProcessSpec:
    """thermal_monitor's command: the shipped file, replaying `profile` on the wall clock."""
    return node_command("thermal_monitor", overrides={
        "source": "scripted", "profile_file": profile, "sample_period_s": 0.25, "publish_period_s": 1.0,
        "recover_interval_s": round(max(0.5, 0.04 * duration), 2), "use_sim_time": False})


# --------------------------------------------------------------------------------------------- live view


def bar(active: int, total: int = BAR) -> str:
    active = max(0, min(total, active))
    return "█" * active + "░" * (total - active)


def render_view(state: dict, modalities, duration: float) -> list[str]:
    """The live view's lines (pure: tested)."""
    record = state.get("record")
    temperature = state.get("temperature")
    temp = f"{temperature:5.1f} °C" if temperature is not None else "   -- °C"
    budget = state.get("budget")
    lines = [f"bag t {state.get('t', 0.0):5.1f}/{duration:.0f} s   thermal {temp}   /compute_budget "
             f"{budget if budget is not None else '--':>3}   outputs {state.get('outputs', 0)}"]
    for name in modalities:
        active = len(record.active_blocks.get(name, [])) if record is not None else 0
        lines.append(f"  {name:6s} {bar(active)} {active:2d}/12")
    if record is not None:
        error = f"{record.error_cm:6.1f} cm" if record.error_cm is not None else "   n/a"
        mean = state.get("mean_error")
        mean_text = f"{mean:6.1f} cm" if mean is not None else "   n/a"
        lines.append(f"  budget {record.budget} used {record.budget_used} ({record.source})   error {error}   "
                     f"running mean {mean_text}   {record.episode or ''}")
    else:
        lines.append("  waiting for the first output ...")
    return lines


class LiveView:
    def __init__(self, modalities, duration: float, ground_truth: dict, labels: dict, interactive: bool):
        self.modalities, self.duration = modalities, duration
        self.ground_truth, self.labels = ground_truth, labels
        self.interactive = interactive
        self.state = {"outputs": 0}
        self.errors: list[float] = []
        self.lock = threading.Lock()
        self._printed = 0
        self._last_plain = -1e9
        self.recorder = None  # OutputRecorder watching /compute_budget

    def on_output(self, record) -> None:
        import math

        truth = self.ground_truth.get(record.stamp_ns)
        if truth is not None and record.position is not None:
            record.error_cm = 100.0 * math.dist(record.position, truth)
            self.errors.append(record.error_cm)
        record.episode = self.labels.get(record.stamp_ns, "")
        with self.lock:
            self.state["record"] = record
            self.state["outputs"] += 1
            self.state["mean_error"] = sum(self.errors) / len(self.errors) if self.errors else None

    def on_progress(self, bag_t: float) -> None:
        with self.lock:
            self.state["t"] = bag_t
            if self.recorder is not None:
                self.state["budget"] = self.recorder.latest_budget
            lines = render_view(self.state, self.modalities, self.duration)
        if self.interactive:
            if self._printed:
                sys.stdout.write(f"\x1b[{self._printed}F")
            sys.stdout.write("".join(f"\x1b[2K{line}\n" for line in lines))
            sys.stdout.flush()
            self._printed = len(lines)
        elif bag_t - self._last_plain >= 5.0:
            self._last_plain = bag_t
            log(" | ".join(line.strip() for line in lines))


# ------------------------------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="admn_demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="artifacts/demo", help="where the bag, CSV, summary and plot go")
    parser.add_argument("--train-out", default="artifacts/tiny", help="admn train output (bundle.safetensors)")
    parser.add_argument("--bundle", help="use this bundle instead of the trained tiny one")
    parser.add_argument("--random-bundle", action="store_true", help="skip training: random weights (smoke tests)")
    parser.add_argument("--full-training", action="store_true",
                        help="train with the full tiny pipeline instead of config/train_tiny_demo.yaml")
    parser.add_argument("--duration", type=float, default=45.0, help="bag length in seconds (default 45)")
    parser.add_argument("--rate", type=float, default=15.0, help="camera/depth rate of the bag (Hz)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of admn_node (1 suits 2 cores)")
    parser.add_argument("--no-offline", action="store_true", help="skip the offline re-evaluation / agreement")
    return parser.parse_args(argv)


def _isolate_environment(out: Path) -> None:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ.setdefault("ROS_LOG_DIR", str((out / "logs").resolve()))


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _isolate_environment(out)
    timer = Timer()

    with timer.step("model bundle"):
        bundle, origin = get_bundle(args)
        log(f"bundle {bundle} ({origin})")
    with timer.step("trajectory bag (admn world-bag)"):
        bag, cached = get_bag(out, args.duration, args.rate, args.seed)
        log(f"bag {bag} ({'cached' if cached else 'written'})")

    from admn_core.bundle import load_bundle

    config = load_bundle(bundle).config
    from admn_ros.bags.live_replay import run_live_replay, start_node, stop_process
    from admn_ros.bags.plots import plot_timeline
    from admn_ros.bags.replay_eval import read_ground_truth
    from admn_ros.bags.replay_report import format_summary, summarize, write_csv

    poses, labels = read_ground_truth(bag, config)
    view = LiveView([m.name for m in config.modalities], args.duration, {p[0]: p[1:] for p in poses},
                    {label[0]: label[2] for label in labels}, sys.stdout.isatty())
    profile = write_thermal_profile(out / "thermal_profile.yaml", args.duration)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    processes = {}

    def watch_thermal(recorder):
        from diagnostic_msgs.msg import DiagnosticArray

        def on_diagnostics(msg):
            for status in msg.status:
                if status.name.startswith("thermal_monitor"):
                    values = {kv.key: kv.value for kv in status.values}
                    try:
                        view.state["temperature"] = float(values.get("temperature_c", "nan"))
                    except ValueError:
                        view.state["temperature"] = None
        recorder.node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, on_diagnostics, 10)
        view.recorder = recorder

    def before_play(recorder):
        processes["thermal_monitor"] = start_process(thermal_command(profile.resolve(), args.duration),
                                                     logs / "thermal_monitor.log")
        deadline = time.monotonic() + 20.0
        while recorder.latest_budget is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if recorder.latest_budget is None:
            log("warning: no /compute_budget from thermal_monitor yet; the node starts on its default budget")

    try:
        with timer.step("start admn_node (use_sim_time)"):
            processes["admn_node"] = start_node(bundle, use_sim_time=True, log_path=logs / "admn_node.log",
                                                parameters={"torch_threads": args.threads, "default_budget": 36})
        with timer.step(f"live replay ({args.duration:g} s of bag at 1x, with /clock)"):
            result = run_live_replay(bag, config, on_output=view.on_output, on_progress=view.on_progress,
                                     watch_budget=True, recorder_hook=watch_thermal, before_play=before_play,
                                     node_process=processes["admn_node"])
            view.on_progress(args.duration)
    finally:
        for process in processes.values():
            stop_process(process)
    for warning in result.warnings:
        log(f"note: {warning}")

    with timer.step("summary, CSV and plot"):
        records = result.records
        csv_path = write_csv(records, out / "live_frames.csv")
        summary_text = format_summary(summarize(records), title=f"ADMN live replay of {bag.name} "
                                                                f"(model: {bundle.name}, {origin})")
        (out / "summary.txt").write_text(summary_text + "\n")
        plot = plot_timeline(records, out / "live_timeline.png",
                             title=f"ADMN live replay: error (cm), thermal budget and blocks per modality "
                                   f"[{origin} model]")
    figure = (f"outputs for {result.output_fraction:.1%} of the bag's {len(result.expected_stamps)} synchronized "
              f"sets at 1x (max publish lag {result.play.max_lag_ms:.0f} ms)")
    agreement = None
    if not args.no_offline:
        with timer.step("offline evaluation of the same bag under the live budgets"):
            agreement = offline_agreement(bag, bundle, records, out, args.threads)
    log("")
    log(summary_text)
    log("")
    log(figure)
    if agreement:
        log(agreement)
    log(f"wrote {csv_path}, {out / 'summary.txt'}, {plot}")
    if origin == "RANDOM":
        log(LOUD)
        log("!!  These errors come from a RANDOM-WEIGHTS model (no trained bundle was available).")
        log(LOUD)
    log("timings:")
    log(timer.table())
    return 0


def offline_agreement(bag, bundle, live_records, out: Path, threads: int = 1) -> str:
    import torch

    from admn_core.runtime import InferenceEngine
    from admn_ros.bags.replay_eval import BudgetSource, evaluate_bag
    from admn_ros.bags.replay_report import compare, format_comparison, write_csv

    if threads > 0:
        torch.set_num_threads(threads)
    engine = InferenceEngine.from_bundle(bundle, fast=NODE_DEFAULTS.fast_path)  # the node's path: same numbers
    budgets = {r.stamp_ns: r.budget for r in live_records if r.ok}
    result = evaluate_bag(bag, engine, BudgetSource("per_stamp", per_stamp=budgets))
    write_csv(result.records, out / "offline_frames.csv")
    return format_comparison(compare(result.records, live_records))


if __name__ == "__main__":
    sys.exit(main())
