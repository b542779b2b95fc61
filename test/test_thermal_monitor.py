"""thermal_monitor: budget policy, temperature sources, and the node over rclpy loopback."""

import math
import os
import shutil
from pathlib import Path

import pytest

from admn_ros.nodes.thermal_monitor import (
    FAILSAFE,
    NORMAL,
    OVERRIDE,
    THROTTLED,
    BudgetPolicy,
    NvmlSource,
    PlausibleRange,
    PolicyConfig,
    ScriptedProfile,
    TemperatureReadError,
    ThermalZoneSource,
)

from ros_fixtures import ros_context, spin_until, temp_dir, unique_name  # noqa: F401 - pytest fixtures

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
SMALL = PolicyConfig(levels=(36, 24, 12), thresholds_c=(60.0, 70.0), hysteresis_c=3.0, recover_interval_s=0.0)


def budgets_for(policy, temperatures, period_s=1.0):
    return [policy.update(celsius, step * period_s).budget for step, celsius in enumerate(temperatures)]


# ----------------------------------------------------------------------------------------------- policy


def test_scripted_heat_up_and_cool_down_gives_the_expected_budget_sequence():
    profile = ScriptedProfile([(0, 50), (10, 72), (20, 50)])
    temperatures = [profile.celsius_at(t) for t in range(21)]
    # 50.0 52.2 54.4 56.6 58.8 61 63.2 65.4 67.6 69.8 72 69.8 67.6 65.4 63.2 61 58.8 56.6 54.4 52.2 50
    expected = [36] * 5 + [24] * 5 + [12] * 3 + [24] * 4 + [36] * 4
    # Hysteresis: 69.8 and 67.6 keep 12 (cool below 67 first); 58.8 keeps 24 (cool below 57 first).
    assert budgets_for(BudgetPolicy(SMALL), temperatures) == expected


def test_hysteresis_prevents_flapping_around_a_threshold():
    policy = BudgetPolicy(SMALL)
    decisions = [policy.update(celsius, float(step)) for step, celsius in enumerate([59.5, 60.5] * 10)]
    assert sum(d.changed for d in decisions) == 2  # the first publication (36) and one step to 24
    assert decisions[-1].budget == 24 and decisions[-1].state == THROTTLED


def test_recovery_is_rate_limited_but_throttling_is_immediate():
    config = PolicyConfig(levels=(36, 24, 12), thresholds_c=(60.0, 70.0), hysteresis_c=3.0, recover_interval_s=10.0)
    policy = BudgetPolicy(config)
    assert policy.update(50, 0).budget == 36
    assert policy.update(90, 1).budget == 12  # hot: straight to the lowest level
    budgets = [policy.update(40, t).budget for t in range(2, 30)]
    assert budgets[:9] == [12] * 9  # t = 2..10: still within 10 s of the last change
    assert budgets[9] == 24 and budgets[19] == 36  # t = 11 and t = 21
    assert budgets == sorted(budgets)


def test_failing_source_gives_the_failsafe_budget_and_recovers():
    policy = BudgetPolicy(PolicyConfig(levels=(36, 24, 12), thresholds_c=(60.0, 70.0), recover_interval_s=5.0))
    assert policy.update(40, 0).state == NORMAL
    failed = policy.update(None, 1)
    assert (failed.budget, failed.state, failed.changed) == (12, FAILSAFE, True)
    assert policy.update(float("nan"), 2).state == FAILSAFE
    assert [policy.update(40, t).budget for t in (3, 7, 12, 17)] == [12, 24, 36, 36]  # one level per 5 s


def test_override_wins_and_releases():
    policy = BudgetPolicy(SMALL)
    policy.update(90, 0)
    policy.override = 30
    decision = policy.update(None, 1)
    assert (decision.budget, decision.state) == (30, OVERRIDE)
    policy.override = -1
    assert policy.update(90, 2).budget == 12


@pytest.mark.parametrize(("config", "reason"), [
    (PolicyConfig(levels=()), "must not be empty"),
    (PolicyConfig(levels=(12, 24), thresholds_c=(60.0,)), "strictly decreasing"),
    (PolicyConfig(levels=(36, 24, 12), thresholds_c=(60.0,)), "needs 2 values"),
    (PolicyConfig(levels=(36, 24, 12), thresholds_c=(70.0, 60.0)), "strictly increasing"),
    (PolicyConfig(levels=(36, 24), thresholds_c=(60.0,), hysteresis_c=-1.0), "hysteresis_c must be >= 0"),
    (PolicyConfig(levels=(36, -1), thresholds_c=(60.0,)), ">= 0"),
])
def test_bad_policy_configs_are_rejected_with_a_reason(config, reason):
    assert reason in config.problems()
    with pytest.raises(ValueError, match=reason):
        BudgetPolicy(config)


# ---------------------------------------------------------------------------------------------- sources


def test_scripted_profile_interpolates_loops_and_fails():
    now = [0.0]
    profile = ScriptedProfile([(0, 40), (10, 60), (12, None), (14, 50)], loop=True, now_seconds=lambda: now[0])
    readings = []
    for t in (0.0, 5.0, 11.0, 12.5, 14.0, 19.0):
        now[0] = t
        try:
            readings.append(profile.read_celsius())
        except TemperatureReadError:
            readings.append("fail")
    assert readings == [40.0, 50.0, 60.0, "fail", 50.0, 50.0]  # 19 s wraps to 5 s
    with pytest.raises(ValueError, match="strictly increasing"):
        ScriptedProfile([(0, 40), (0, 50)])


def test_scripted_profile_waits_for_a_nonzero_clock():
    # Sim time before the first /clock reads 0: the script must not start there (it would be far past its end once
    # /clock arrives); it holds its first point and starts at the first non-zero time.
    now = [0.0]
    profile = ScriptedProfile([(0, 40), (10, 60)], now_seconds=lambda: now[0], wait_for_clock=True)
    assert [profile.read_celsius() for _ in range(3)] == [40.0, 40.0, 40.0]
    assert profile.started_at is None
    readings = []
    for t in (500.0, 505.0, 510.0):
        now[0] = t
        readings.append(profile.read_celsius())
    assert profile.started_at == 500.0 and readings == [40.0, 50.0, 60.0]
    # Without wait_for_clock (a plain monotonic clock) a reading at 0 starts the script, as before.
    now[0] = 0.0
    plain = ScriptedProfile([(0, 40), (10, 60)], now_seconds=lambda: now[0])
    plain.read_celsius()
    assert plain.started_at == 0.0


def test_demo_profile_loads_and_heats_then_cools():
    profile = ScriptedProfile.from_yaml(str(CONFIG_DIR / "thermal_profile_demo.yaml"))
    assert 50 <= profile.points[-1][0] <= 70
    peak = max(c for _, c in profile.points if c is not None)
    assert peak > 85 and profile.points[0][1] < 60 and profile.points[-1][1] < 60
    assert any(c is None for _, c in profile.points)  # rehearses a sensor failure


def test_profile_yaml_errors(temp_dir):  # noqa: F811 - fixture
    path = Path(temp_dir) / "bad.yaml"
    path.write_text("temperatures: [1, 2]\n")
    with pytest.raises(ValueError, match="expected a mapping with 'points"):
        ScriptedProfile.from_yaml(str(path))


def make_zone(root, index, zone_type, millidegrees):
    zone = Path(root) / f"thermal_zone{index}"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "type").write_text(zone_type + "\n")
    (zone / "temp").write_text(f"{millidegrees}\n")
    return zone


def test_thermal_zone_source_reads_real_files(temp_dir):  # noqa: F811
    make_zone(temp_dir, 0, "acpitz", 41000)
    cpu = make_zone(temp_dir, 1, "x86_pkg_temp", 67500)
    assert ThermalZoneSource(temp_dir).read_celsius() == 67.5  # hottest of all
    assert ThermalZoneSource(temp_dir, "acpitz").read_celsius() == 41.0
    source = ThermalZoneSource(temp_dir, "x86_pkg_temp")
    (cpu / "temp").unlink()
    with pytest.raises(TemperatureReadError, match=r"of type 'x86_pkg_temp'.*thermal_zone1.*No such file"):
        source.read_celsius()
    (cpu / "temp").write_text("garbage\n")
    with pytest.raises(TemperatureReadError, match="not a temperature in millidegrees: 'garbage'"):
        source.read_celsius()
    (cpu / "temp").write_text("70000\n")
    assert source.read_celsius() == 70.0  # recovered
    with pytest.raises(TemperatureReadError, match="of type 'GPU-therm'"):
        ThermalZoneSource(temp_dir, "GPU-therm").read_celsius()


def make_cool_and_hot_zones(root):
    """Two zones: a cool one (40 °C) and the hot one (65 °C) that decides the budget."""
    return make_zone(root, 0, "acpitz", 40000), make_zone(root, 1, "x86_pkg_temp", 65000)


def write_temp(text):
    return lambda zone: (zone / "temp").write_text(text)


def replace_temp_with_a_folder(zone):
    (zone / "temp").unlink()
    (zone / "temp").mkdir()


# fault name -> (what happens to the hot zone, what the error must quote)
ZONE_FAULTS = {
    "zone vanished": (shutil.rmtree, "vanished"),
    "temp file vanished": (lambda zone: (zone / "temp").unlink(), "No such file"),
    "unreadable temp": (replace_temp_with_a_folder, "Is a directory"),
    "permission denied": (lambda zone: (zone / "temp").chmod(0), "Permission denied"),
    "garbage": (write_temp("garbage\n"), "'garbage'"),
    "empty": (write_temp(""), "''"),
    "fault code -40000 m°C": (write_temp("-40000\n"), "'-40000'"),
    "fault code -273.15 °C": (write_temp("-273150\n"), "'-273150'"),
    "saturated 255 °C": (write_temp("255000\n"), "'255000'"),
}
NODE_FAULTS = ["zone vanished", "garbage", "fault code -40000 m°C", "fault code -273.15 °C"]


def break_zone(zone, fault):
    if fault == "permission denied" and os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions")
    ZONE_FAULTS[fault][0](zone)


def restore_zone(zone, millidegrees):
    shutil.rmtree(zone, ignore_errors=True)
    make_zone(zone.parent, int(zone.name.removeprefix("thermal_zone")), "x86_pkg_temp", millidegrees)


@pytest.mark.parametrize("fault", ZONE_FAULTS)
def test_thermal_zone_source_fails_when_any_zone_is_bad_never_reporting_the_others(temp_dir, fault):  # noqa: F811
    _, hot = make_cool_and_hot_zones(temp_dir)
    source = ThermalZoneSource(temp_dir)
    assert source.read_celsius() == 65.0
    break_zone(hot, fault)
    with pytest.raises(TemperatureReadError) as failure:
        source.read_celsius()  # not 40 °C from the cool zone: the hot one may be hotter still
    message = str(failure.value)
    assert "thermal_zone1" in message and str(hot) in message and ZONE_FAULTS[fault][1] in message
    assert "thermal_zone0" not in message  # the cool zone is fine and not blamed
    restore_zone(hot, 66000)
    assert source.read_celsius() == 66.0  # recovered


def test_plausible_range_defaults_exclude_sensor_fault_codes_and_are_validated():
    plausible = PlausibleRange()
    assert plausible.problems() is None
    for fault_code_c in (-273.15, -40.0, 127.0, 255.0, math.nan):
        with pytest.raises(TemperatureReadError, match="outside the plausible range"):
            plausible.check(fault_code_c, "probe")
    assert [plausible.check(c, "probe") for c in (-20.0, 25.0, 105.0)] == [-20.0, 25.0, 105.0]
    assert "plausible_min_c must be below plausible_max_c" in PlausibleRange(50.0, 40.0).problems()
    assert "finite" in PlausibleRange(math.nan, 40.0).problems()


def test_nvml_source_without_bindings_says_what_to_install():
    pytest.importorskip("pytest")
    try:
        import pynvml  # noqa: F401
    except ImportError:
        with pytest.raises(TemperatureReadError, match="pip install nvidia-ml-py"):
            NvmlSource(0)
    else:
        pytest.skip("pynvml is installed; the missing-bindings message cannot be shown here")


# ------------------------------------------------------------------------------------------------- node


def make_node(context, temp_dir, topic, namespace="", **parameters):  # noqa: F811
    """A monitor on `temp_dir`; `topic` remaps its budget (and `<topic>/diagnostics`), None keeps the shipped names."""
    from rclpy.parameter import Parameter

    from admn_ros.nodes.thermal_monitor import ThermalMonitorNode

    values = {"source": "thermal_zone", "thermal_root": temp_dir, "sample_period_s": 0.05,
              "publish_period_s": 60.0, "budget_levels": [36, 24, 12], "thresholds_c": [60.0, 70.0],
              "hysteresis_c": 3.0, "recover_interval_s": 0.0, **parameters}
    overrides = [Parameter(name, value=value) for name, value in values.items()]
    remaps = [] if topic is None else ["--ros-args", "-r", f"/compute_budget:={topic}",
                                       "-r", f"/diagnostics:={topic}/diagnostics"]
    return ThermalMonitorNode(context=context, namespace=namespace, parameter_overrides=overrides, cli_args=remaps)


@pytest.mark.ros
def test_late_joiner_gets_the_current_budget_and_the_source_vanishing_is_fail_safe(ros_context, temp_dir):  # noqa: F811
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from admn_ros.msgs.qos import subscribe_budget

    zone = make_zone(temp_dir, 0, "cpu-thermal", 65000)
    topic = "/" + unique_name("budget")
    monitor = make_node(ros_context, temp_dir, topic)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(monitor)
    assert spin_until(executor, lambda: monitor.last_decision is not None, timeout_s=2)
    assert monitor.last_decision.budget == 24

    # A node started after the budget was published; publish_period_s is 60 s, so only the latched sample can reach
    # it within the test.
    late = Node("late_joiner", context=ros_context)
    received, diagnostics = [], []
    subscribe_budget(late, lambda msg: received.append(msg.data), topic=topic)
    late.create_subscription(DiagnosticArray, f"{topic}/diagnostics", diagnostics.append, 10)
    executor.add_node(late)
    assert spin_until(executor, lambda: received, timeout_s=5)
    assert received[0] == 24

    (zone / "temp").unlink()  # the sensor vanishes
    assert spin_until(executor, lambda: received[-1] == 12, timeout_s=5)
    assert monitor.last_decision.state == FAILSAFE
    assert spin_until(executor, lambda: any(d.status[0].level == DiagnosticStatus.ERROR for d in diagnostics))
    error_values = {kv.key: kv.value for kv in diagnostics[-1].status[0].values}
    assert error_values["budget"] == "12" and error_values["state"] == FAILSAFE and error_values["source"]

    (zone / "temp").write_text("50000\n")  # it comes back, cool
    assert spin_until(executor, lambda: received[-1] == 36, timeout_s=5)
    assert monitor.last_error == "" and monitor.last_decision.state == NORMAL
    executor.shutdown()


@pytest.mark.ros
@pytest.mark.parametrize("fault", NODE_FAULTS)
def test_a_bad_hot_zone_gives_the_failsafe_budget_and_an_error_naming_it_then_recovers(ros_context, temp_dir,  # noqa: F811
                                                                                      fault):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from admn_ros.msgs.qos import subscribe_budget

    _, hot = make_cool_and_hot_zones(temp_dir)  # 65 °C -> 24; the cool zone alone would give 36 (fail open)
    topic = "/" + unique_name("zones")
    monitor = make_node(ros_context, temp_dir, topic)
    listener = Node(unique_name("listener"), context=ros_context)
    received, diagnostics = [], []
    subscribe_budget(listener, lambda msg: received.append(msg.data), topic=topic)
    listener.create_subscription(DiagnosticArray, f"{topic}/diagnostics", diagnostics.append, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(monitor)
    executor.add_node(listener)
    assert spin_until(executor, lambda: received and received[-1] == 24, timeout_s=5)

    break_zone(hot, fault)
    assert spin_until(executor, lambda: received[-1] == 12, timeout_s=5)  # the lowest level, not the cool zone's 36
    assert monitor.last_decision.state == FAILSAFE

    def error_status():
        errors = [d.status[0] for d in diagnostics if d.status[0].level == DiagnosticStatus.ERROR]
        return errors[-1] if errors else None

    assert spin_until(executor, error_status, timeout_s=5)
    status = error_status()
    for named in ("thermal_zone1", str(hot), ZONE_FAULTS[fault][1]):
        assert named in status.message
    assert {kv.key: kv.value for kv in status.values}["budget"] == "12"

    restore_zone(hot, 65000)
    assert spin_until(executor, lambda: received[-1] == 24, timeout_s=5)
    assert monitor.last_error == "" and monitor.last_decision.state == THROTTLED
    assert 36 not in received  # never failed open
    executor.shutdown()


@pytest.mark.ros
def test_failures_are_logged_at_once_then_throttled(ros_context, temp_dir, capfd):  # noqa: F811
    import time

    from admn_ros.nodes.thermal_monitor import FAILURE_LOG_PERIOD_S

    _, hot = make_cool_and_hot_zones(temp_dir)
    (hot / "temp").write_text("garbage\n")
    started = time.monotonic()
    monitor = make_node(ros_context, temp_dir, "/" + unique_name("log"))
    for _ in range(50):
        monitor._sample()
    elapsed = time.monotonic() - started
    logged = [line for line in capfd.readouterr().err.splitlines() if "temperature source failed" in line]
    assert logged and "thermal_zone1" in logged[0] and "'garbage'" in logged[0]
    assert len(logged) <= 1 + math.ceil(elapsed / FAILURE_LOG_PERIOD_S)  # 51 failed samples, not 51 lines
    monitor.destroy_node()


@pytest.mark.ros
def test_budget_topic_is_relative_to_the_namespace(ros_context, temp_dir):  # noqa: F811
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from admn_ros.msgs.qos import subscribe_budget

    make_zone(temp_dir, 0, "cpu-thermal", 65000)
    at_root = make_node(ros_context, temp_dir, topic=None)
    assert at_root.budget_publisher.topic_name == "/compute_budget"
    at_root.destroy_node()

    namespace = unique_name("robot")
    monitor = make_node(ros_context, temp_dir, topic=None, namespace=namespace)
    observer = Node(unique_name("observer"), context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(monitor)
    executor.add_node(observer)
    topic = f"/{namespace}/compute_budget"
    assert spin_until(executor, lambda: observer.get_publishers_info_by_topic(topic), timeout_s=5)
    [publisher] = observer.get_publishers_info_by_topic(topic)
    assert (publisher.node_name, publisher.node_namespace) == ("thermal_monitor", f"/{namespace}")
    assert not [p for p in observer.get_publishers_info_by_topic("/compute_budget")
                if p.node_namespace == f"/{namespace}"]
    received = []
    subscribe_budget(observer, lambda msg: received.append(msg.data), topic=topic)
    assert spin_until(executor, lambda: received, timeout_s=5) and received[0] == 24
    executor.shutdown()


@pytest.mark.ros
def test_budget_qos_compatibility_both_directions(ros_context):  # noqa: F811
    """A volatile publisher (`ros2 topic pub` default) reaches subscribe_budget but not a TRANSIENT_LOCAL-only
    subscription; a TRANSIENT_LOCAL publisher (thermal_monitor) reaches both."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import qos_profile_system_default
    from std_msgs.msg import Int32

    from admn_ros.msgs.qos import BUDGET_LATCHED_SUBSCRIPTION_QOS, BUDGET_PUBLISHER_QOS, subscribe_budget

    topic_cli, topic_monitor = "/" + unique_name("cli"), "/" + unique_name("tl")
    node = Node("budget_listener", context=ros_context)
    talker = Node("budget_talker", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(talker)

    recommended, latched_only = [], []
    subscribe_budget(node, lambda m: recommended.append(m.data), topic=topic_cli)
    node.create_subscription(Int32, topic_cli, lambda m: latched_only.append(m.data), BUDGET_LATCHED_SUBSCRIPTION_QOS)
    cli_publisher = talker.create_publisher(Int32, topic_cli, qos_profile_system_default)  # as `ros2 topic pub`
    assert spin_until(executor, lambda: cli_publisher.get_subscription_count() >= 1)

    def publish_until_received():
        cli_publisher.publish(Int32(data=7))
        return bool(recommended)

    assert spin_until(executor, publish_until_received, timeout_s=5, step_s=0.05)
    assert recommended[-1] == 7
    assert latched_only == []  # incompatible durability: the TRANSIENT_LOCAL-only subscription never hears it

    monitor_publisher = talker.create_publisher(Int32, topic_monitor, BUDGET_PUBLISHER_QOS)
    monitor_publisher.publish(Int32(data=16))  # before anyone listens
    late_recommended, late_latched = [], []
    subscribe_budget(node, lambda m: late_recommended.append(m.data), topic=topic_monitor)
    node.create_subscription(Int32, topic_monitor, lambda m: late_latched.append(m.data),
                             BUDGET_LATCHED_SUBSCRIPTION_QOS)
    assert spin_until(executor, lambda: late_recommended and late_latched, timeout_s=5)
    assert late_recommended[0] == 16 and late_latched == [16]
    executor.shutdown()


@pytest.mark.ros
def test_parameters_are_validated_on_set(ros_context, temp_dir):  # noqa: F811
    from rclpy.parameter import Parameter

    make_zone(temp_dir, 0, "cpu-thermal", 50000)
    monitor = make_node(ros_context, temp_dir, "/" + unique_name("params"))

    def set_one(name, value):
        return monitor.set_parameters([Parameter(name, value=value)])[0]

    rejected = set_one("budget_levels", [12, 24, 36])
    assert not rejected.successful and "strictly decreasing" in rejected.reason
    rejected = set_one("thresholds_c", [60.0])
    assert not rejected.successful and "needs 2 values" in rejected.reason
    rejected = set_one("thresholds_c", "hot")
    assert not rejected.successful and "list of numbers" in rejected.reason
    rejected = set_one("hysteresis_c", 99.0)
    assert not rejected.successful and "out of range" in rejected.reason
    rejected = set_one("source", "nvml")
    assert not rejected.successful and "read-only" in rejected.reason
    assert monitor.get_parameter("budget_levels").value == [36, 24, 12]

    assert set_one("thresholds_c", [40, 60]).successful  # integers are accepted for °C
    assert monitor.last_decision.budget == 24  # applied at once: 50 °C is now between 40 and 60
    assert set_one("budget_override", 5).successful
    assert (monitor.last_decision.budget, monitor.last_decision.state) == (5, OVERRIDE)
    assert set_one("budget_override", -1).successful and monitor.last_decision.budget == 24
    monitor.destroy_node()


@pytest.mark.ros
def test_params_file_and_scripted_source_failsafe(ros_context, temp_dir):  # noqa: F811
    from rclpy.executors import SingleThreadedExecutor

    from admn_ros.nodes.thermal_monitor import ThermalMonitorNode

    profile = Path(temp_dir) / "profile.yaml"
    profile.write_text("points:\n  - [0, 90.0]\n  - [0.3, null]\n  - [100, null]\n")
    params = Path(temp_dir) / "params.yaml"
    shutil.copy(CONFIG_DIR / "thermal_monitor.yaml", params)
    params.write_text(params.read_text().replace("source: thermal_zone", "source: scripted")
                      .replace('profile_file: ""', f"profile_file: {profile}")
                      .replace("sample_period_s: 1.0", "sample_period_s: 0.05"))
    monitor = ThermalMonitorNode(context=ros_context, cli_args=[
        "--ros-args", "--params-file", str(params), "-r", f"/compute_budget:=/{unique_name('file')}"])
    assert monitor.get_parameter("budget_levels").value == [36, 24, 16, 12, 8, 6]
    assert monitor.get_parameter("thresholds_c").value == [60.0, 70.0, 75.0, 80.0, 85.0]
    assert (monitor.get_parameter("plausible_min_c").value, monitor.get_parameter("plausible_max_c").value) == (
        PlausibleRange().min_c, PlausibleRange().max_c)  # the shipped file states the defaults
    assert monitor.last_decision.budget == 6 and monitor.last_decision.state == THROTTLED  # 90 °C
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(monitor)
    assert spin_until(executor, lambda: monitor.last_decision.state == FAILSAFE, timeout_s=3)
    assert "scripted sensor failure" in monitor.last_error
    executor.shutdown()


@pytest.mark.ros
def test_scripted_source_under_sim_time_starts_at_the_first_clock(ros_context, temp_dir):  # noqa: F811
    from builtin_interfaces.msg import Time
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rosgraph_msgs.msg import Clock

    profile = Path(temp_dir) / "profile.yaml"
    profile.write_text("points:\n  - [0, 50.0]\n  - [1.0, 90.0]\n")  # 36 at t = 0, 12 from t = 0.5 s
    monitor = make_node(ros_context, temp_dir, "/" + unique_name("sim"), source="scripted",
                        profile_file=str(profile), use_sim_time=True)
    clock = Node(unique_name("clock"), context=ros_context)
    clock_publisher = clock.create_publisher(Clock, "/clock", 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(monitor)
    executor.add_node(clock)

    def run_clock_until(seconds, predicate):
        def tick():
            clock_publisher.publish(Clock(clock=Time(sec=int(seconds), nanosec=int(seconds % 1 * 1e9))))
            return predicate()
        return spin_until(executor, tick, timeout_s=5)

    # No /clock yet: the clock reads 0, the script holds its first point (the initial budget) and has not started.
    assert monitor._now_s() == 0.0
    assert monitor.last_decision.budget == 36 and monitor.source.started_at is None
    values = {kv.key: kv.value for kv in monitor._diagnostics(monitor.last_decision).status[0].values}
    assert values["script"].startswith("waiting for the clock")

    # The first /clock starts the script there: still the first point, not 1000 s into the script.
    assert run_clock_until(1000.0, lambda: monitor.source.started_at is not None)
    assert monitor.source.started_at == 1000.0
    assert monitor.last_decision.budget == 36 and monitor.last_decision.temperature_c == 50.0
    assert run_clock_until(1001.0, lambda: monitor.last_decision.budget == 12)  # 90 °C one sim second later
    executor.shutdown()


@pytest.mark.ros
def test_an_implausible_reading_from_any_source_is_failsafe(ros_context, temp_dir):  # noqa: F811
    profile = Path(temp_dir) / "profile.yaml"
    profile.write_text("points:\n  - [0, -40.0]\n")  # a scripted sensor stuck on its fault code
    monitor = make_node(ros_context, temp_dir, "/" + unique_name("implausible"), source="scripted",
                        profile_file=str(profile))
    assert monitor.last_decision.state == FAILSAFE and monitor.last_decision.budget == 12
    assert "scripted 1 points = -40 °C, outside the plausible range -30..125 °C" in monitor.last_error
    monitor.destroy_node()


@pytest.mark.ros
def test_missing_source_keeps_the_node_alive_in_failsafe(ros_context, temp_dir):  # noqa: F811
    monitor = make_node(ros_context, os.path.join(temp_dir, "no_such_dir"), "/" + unique_name("missing"))
    assert monitor.last_decision.state == FAILSAFE and monitor.last_decision.budget == 12
    assert "no readable thermal zone" in monitor.last_error
    monitor.destroy_node()


def test_demo_profile_with_shipped_config_walks_all_levels_and_recovers():
    import yaml

    shipped = yaml.safe_load((CONFIG_DIR / "thermal_monitor.yaml").read_text())
    parameters = shipped["/**/thermal_monitor"]["ros__parameters"]
    config = PolicyConfig(levels=tuple(parameters["budget_levels"]), thresholds_c=tuple(parameters["thresholds_c"]),
                          hysteresis_c=parameters["hysteresis_c"], recover_interval_s=parameters["recover_interval_s"])
    assert config.problems() is None and max(config.levels) == 36 and min(config.levels) >= 3
    profile = ScriptedProfile.from_yaml(str(CONFIG_DIR / "thermal_profile_demo.yaml"))
    policy = BudgetPolicy(config)
    trace = [policy.update(profile.celsius_at(step / 2), step / 2) for step in range(121)]  # 0..60 s at 2 Hz
    distinct = [d.budget for i, d in enumerate(trace) if i == 0 or d.budget != trace[i - 1].budget]
    assert distinct[:6] == [36, 24, 16, 12, 8, 6]  # heat-up walks every level
    assert any(d.state == FAILSAFE for d in trace)
    cooling = [d.budget for d in trace if d.state != FAILSAFE][-40:]
    assert cooling == sorted(cooling) and cooling[-1] > 6  # cool-down climbs back, never flaps


# -------------------------------------------------------------------------------------------- process


def start_monitor_process(temp_dir, *parameters):  # noqa: F811
    import subprocess
    import sys

    from ros_fixtures import isolate_ros_environment

    isolate_ros_environment()
    command = [sys.executable, "-m", "admn_ros.nodes.thermal_monitor", "--ros-args", "-p", f"thermal_root:={temp_dir}",
               "-r", f"/compute_budget:=/{unique_name('process')}"]
    for parameter in parameters:
        command += ["-p", parameter]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ))


@pytest.mark.ros
@pytest.mark.parametrize(("signal_name", "moment"), [
    ("SIGTERM", "starting"),  # right after the first budget, while the process still sets up its executor
    ("SIGTERM", "running"),
    ("SIGINT", "running"),
])
def test_signals_end_the_process_cleanly(temp_dir, signal_name, moment):  # noqa: F811
    import signal
    import time

    make_zone(temp_dir, 0, "cpu-thermal", 50000)
    process = start_monitor_process(temp_dir, "sample_period_s:=0.05", "publish_period_s:=0.1")
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "compute budget 36" in line:
                break
        if moment == "running":
            time.sleep(1.0)  # spinning: sampling and republishing
        process.send_signal(getattr(signal, signal_name))
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(lines) + output
    assert "compute budget 36" in output
    assert "Traceback" not in output, output
    assert process.returncode == 0, output


@pytest.mark.ros
def test_an_inverted_plausible_range_is_a_one_line_startup_error(temp_dir):  # noqa: F811
    process = start_monitor_process(temp_dir, "plausible_min_c:=50.0", "plausible_max_c:=40.0")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 2, output
    assert "thermal_monitor: cannot start: plausible_min_c must be below plausible_max_c" in output
    assert "Traceback" not in output
