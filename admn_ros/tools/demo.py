"""admn_demo (`make run`): ADMN adapting live to a heating-up robot and corrupted sensors, end to end over ROS 2,
against Naive Allocation (the same model with every budget split evenly) on the same frames and budgets.

1. model: the shipped reference model (share/admn_ros/models/reference_tiny_rgbd.safetensors; no training);
   `--bundle PATH` another one; `--retrain` trains the reference recipe (config/train_reference.yaml, about 40
   minutes on 2 CPU cores) into artifacts/reference and uses that; `--random-bundle` RANDOM weights for smoke tests
   (announced loudly);
2. a trajectory bag of the simulated world (`admn_core.data.bag_writer`) with the reference model's conditions:
   daylight saturating the depth camera, the lights dimming (RGB dark, depth back), daylight again; cached under
   artifacts/demo/;
3. Naive Allocation evaluated offline on the bag (admn_node's own frame pipeline) at the budgets thermal_monitor's
   policy gives each frame's moment under the scripted profile, and at its neighbours in time, so every frame the
   node answers live can be compared under the budget it was answered with;
4. admn_node and thermal_monitor, both following the bag's /clock (use_sim_time): the scripted heat-up / cool-down
   profile, scaled to the bag, starts with the first /clock, so budgets follow bag time;
5. the bag replayed live over DDS with /clock (`ros2 bag play --clock` equivalent), a live terminal view of budget,
   allocation per modality, ADMN's and Naive's error on the frame just answered and their running means;
6. ADMN vs Naive per corruption episode × budget and per episode, per-frame CSVs and a PNG timeline under
   artifacts/demo/, and the same bag evaluated offline by ADMN under the live budgets to show the two agree.

Environment: loopback-only discovery (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and a private ROS_DOMAIN_ID unless
set; logs under artifacts/demo/logs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from admn_core.ros_interface import DIAGNOSTICS_TOPIC, NODE_DEFAULTS
from admn_ros.tools.bringup import ProcessSpec, node_command, start_process
from admn_ros.tools.share import config_file, reference_model

BAR = 12
LOUD = "!" * 100

# `--retrain`: the shipped reference model's recipe, trained into RETRAIN_OUT (`admn train` also copies the bundle of
# its first corruption run to <out>/bundle.safetensors).
RETRAIN_CONFIG = "train_reference.yaml"
RETRAIN_OUT = Path("artifacts/reference")
RETRAIN_TIME = "about 40 minutes on 2 CPU cores"  # the recipe's measured training time (docs/reference_model.md)
# The live budget of a frame stamped t is thermal_monitor's budget at bag time t, give or take the script's start
# after the first /clock and a sample period (earlier), and delivery plus the node's queue (later).
BUDGET_EARLY_S = 1.0
BUDGET_LATE_S = 1.5
NAIVE = "Naive Allocation"


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
        lines = [f"  {name:58s} {seconds:7.1f} s" for name, seconds in self.steps]
        lines.append(f"  {'total':58s} {time.monotonic() - self.started:7.1f} s")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- model


def retrain_command(out: Path = RETRAIN_OUT, python: str = sys.executable) -> list[str]:
    """`admn train` with the reference recipe from the share directory (SystemExit when it is not installed)."""
    try:
        recipe = config_file(RETRAIN_CONFIG)
    except FileNotFoundError as error:
        raise SystemExit(f"admn_demo: --retrain needs {error}. Reinstall the package") from error
    return [python, "-m", "admn_core.cli", "train", "--train-config", str(recipe), "--out", str(out)]


def retrain(out: Path = RETRAIN_OUT) -> Path:
    command = retrain_command(out)
    log(f"training the reference recipe ({RETRAIN_TIME}; resumes a run left in {out}): {' '.join(command[1:])}")
    done = subprocess.run(command)
    bundle = out / "bundle.safetensors"
    if done.returncode != 0 or not bundle.is_file():
        raise SystemExit(f"admn_demo: `admn train` failed (exit code {done.returncode}) or wrote no {bundle}; "
                         "rerun with --retrain to resume it, or run without it to use the shipped reference model")
    return bundle


def random_weights_bundle(out: Path) -> Path:
    path = out / "random_tiny.safetensors"
    log(LOUD)
    log("!!  --random-bundle: a RANDOM-WEIGHTS tiny bundle: the budget/allocation adaptation is real, the ERRORS ARE "
        "MEANINGLESS.")
    log(LOUD)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "admn_core.cli", "make-bundle", "--preset", "tiny", "--out", str(path)],
                       check=True)
    return path


def get_bundle(args) -> tuple[Path, str]:
    """-> (bundle path, where it came from: given | reference | retrained | RANDOM)."""
    if args.bundle:
        path = Path(args.bundle)
        if not path.is_file():
            raise SystemExit(f"admn_demo: --bundle {path} does not exist")
        return path, "given"
    if args.random_bundle:
        return random_weights_bundle(Path(args.out)), "RANDOM"
    if args.retrain:
        return retrain(), "retrained"
    try:
        return reference_model(), "reference"
    except FileNotFoundError as error:
        raise SystemExit(f"admn_demo: the shipped reference model is missing: {error}. Pass --bundle PATH, "
                         f"--retrain (trains config/{RETRAIN_CONFIG}, {RETRAIN_TIME}) or "
                         "--random-bundle (random weights: the plumbing only)") from error


# ------------------------------------------------------------------------------------------------- world


def demo_episodes(duration: float):
    """The reference model's world, the paper's GDTM lowlight scenario: in ordinary light the IR depth camera is
    saturated; as the lights dim, the depth recovers and the RGB goes dark; then the light comes back while the robot
    is still at its hottest, so the smallest budget meets both conditions."""
    from admn_core.data.trajectory_recording import Episode

    d = duration
    dim_start, dim_end = 0.15 * d, 0.50 * d
    # The dimming ramp's gamma passes 1.5 (visibly darker) 2.6 % of the episode into it and falls below it 2.6 %
    # before its end: the daylight episodes hand over there.
    handover = 0.026 * (dim_end - dim_start)
    return (Episode(0.0, dim_start + handover, "depth", "saturation", 1.0,
                    description="daylight saturating the IR depth"),
            Episode(dim_start, dim_end, "rgb", "lowlight", 100.0, ramp=True, description="lights dimming"),
            Episode(dim_end - handover, d, "depth", "saturation", 1.0, description="daylight again"))


def get_bag(out: Path, duration: float, rate: float, seed: int) -> tuple[Path, bool]:
    episodes = demo_episodes(duration)
    # The cached bag is named after its episodes too: a bag cached under another episode script is not reused.
    script = hashlib.sha256(repr(episodes).encode()).hexdigest()[:8]
    bag = out / f"bag_{duration:g}s_{rate:g}hz_seed{seed}_episodes{script}"
    if (bag / "metadata.yaml").is_file():
        return bag, True
    if bag.exists():
        shutil.rmtree(bag)  # a half-written bag from an interrupted run
    from admn_core.data.bag_writer import write_trajectory_bag

    write_trajectory_bag(bag, duration, seed, camera_rate_hz=rate, episodes=episodes, log=print)
    return bag, False


def write_thermal_profile(path: Path, duration: float) -> Path:
    """Heat-up to 86 °C by 30 % of the bag, hold to 65 % (the smallest budget through the darkest light and the
    daylight's return), cool down to 45 °C by 92 % (thermal_monitor's YAML format)."""
    points = [(0.0, 45.0), (0.08, 58.0), (0.18, 72.0), (0.30, 86.0), (0.65, 86.0), (0.80, 60.0), (0.92, 45.0)]
    lines = ["# admn_demo: scripted heat-up / cool-down scaled to the bag (seconds since the bag's first /clock)",
             "loop: false", "points:"]
    lines += [f"  - [{fraction * duration:.2f}, {celsius:.1f}]" for fraction, celsius in points]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def thermal_overrides(profile: Path, duration: float) -> dict:
    """thermal_monitor's parameters over its shipped file: `profile` on the bag's clock (the script starts with the
    first /clock), sampled often, recovering one level per 4 % of the bag."""
    return {"source": "scripted", "profile_file": profile, "sample_period_s": 0.25, "publish_period_s": 1.0,
            "recover_interval_s": round(max(0.5, 0.04 * duration), 2), "use_sim_time": True}


def thermal_command(profile: Path, duration: float) -> ProcessSpec:
    return node_command("thermal_monitor", overrides=thermal_overrides(profile, duration))


# ------------------------------------------------------------------- thermal budgets and the Naive baseline


def thermal_policy(overrides: dict):
    """The budget table thermal_monitor runs with: its shipped config/thermal_monitor.yaml under `overrides`."""
    import yaml

    from admn_ros.nodes.thermal_monitor import PolicyConfig

    document = yaml.safe_load(config_file("thermal_monitor.yaml").read_text())
    (values,) = [section["ros__parameters"] for section in document.values()]
    return PolicyConfig.from_values({**values, **overrides}.__getitem__)


def budget_schedule(profile: Path, duration: float, overrides: dict) -> list[tuple[float, int]]:
    """[(seconds since the bag's start, budget)] at every change: thermal_monitor's policy run over the scripted
    profile at its sampling period, as the node runs it on the bag's clock."""
    from admn_ros.nodes.thermal_monitor import BudgetPolicy, ScriptedProfile

    script = ScriptedProfile.from_yaml(str(profile))
    policy = BudgetPolicy(thermal_policy(overrides))
    period = float(overrides["sample_period_s"])
    schedule: list[tuple[float, int]] = []
    for step in range(int(duration / period) + 1):
        decision = policy.update(script.celsius_at(step * period), step * period)
        if not schedule or schedule[-1][1] != decision.budget:
            schedule.append((step * period, decision.budget))
    return schedule


def budgets_around(schedule: list[tuple[float, int]], t: float, early_s: float = BUDGET_EARLY_S,
                   late_s: float = BUDGET_LATE_S) -> set[int]:
    """Every budget `schedule` holds at some time in [t - early_s, t + late_s]."""
    in_force = [budget for start, budget in schedule if start <= t - early_s][-1:]
    return set(in_force) | {budget for start, budget in schedule if t - early_s < start <= t + late_s}


def naive_plan(frame_times: dict[int, float], schedule: list[tuple[float, int]]) -> dict[int, list[int]]:
    """{budget: [stamps]}: each frame (stamp -> seconds since the bag's start) at every budget live may give it."""
    plan: dict[int, list[int]] = {}
    for stamp, t in sorted(frame_times.items()):
        for budget in budgets_around(schedule, t):
            plan.setdefault(budget, []).append(stamp)
    return plan


@contextlib.contextmanager
def quiet(logger_name: str):
    """The offline pipeline's warnings muted: frames left out of a pass are skipped by design."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def evaluate_naive(bag: Path, bundle: Path, plan: dict[int, list[int]], threads: int = 1) -> list:
    """Naive Allocation on admn_node's inference path over `bag`: one pass per budget over the frames `plan` gives
    it -> FrameRecords (ground truth attached), several per frame near a budget change."""
    import torch

    from admn_core.runtime import InferenceEngine
    from admn_ros.bags.replay_eval import BudgetSource, evaluate_bag

    if threads > 0:
        torch.set_num_threads(threads)
    engine = InferenceEngine.from_bundle(bundle, fast=NODE_DEFAULTS.fast_path, allocation="naive")
    records = []
    with quiet("admn_ros.bags.replay_eval"):
        for budget, stamps in sorted(plan.items(), reverse=True):
            result = evaluate_bag(bag, engine, BudgetSource("per_stamp", per_stamp=dict.fromkeys(stamps, budget)))
            if result.interrupted:  # evaluate_bag keeps what it had on Ctrl-C; the demo stops
                raise KeyboardInterrupt
            records += result.ok_records()
            log(f"   {NAIVE} at budget {budget:2d}: {len(result.ok_records())} frames in {result.seconds:.1f} s")
    return records


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
        lines.append(f"  budget {record.budget} used {record.budget_used} ({record.source})   {record.episode or ''}")
        means = state.get("means")
        lines.append(f"  error ADMN {_cm(record.error_cm)}  Naive {_cm(state.get('naive_error'))} (same frame and "
                     f"budget)   running means ADMN {_cm(means and means[0])}  Naive {_cm(means and means[1])} over "
                     f"{state.get('paired', 0)} frames")
    else:
        lines.append("  waiting for the first output ...")
    return lines


def _cm(value) -> str:
    return f"{value:6.1f} cm" if value is not None else "   n/a   "


class LiveView:
    """The terminal view. `naive`: {(stamp, budget): Naive Allocation's error in cm} from the offline pass."""

    def __init__(self, modalities, duration: float, ground_truth: dict, labels: dict, interactive: bool,
                 naive: dict | None = None):
        self.modalities, self.duration = modalities, duration
        self.ground_truth, self.labels = ground_truth, labels
        self.naive = naive or {}
        self.interactive = interactive
        self.state = {"outputs": 0}
        self.paired_sums = [0.0, 0.0]  # ADMN, Naive: sums of errors over frames both answered
        self.lock = threading.Lock()
        self._printed = 0
        self._last_plain = -1e9
        self.recorder = None  # OutputRecorder watching /compute_budget

    def on_output(self, record) -> None:
        import math

        truth = self.ground_truth.get(record.stamp_ns)
        if truth is not None and record.position is not None:
            record.error_cm = 100.0 * math.dist(record.position, truth)
        record.episode = self.labels.get(record.stamp_ns, "")
        naive = self.naive.get((record.stamp_ns, record.budget))
        with self.lock:
            self.state["record"] = record
            self.state["outputs"] += 1
            self.state["naive_error"] = naive
            if naive is not None and record.error_cm is not None:
                self.paired_sums[0] += record.error_cm
                self.paired_sums[1] += naive
                self.state["paired"] = self.state.get("paired", 0) + 1
                self.state["means"] = tuple(total / self.state["paired"] for total in self.paired_sums)

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
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--bundle", help="use this bundle instead of the shipped reference model")
    model.add_argument("--retrain", action="store_true",
                       help=f"train config/{RETRAIN_CONFIG} into {RETRAIN_OUT} ({RETRAIN_TIME}; resumable) and use "
                            "it; later runs use the shipped model again unless given --bundle "
                            f"{RETRAIN_OUT / 'bundle.safetensors'}")
    model.add_argument("--random-bundle", action="store_true", help="random weights (smoke tests)")
    parser.add_argument("--duration", type=float, default=45.0, help="bag length in seconds (default 45)")
    parser.add_argument("--rate", type=float, default=15.0, help="camera/depth rate of the bag (Hz)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of admn_node and of the offline passes (1 suits 2 cores)")
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
    from admn_ros.bags.replay_report import (
        compare_to_baseline,
        format_baseline_comparison,
        pair_with_baseline,
        write_csv,
    )

    profile = write_thermal_profile(out / "thermal_profile.yaml", args.duration)
    with timer.step(f"{NAIVE} offline at the thermal budgets"):
        naive_records = naive_baseline(bag, bundle, config, profile, args.duration, args.threads)
    poses, labels = read_ground_truth(bag, config)
    view = LiveView([m.name for m in config.modalities], args.duration, {p[0]: p[1:] for p in poses},
                    {label[0]: label[2] for label in labels}, sys.stdout.isatty(),
                    naive={(r.stamp_ns, r.budget): r.error_cm for r in naive_records if r.error_cm is not None})
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

    figure = (f"outputs for {result.output_fraction:.1%} of the bag's {len(result.expected_stamps)} synchronized "
              f"sets at 1x (max publish lag {result.play.max_lag_ms:.0f} ms)")
    agreement = None
    if not args.no_offline:
        with timer.step("offline evaluation of the same bag under the live budgets"):
            agreement = offline_agreement(bag, bundle, result.records, out, args.threads)
    with timer.step("summary, CSV and plot"):
        records = result.records
        csv_path = write_csv(records, out / "live_frames.csv")
        write_csv(naive_records, out / "naive_frames.csv")
        summary_text = "\n".join([
            f"ADMN live replay of {bag.name} (model: {bundle.name}, {origin}): {status_counts(records)}", figure,
            *([agreement] if agreement else []), "",
            format_baseline_comparison(compare_to_baseline(records, naive_records), NAIVE)])
        (out / "summary.txt").write_text(summary_text + "\n")
        plot = plot_timeline(records, out / "live_timeline.png",
                             title=f"ADMN live replay against {NAIVE}: error (cm), thermal budget and blocks per "
                                   f"modality [{origin} model]",
                             baseline=[naive for _, naive in pair_with_baseline(records, naive_records)],
                             baseline_label=f"{NAIVE} (same frame and budget)")
    log("")
    log(summary_text)
    log(f"wrote {csv_path}, {out / 'naive_frames.csv'}, {out / 'summary.txt'}, {plot}")
    if origin == "RANDOM":
        log(LOUD)
        log("!!  These errors come from a RANDOM-WEIGHTS model (--random-bundle).")
        log(LOUD)
    log("timings:")
    log(timer.table())
    return 0


def status_counts(records) -> str:
    counts: dict[str, int] = {}
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    return f"{len(records)} frames answered (" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")"


def frame_times(bag: Path, config) -> dict[int, float]:
    """stamp -> seconds since the bag's start, for every set admn_node's synchronizer forms from `bag`."""
    from admn_ros.bags.bag_reader import open_bag
    from admn_ros.bags.replay_eval import synchronized_stamps

    with open_bag(bag, config) as plan:
        start_ns = plan.start_ns
    return {stamp: (stamp - start_ns) / 1e9 for stamp in synchronized_stamps(bag, config)}


def naive_baseline(bag: Path, bundle: Path, config, profile: Path, duration: float, threads: int) -> list:
    """Naive Allocation's records for every frame at every budget the live run may answer it with."""
    schedule = budget_schedule(profile, duration, thermal_overrides(profile, duration))
    log("   thermal budgets over the bag: " + ", ".join(f"{budget} from {t:.1f} s" for t, budget in schedule))
    return evaluate_naive(bag, bundle, naive_plan(frame_times(bag, config), schedule), threads)


def offline_agreement(bag, bundle, live_records, out: Path, threads: int = 1) -> str:
    import torch

    from admn_core.runtime import InferenceEngine
    from admn_ros.bags.replay_eval import BudgetSource, evaluate_bag
    from admn_ros.bags.replay_report import compare, format_comparison, write_csv

    if threads > 0:
        torch.set_num_threads(threads)
    engine = InferenceEngine.from_bundle(bundle, fast=NODE_DEFAULTS.fast_path)  # the node's path: same numbers
    budgets = {r.stamp_ns: r.budget for r in live_records if r.ok}
    with quiet("admn_ros.bags.replay_eval"):  # sets the node did not answer live are skipped by design
        result = evaluate_bag(bag, engine, BudgetSource("per_stamp", per_stamp=budgets))
    write_csv(result.records, out / "offline_frames.csv")
    return format_comparison(compare(result.records, live_records))


if __name__ == "__main__":
    sys.exit(main())
