"""The `make run` demo's pieces: which model, the thermal profile and the budgets it gives, Naive Allocation's plan,
the live view; and a very short end-to-end run (slow)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from admn_core.bench import random_bundle
from admn_core.bundle import save_bundle
from admn_ros.bags.replay_eval import FrameRecord
from admn_ros.nodes.thermal_monitor import ScriptedProfile
from admn_ros.tools import demo, share

from model_fixtures import micro_config
from ros_fixtures import isolate_ros_environment, ros_context, spin_until, unique_name  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]


def test_thermal_profile_heats_up_and_cools_down_on_the_bags_clock(tmp_path):
    path = demo.write_thermal_profile(tmp_path / "profile.yaml", 40.0)
    profile = ScriptedProfile.from_yaml(str(path))
    temperatures = [profile.celsius_at(t) for t in (0, 10, 18, 20, 40)]
    assert temperatures[0] == 45.0 and temperatures[2] >= 85.0 and temperatures[3] >= 85.0
    assert temperatures[-1] == 45.0
    command = demo.thermal_command(path, 40.0).argv
    assert "source:=scripted" in command and "use_sim_time:=true" in command


def test_budget_schedule_runs_thermal_monitors_policy_over_the_profile(tmp_path):
    profile = demo.write_thermal_profile(tmp_path / "profile.yaml", 45.0)
    overrides = demo.thermal_overrides(profile, 45.0)
    schedule = demo.budget_schedule(profile, 45.0, overrides)
    levels = demo.thermal_policy(overrides).levels
    assert levels == (36, 24, 16, 12, 8, 6), "the shipped config/thermal_monitor.yaml's table"
    budgets = [budget for _, budget in schedule]
    assert budgets[0] == max(levels) and budgets[-1] == max(levels), "cool at both ends: the full model"
    assert set(budgets) == set(levels), "the profile's peak reaches the hottest level"
    hottest = budgets.index(min(levels))
    assert budgets[:hottest + 1] == sorted(budgets[:hottest + 1], reverse=True), "heating only lowers the budget"
    assert budgets[hottest:] == sorted(budgets[hottest:]), "cooling only raises it"
    times = [t for t, _ in schedule]
    rises = [b - a for a, b in zip(times[hottest:], times[hottest + 1:])]
    assert min(rises) >= overrides["recover_interval_s"], "one level per recover_interval_s while cooling"


def test_thermal_monitor_on_the_bags_clock_publishes_the_budgets_naive_is_evaluated_at(ros_context,  # noqa: F811
                                                                                       tmp_path):
    """The real node, its shipped file and the demo's overrides, driven by a /clock that starts at a bag's start
    time: at every moment its budget is one the Naive plan covers for a frame stamped then."""
    from builtin_interfaces.msg import Time
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rosgraph_msgs.msg import Clock

    from admn_ros.nodes.thermal_monitor import ThermalMonitorNode

    duration = 20.0
    profile = demo.write_thermal_profile(tmp_path / "profile.yaml", duration)
    overrides = demo.thermal_overrides(profile, duration)
    schedule = demo.budget_schedule(profile, duration, overrides)
    monitor = ThermalMonitorNode(context=ros_context, cli_args=[
        "--ros-args", "--params-file", str(share.config_file("thermal_monitor.yaml")),
        "-r", f"/compute_budget:=/{unique_name('demo')}"],
        parameter_overrides=[Parameter(name, value=str(value) if isinstance(value, Path) else value)
                             for name, value in overrides.items()])
    clock = Node(unique_name("clock"), context=ros_context)
    clock_publisher = clock.create_publisher(Clock, "/clock", 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(monitor)
    executor.add_node(clock)
    bag_start = 1_700_000_000.0
    seen = set()
    try:
        for step in range(int(duration / 0.125)):
            t = step * 0.125
            now = bag_start + t
            clock_publisher.publish(Clock(clock=Time(sec=int(now), nanosec=round(now % 1 * 1e9))))
            assert spin_until(executor, lambda now=now: abs(monitor._now_s() - now) < 1e-6, timeout_s=10)
            for _ in range(3):
                executor.spin_once(timeout_sec=0.005)  # the sampling timer, now due
            budget = monitor.last_decision.budget
            assert budget in demo.budgets_around(schedule, t), f"budget {budget} at bag time {t:.3f} s"
            seen.add(budget)
    finally:
        executor.shutdown()
        monitor.destroy_node()
        clock.destroy_node()
    assert seen == {budget for _, budget in schedule}


def test_naive_plan_covers_each_frame_at_its_budget_and_at_the_neighbours_near_a_change():
    schedule = [(0.0, 36), (10.0, 24), (20.0, 16)]
    times = {1: 0.0, 2: 5.0, 3: 9.5, 4: 10.5, 5: 11.5, 6: 25.0}
    plan = demo.naive_plan(times, schedule)
    assert plan == {36: [1, 2, 3, 4], 24: [3, 4, 5], 16: [6]}
    assert demo.budgets_around(schedule, 9.0 - demo.BUDGET_LATE_S) == {36}
    assert demo.budgets_around(schedule, 10.0 + demo.BUDGET_EARLY_S) == {24}


def test_live_view_shows_budget_allocation_bars_and_admn_beside_naive():
    record = FrameRecord(1, budget=8, budget_used=8, source="controller:budget_8",
                         active_blocks={"rgb": [0, 3, 5, 7], "depth": [0, 1], "mic": [0, 9]}, position=(0.0, 0.0),
                         error_cm=12.5, episode="rgb:lowlight")
    lines = demo.render_view({"record": record, "t": 3.0, "budget": 8, "temperature": 81.0, "outputs": 40,
                              "naive_error": 30.0, "means": (20.0, 28.0), "paired": 39},
                             ["rgb", "depth", "mic"], 45.0)
    text = "\n".join(lines)
    assert "████░░░░░░░░  4/12" in text and "██░░░░░░░░░░  2/12" in text
    assert "81.0 °C" in text and "rgb:lowlight" in text
    assert "ADMN   12.5 cm  Naive   30.0 cm" in text and "ADMN   20.0 cm  Naive   28.0 cm over 39 frames" in text
    assert "waiting" in "\n".join(demo.render_view({}, ["rgb"], 45.0))


def test_live_view_pairs_each_output_with_naive_at_the_budget_it_was_answered_with():
    view = demo.LiveView(["rgb"], 45.0, {1: (0.0, 0.3), 2: (0.0, 0.0)}, {}, interactive=False,
                         naive={(1, 8): 40.0, (2, 16): 10.0})
    view.on_output(FrameRecord(1, budget=8, position=(0.0, 0.0)))
    assert view.state["naive_error"] == 40.0 and view.state["means"] == pytest.approx((30.0, 40.0))
    view.on_output(FrameRecord(2, budget=8, position=(0.0, 0.1)))  # Naive was not evaluated at 8 for this frame
    assert view.state["naive_error"] is None and view.state["paired"] == 1
    assert "n/a" in "\n".join(demo.render_view(view.state, ["rgb"], 45.0))


def _checkout(root: Path, model: bool) -> Path:
    """A source tree with the shipped config/ and, if `model`, a micro reference model in models/."""
    shutil.copytree(ROOT / "config", root / "config")
    if model:
        (root / "models").mkdir()
        save_bundle(root / "models" / share.REFERENCE_MODEL, random_bundle(micro_config(), budgets=[6], seed=1))
    return root


@pytest.fixture
def checkout_only(tmp_path, monkeypatch):
    """Share lookup sees only the source tree share.SOURCE_TREE (set by the test)."""
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    monkeypatch.setattr(share.sys, "prefix", str(tmp_path / "venv_without_share"))


def test_the_demo_serves_the_shipped_reference_model_without_training(tmp_path, monkeypatch, checkout_only):
    monkeypatch.setattr(share, "SOURCE_TREE", _checkout(tmp_path / "checkout", model=True))
    monkeypatch.setattr(demo, "retrain", lambda *a: pytest.fail("the demo trained although a model ships"))
    path, origin = demo.get_bundle(demo.parse_args(["--out", str(tmp_path / "demo")]))
    assert (path, origin) == (tmp_path / "checkout" / "models" / share.REFERENCE_MODEL, "reference")
    given = tmp_path / "mine.safetensors"
    given.write_bytes(b"x")
    assert demo.get_bundle(demo.parse_args(["--bundle", str(given)])) == (given, "given")


def test_without_a_reference_model_the_demo_says_where_it_looked_and_what_to_pass(tmp_path, monkeypatch,
                                                                                  checkout_only):
    monkeypatch.setattr(share, "SOURCE_TREE", _checkout(tmp_path / "checkout", model=False))
    with pytest.raises(SystemExit) as raised:
        demo.get_bundle(demo.parse_args(["--out", str(tmp_path / "demo")]))
    message = str(raised.value)
    assert f"models/{share.REFERENCE_MODEL} not found" in message and str(tmp_path / "checkout") in message
    for option in ("--bundle", "--retrain", "--random-bundle"):
        assert option in message


def test_retrain_trains_the_reference_recipe_into_artifacts_reference_and_uses_its_bundle(tmp_path, monkeypatch,
                                                                                         checkout_only):
    monkeypatch.setattr(share, "SOURCE_TREE", _checkout(tmp_path / "checkout", model=False))
    (tmp_path / "checkout" / "config" / demo.RETRAIN_CONFIG).write_text("preset: tiny\n")
    out = tmp_path / "reference"
    assert demo.retrain_command(out, python="python3") == [
        "python3", "-m", "admn_core.cli", "train", "--train-config",
        str(tmp_path / "checkout" / "config" / demo.RETRAIN_CONFIG), "--out", str(out)]
    assert demo.RETRAIN_OUT == Path("artifacts/reference")
    trained = []

    def train(command):  # stands in for hours of `admn train`: writes what it writes at the end
        trained.append(command)
        (Path(command[command.index("--out") + 1]) / "bundle.safetensors").parent.mkdir(parents=True)
        (Path(command[command.index("--out") + 1]) / "bundle.safetensors").write_bytes(b"x")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(demo.subprocess, "run", train)
    monkeypatch.chdir(tmp_path)
    path, origin = demo.get_bundle(demo.parse_args(["--retrain"]))
    assert origin == "retrained" and path == demo.RETRAIN_OUT / "bundle.safetensors" and path.is_file()
    assert trained and trained[0][-2:] == ["--out", str(demo.RETRAIN_OUT)]
    with pytest.raises(SystemExit):
        demo.parse_args(["--retrain", "--bundle", str(path)])


def test_retrain_without_its_recipe_installed_says_so(tmp_path, monkeypatch, checkout_only):
    monkeypatch.setattr(share, "SOURCE_TREE", tmp_path / "no_checkout")
    with pytest.raises(SystemExit, match=rf"config/{demo.RETRAIN_CONFIG} not found in any of: "):
        demo.retrain_command()


def test_random_bundle_is_announced_loudly(tmp_path, capsys):
    path, origin = demo.get_bundle(demo.parse_args(["--out", str(tmp_path / "demo"), "--random-bundle"]))
    assert origin == "RANDOM" and path.is_file()
    assert "RANDOM-WEIGHTS" in capsys.readouterr().out


@pytest.mark.slow
def test_a_very_short_demo_run_writes_summary_csv_and_plot(tmp_path, capsys):
    isolate_ros_environment()
    bundle = save_bundle(tmp_path / "micro.safetensors",
                         random_bundle(micro_config(views=("node_1", "node_2", "node_3")), budgets=[6, 8], seed=1))
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--bundle", str(bundle), "--duration", "4"]) == 0
    printed = capsys.readouterr().out
    assert "ADMN vs Naive Allocation on the same" in printed and "per episode, all budgets" in printed
    assert "offline vs live" in printed and "timings:" in printed
    assert "no frame was answered" not in printed, "Naive was evaluated at none of the live budgets"
    for name in ("live_frames.csv", "naive_frames.csv", "offline_frames.csv", "summary.txt", "live_timeline.png"):
        assert (out / name).stat().st_size > 0


def test_config_lookup_falls_back_to_the_source_tree(monkeypatch):
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    monkeypatch.setattr(share.sys, "prefix", "/nonexistent/venv")  # `make venv` links config/ into the venv
    assert share.config_file("admn_node.yaml") == ROOT / "config" / "admn_node.yaml"
