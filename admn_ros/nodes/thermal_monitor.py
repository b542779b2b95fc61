"""thermal_monitor: a temperature source -> a compute budget on `compute_budget` (std_msgs/Int32).

The topic is relative: `/compute_budget` at the root, `/robot1/compute_budget` with `namespace:=robot1`, so two robots
on one network each obey their own monitor.

The budget is published RELIABLE + TRANSIENT_LOCAL + KEEP_LAST(1), on every change and every `publish_period_s`,
so late joiners get the current value at once. Subscribers: see `admn_ros.msgs.qos` for why the perception node
subscribes twice (TRANSIENT_LOCAL for this node's latched value, VOLATILE for `ros2 topic pub`, whose default
VOLATILE publisher is incompatible with a TRANSIENT_LOCAL subscription).

Layout: temperature sources (Linux thermal zones, NVML, a scripted profile) and `BudgetPolicy` (thresholds,
hysteresis, rate limit, fail-safe, override) are plain Python classes, tested without a node; `ThermalMonitorNode`
only wires them to parameters, timers and topics.

Policy: `budget_levels` are budgets from coolest to hottest (e.g. 36 24 16 12 8 6) and `thresholds_c` the
temperatures at which each next level starts (one fewer). Heating lowers the budget at once (protect the hardware);
cooling raises it only after the temperature is `hysteresis_c` below the threshold, and by at most one level per
`recover_interval_s` (no flapping around a threshold). `budget_override` >= 0 wins over everything (field teams).

Fail-safe: the monitor never fails open. A source that cannot be read, or a reading outside
[`plausible_min_c`, `plausible_max_c`] (sensor fault codes such as -40000 m°C or -273.15 °C), gives the lowest budget,
a diagnostics ERROR naming the zone, its file and the bad value, and an error log (at once, then every
FAILURE_LOG_PERIOD_S while it lasts). With several thermal zones, one bad zone is enough: it may be the hot one, and
the hottest of the others would under-report. Once every zone reads again, the budget climbs back as when cooling.

Sim time: with use_sim_time:=true the ROS clock reads 0 until the first /clock message. A scripted profile does not
start while the clock reads 0: it holds its first point (so the node publishes the budget for the first point's
temperature) and starts its script at the first non-zero time. Otherwise the script would start at 0 and jump straight
to "simulation time" seconds into the script (usually past its end) as soon as /clock arrives.
"""

from __future__ import annotations

import bisect
import glob
import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.node import Node
from std_msgs.msg import Int32

from admn_core.ros_interface import BUDGET_TOPIC, DIAGNOSTICS_TOPIC
from admn_ros.msgs.qos import BUDGET_PUBLISHER_QOS, DIAGNOSTICS_QOS

NORMAL, THROTTLED, FAILSAFE, OVERRIDE = "NORMAL", "THROTTLED", "FAILSAFE", "OVERRIDE"
SOURCE_KINDS = ("thermal_zone", "nvml", "scripted")
FAILURE_LOG_PERIOD_S = 10.0  # a lasting source failure is logged again this often (diagnostics carry every sample)


class TemperatureReadError(RuntimeError):
    """The source could not produce a temperature this time (it may recover)."""


@dataclass(frozen=True)
class PlausibleRange:
    """Temperatures a working sensor on running compute can report; anything outside is a sensor fault, not a reading.

    -30 °C: colder than any robot's compute runs at (the chip heats itself), and above the fault codes drivers report
    (-40 °C / -40000 m°C, -273.15 °C). 125 °C: above every junction's thermal shutdown (~100-110 °C), so the saturated
    codes of 7- and 8-bit sensors (127 °C, 255 °C) fall outside."""

    min_c: float = -30.0
    max_c: float = 125.0

    def problems(self) -> str | None:
        """A reason the range is unusable, or None."""
        if not (math.isfinite(self.min_c) and math.isfinite(self.max_c)):
            return f"plausible_min_c and plausible_max_c must be finite, got {self.min_c}, {self.max_c}"
        if self.min_c >= self.max_c:
            return f"plausible_min_c must be below plausible_max_c, got {self.min_c} >= {self.max_c}"
        return None

    def check(self, celsius: float, reading: str) -> float:
        """`celsius` if plausible (NaN is not), else a TemperatureReadError quoting `reading` (what was read, where)."""
        if not self.min_c <= celsius <= self.max_c:
            raise TemperatureReadError(f"{reading} = {celsius:g} °C, outside the plausible range "
                                       f"{self.min_c:g}..{self.max_c:g} °C (a sensor fault code?)")
        return celsius


# ------------------------------------------------------------------------------------------------ sources


class ThermalZoneSource:
    """Linux sysfs thermal zones: `<root>/thermal_zone*/temp` in millidegrees Celsius.

    `zone_type` selects zones whose `type` file matches (e.g. 'x86_pkg_temp', 'cpu-thermal', 'GPU-therm'); empty means
    all zones. The hottest selected zone is reported, and only while EVERY selected zone gives a plausible reading:
    the one that fails may be the hot one. Zones are re-listed on every read; a zone seen before and gone now (driver
    reload, a deleted file) is a failure until it is back."""

    def __init__(self, root: str = "/sys/class/thermal", zone_type: str = "",
                 plausible: PlausibleRange = PlausibleRange()):
        self.root = root
        self.zone_type = zone_type
        self.plausible = plausible
        self._seen: set[str] = set()

    def describe(self) -> str:
        return f"thermal_zone {self.root} type={self.zone_type or '*'}"

    def read_celsius(self) -> float:
        present = sorted(glob.glob(os.path.join(self.root, "thermal_zone*")))
        readings, problems = [], []
        for zone in present:
            try:
                if self.zone_type and _read_text(os.path.join(zone, "type")) != self.zone_type:
                    continue
                self._seen.add(zone)
                readings.append(self._read_zone(zone))
            except TemperatureReadError as error:
                problems.append(str(error))
        problems += [f"{os.path.basename(zone)} ({zone}) vanished" for zone in sorted(self._seen - set(present))]
        wanted = f" of type {self.zone_type!r}" if self.zone_type else ""
        if problems:
            raise TemperatureReadError(f"bad thermal zone{wanted} under {self.root}: {'; '.join(problems)}")
        if not readings:
            raise TemperatureReadError(f"no readable thermal zone{wanted} under {self.root}")
        return max(readings)

    def _read_zone(self, zone: str) -> float:
        path = os.path.join(zone, "temp")
        text = _read_text(path)
        try:
            millidegrees = int(text)
        except ValueError:
            raise TemperatureReadError(f"{os.path.basename(zone)} ({path}): not a temperature in millidegrees: "
                                       f"{text!r}") from None
        return self.plausible.check(millidegrees / 1000.0, f"{os.path.basename(zone)} ({path}) read {text!r}")


def _read_text(path: str) -> str:
    try:
        with open(path) as file:
            return file.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        zone = os.path.basename(os.path.dirname(path))
        raise TemperatureReadError(f"{zone} ({path}): {reason}") from error


class NvmlSource:
    """NVIDIA GPU core temperature through NVML (`pip install nvidia-ml-py`, imported lazily)."""

    def __init__(self, gpu_index: int = 0):
        try:
            import pynvml
        except ImportError as error:
            raise TemperatureReadError(
                "source 'nvml' needs the NVML Python bindings: pip install nvidia-ml-py (import name pynvml)"
            ) from error
        self._nvml = pynvml
        self.gpu_index = gpu_index
        try:
            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(gpu_index)
        except pynvml.NVMLError as error:
            raise TemperatureReadError(f"NVML could not open GPU {gpu_index}: {error}") from error

    def describe(self) -> str:
        return f"nvml gpu {self.gpu_index}"

    def read_celsius(self) -> float:
        try:
            return float(self._nvml.nvmlDeviceGetTemperature(self._handle, self._nvml.NVML_TEMPERATURE_GPU))
        except self._nvml.NVMLError as error:
            raise TemperatureReadError(f"NVML read failed on GPU {self.gpu_index}: {error}") from error


class ScriptedProfile:
    """A temperature script: (seconds, celsius) points, linearly interpolated; for tests, demos and field rehearsal.

    A point with celsius None makes the source fail from that time until the next point (rehearse the fail-safe).
    Before the first point the first value holds; after the last, the last value holds, or the script restarts when
    `loop` is true. `now_seconds` is the clock (the node passes its ROS clock, so sim time works). The script starts
    (t = 0) at the first reading; with `wait_for_clock`, a reading while the clock reads 0 (ROS sim time before the
    first /clock) does not start it: it returns the value at t = 0 and the script starts at the first non-zero time."""

    def __init__(self, points: Sequence[tuple[float, float | None]], loop: bool = False,
                 now_seconds: Callable[[], float] = time.monotonic, wait_for_clock: bool = False):
        points = [(float(t), None if c is None else float(c)) for t, c in points]
        if not points:
            raise ValueError("a scripted temperature profile needs at least one (seconds, celsius) point")
        times = [t for t, _ in points]
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError(f"profile times must be strictly increasing, got {times}")
        if loop and times[-1] <= 0:
            raise ValueError("a looping profile needs a last point after 0 s")
        self.points = points
        self.loop = loop
        self._times = times
        self._now = now_seconds
        self.wait_for_clock = wait_for_clock
        self._start: float | None = None

    @property
    def started_at(self) -> float | None:
        """Clock time at which the script started (t = 0), or None while it has not."""
        return self._start

    @classmethod
    def from_yaml(cls, path: str, now_seconds: Callable[[], float] = time.monotonic,
                  wait_for_clock: bool = False) -> ScriptedProfile:
        import yaml

        with open(path) as file:
            document = yaml.safe_load(file) or {}
        if not isinstance(document, dict) or "points" not in document:
            raise ValueError(f"{path}: expected a mapping with 'points: [[seconds, celsius], ...]' (and 'loop')")
        try:
            points = [(point[0], point[1]) for point in document["points"]]
        except (TypeError, IndexError, KeyError) as error:
            raise ValueError(f"{path}: every point must be [seconds, celsius]") from error
        return cls(points, loop=bool(document.get("loop", False)), now_seconds=now_seconds,
                   wait_for_clock=wait_for_clock)

    def describe(self) -> str:
        return f"scripted {len(self.points)} points{' loop' if self.loop else ''}"

    def celsius_at(self, seconds: float) -> float | None:
        if self.loop and seconds > self._times[-1]:
            seconds = math.fmod(seconds, self._times[-1])
        index = bisect.bisect_right(self._times, seconds) - 1
        if index < 0:
            return self.points[0][1]
        if index >= len(self.points) - 1:
            return self.points[-1][1]
        (t0, c0), (t1, c1) = self.points[index], self.points[index + 1]
        if c0 is None:
            return None
        if c1 is None:
            return c0  # hold the last good value until the failure starts
        return c0 + (c1 - c0) * (seconds - t0) / (t1 - t0)

    def read_celsius(self) -> float:
        now = self._now()
        if self._start is None and not (self.wait_for_clock and now == 0):
            self._start = now
        elapsed = 0.0 if self._start is None else now - self._start
        celsius = self.celsius_at(elapsed)
        if celsius is None:
            raise TemperatureReadError(f"scripted sensor failure at t={elapsed:.1f} s")
        return celsius


class FailedSource:
    """Stands in for a source that could not be created, so the node still runs in fail-safe and says why."""

    def __init__(self, description: str, reason: str):
        self._description = description
        self.reason = reason

    def describe(self) -> str:
        return self._description

    def read_celsius(self) -> float:
        raise TemperatureReadError(self.reason)


# ------------------------------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class PolicyConfig:
    levels: tuple[int, ...] = (36, 24, 16, 12, 8, 6)
    thresholds_c: tuple[float, ...] = (60.0, 70.0, 75.0, 80.0, 85.0)
    hysteresis_c: float = 3.0
    recover_interval_s: float = 10.0

    @classmethod
    def from_values(cls, value) -> PolicyConfig:
        """From parameter values: `value(name)` for budget_levels, thresholds_c, hysteresis_c, recover_interval_s
        (TypeError / ValueError for values of the wrong kind)."""
        return cls(levels=tuple(int(v) for v in value("budget_levels")),
                   thresholds_c=tuple(float(v) for v in value("thresholds_c")),
                   hysteresis_c=float(value("hysteresis_c")), recover_interval_s=float(value("recover_interval_s")))

    def problems(self) -> str | None:
        """A reason the configuration is unusable, or None."""
        if not self.levels:
            return "budget_levels must not be empty"
        if any(level < 0 for level in self.levels):
            return f"budget_levels must be >= 0, got {list(self.levels)}"
        if any(b >= a for a, b in itertools.pairwise(self.levels)):
            return f"budget_levels must be strictly decreasing (coolest first), got {list(self.levels)}"
        if len(self.thresholds_c) != len(self.levels) - 1:
            return (f"thresholds_c needs {len(self.levels) - 1} values (one fewer than budget_levels), "
                    f"got {len(self.thresholds_c)}")
        if any(not math.isfinite(t) for t in self.thresholds_c):
            return f"thresholds_c must be finite, got {list(self.thresholds_c)}"
        if any(b <= a for a, b in itertools.pairwise(self.thresholds_c)):
            return f"thresholds_c must be strictly increasing, got {list(self.thresholds_c)}"
        if not (math.isfinite(self.hysteresis_c) and self.hysteresis_c >= 0):
            return f"hysteresis_c must be >= 0, got {self.hysteresis_c}"
        if not (math.isfinite(self.recover_interval_s) and self.recover_interval_s >= 0):
            return f"recover_interval_s must be >= 0, got {self.recover_interval_s}"
        return None


@dataclass(frozen=True)
class BudgetDecision:
    budget: int
    level: int  # index into levels; len(levels)-1 in fail-safe
    state: str  # NORMAL, THROTTLED, FAILSAFE or OVERRIDE
    temperature_c: float | None
    changed: bool


class BudgetPolicy:
    """Temperature -> budget with thresholds, hysteresis, a recovery rate limit, fail-safe and override."""

    def __init__(self, config: PolicyConfig | None = None):
        self.config = config or PolicyConfig()
        problem = self.config.problems()
        if problem:
            raise ValueError(problem)
        self.override = -1
        self._level: int | None = None
        self._last_change_s: float | None = None
        self._budget: int | None = None

    @property
    def budget(self) -> int | None:
        return self._budget

    def reconfigure(self, config: PolicyConfig) -> None:
        problem = config.problems()
        if problem:
            raise ValueError(problem)
        self.config = config
        if self._level is not None:
            self._level = min(self._level, len(config.levels) - 1)

    def target_level(self, celsius: float, current: int) -> int:
        """Level the temperature asks for, with hysteresis applied only when cooling."""
        thresholds = self.config.thresholds_c
        hotter = bisect.bisect_right(thresholds, celsius)  # thresholds reached
        if hotter >= current:
            return hotter
        cooler = sum(1 for t in thresholds if celsius >= t - self.config.hysteresis_c)
        return min(current, cooler)

    def update(self, celsius: float | None, now_s: float) -> BudgetDecision:
        # Fail-safe = the hottest level: levels run coolest to hottest with strictly decreasing budgets, so the last
        # is the least compute, the least heat, and still a budget the perception node can run. An unknown
        # temperature must be assumed the worst one.
        lowest = len(self.config.levels) - 1
        if celsius is None or not math.isfinite(celsius):
            level, state = lowest, FAILSAFE
        elif self._level is None:
            level = self.target_level(celsius, 0)  # first reading: no history to rate-limit against
            state = None
        else:
            level = self.target_level(celsius, self._level)
            if level < self._level:  # cooling: one level per recover_interval_s
                waited = now_s - (self._last_change_s if self._last_change_s is not None else -math.inf)
                level = self._level - 1 if waited >= self.config.recover_interval_s else self._level
            state = None
        if level != self._level:
            self._level, self._last_change_s = level, now_s
        if state is None:
            state = NORMAL if level == 0 else THROTTLED
        budget = self.config.levels[level]
        if self.override >= 0:
            budget, state = self.override, OVERRIDE
        changed = budget != self._budget
        self._budget = budget
        return BudgetDecision(budget, level, state, None if celsius is None else float(celsius), changed)


# --------------------------------------------------------------------------------------------------- node


def _descriptor(description, read_only=False, float_range=None, int_range=None, dynamic_typing=False):
    descriptor = ParameterDescriptor(description=description, read_only=read_only, dynamic_typing=dynamic_typing)
    if float_range:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float_range[0], to_value=float_range[1])]
    if int_range:
        descriptor.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    return descriptor


_DEFAULTS = PolicyConfig()
_PLAUSIBLE = PlausibleRange()


class ThermalMonitorNode(Node):
    def __init__(self, **kwargs):
        super().__init__("thermal_monitor", **kwargs)
        self.declare_parameter("source", "thermal_zone", _descriptor(
            f"temperature source: {' | '.join(SOURCE_KINDS)}", read_only=True))
        self.declare_parameter("thermal_root", "/sys/class/thermal", _descriptor(
            "sysfs thermal class directory (tests point it at a temp dir)", read_only=True))
        self.declare_parameter("thermal_zone_type", "", _descriptor(
            "zone 'type' to watch (e.g. x86_pkg_temp, cpu-thermal, GPU-therm); empty = all zones (the hottest counts)",
            read_only=True))
        self.declare_parameter("nvml_gpu_index", 0, _descriptor(
            "GPU index for NVML", read_only=True, int_range=(0, 63)))
        self.declare_parameter("profile_file", "", _descriptor(
            "YAML temperature script for source 'scripted'", read_only=True))
        self.declare_parameter("sample_period_s", 1.0, _descriptor(
            "temperature sampling period", read_only=True, float_range=(0.01, 60.0)))
        self.declare_parameter("publish_period_s", 5.0, _descriptor(
            "republish the unchanged budget and diagnostics this often", read_only=True,
            float_range=(0.05, 3600.0)))
        self.declare_parameter("budget_levels", list(_DEFAULTS.levels), _descriptor(
            "budgets from coolest to hottest, strictly decreasing; the last is the fail-safe budget"))
        self.declare_parameter("thresholds_c", list(_DEFAULTS.thresholds_c), _descriptor(
            "temperatures (°C, increasing) where each next budget level starts; one fewer than budget_levels",
            dynamic_typing=True))
        self.declare_parameter("hysteresis_c", _DEFAULTS.hysteresis_c, _descriptor(
            "°C below a threshold before the budget may rise again", float_range=(0.0, 50.0)))
        self.declare_parameter("recover_interval_s", _DEFAULTS.recover_interval_s, _descriptor(
            "seconds between one-level budget increases while cooling", float_range=(0.0, 3600.0)))
        self.declare_parameter("budget_override", -1, _descriptor(
            "publish this budget regardless of temperature; -1 = off", int_range=(-1, 100000)))
        self.declare_parameter("plausible_min_c", _PLAUSIBLE.min_c, _descriptor(
            "readings below this (°C) are sensor faults (fail-safe budget), e.g. -40000 m°C, -273.15 °C",
            read_only=True, float_range=(-273.15, 200.0)))
        self.declare_parameter("plausible_max_c", _PLAUSIBLE.max_c, _descriptor(
            "readings above this (°C) are sensor faults (fail-safe budget), e.g. saturated 127 °C / 255 °C",
            read_only=True, float_range=(-273.15, 200.0)))

        self.policy = BudgetPolicy(self._policy_config_from({}))
        self.policy.override = self.get_parameter("budget_override").value
        self.plausible = PlausibleRange(self.get_parameter("plausible_min_c").value,
                                        self.get_parameter("plausible_max_c").value)
        problem = self.plausible.problems()
        if problem:
            raise ValueError(problem)
        self.source = self._make_source()
        self.last_error = ""
        self.last_decision: BudgetDecision | None = None
        self._script_start_logged = False
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.budget_publisher = self.create_publisher(Int32, BUDGET_TOPIC, BUDGET_PUBLISHER_QOS)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, DIAGNOSTICS_QOS)
        self.sample_timer = self.create_timer(self.get_parameter("sample_period_s").value, self._sample)
        self.publish_timer = self.create_timer(self.get_parameter("publish_period_s").value, self._republish)
        self.get_logger().info(f"thermal_monitor: source {self.source.describe()}, levels "
                               f"{list(self.policy.config.levels)}, publishing {self.budget_publisher.topic_name}")
        self._sample()  # publish a budget right away instead of one period later

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds / 1e9

    def _make_source(self):
        kind = self.get_parameter("source").value
        try:
            if kind == "thermal_zone":
                return ThermalZoneSource(self.get_parameter("thermal_root").value,
                                         self.get_parameter("thermal_zone_type").value, self.plausible)
            if kind == "nvml":
                return NvmlSource(self.get_parameter("nvml_gpu_index").value)
            if kind == "scripted":
                path = self.get_parameter("profile_file").value
                if not path:
                    raise TemperatureReadError("source 'scripted' needs the profile_file parameter")
                # The ROS clock reads 0 under use_sim_time until /clock arrives: start the script after that.
                return ScriptedProfile.from_yaml(path, now_seconds=self._now_s, wait_for_clock=True)
        except (TemperatureReadError, OSError, ValueError) as error:
            # Keep running: publishing the fail-safe budget is safer for the robot than dying.
            self.get_logger().error(f"temperature source {kind!r} unavailable: {error}")
            return FailedSource(kind, str(error))
        raise ValueError(f"parameter source must be one of {', '.join(SOURCE_KINDS)}, got {kind!r}")

    def _policy_config_from(self, overrides: dict) -> PolicyConfig:
        return PolicyConfig.from_values(
            lambda name: overrides[name] if name in overrides else self.get_parameter(name).value)

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters}
        if "thresholds_c" in changes:
            thresholds = parameters[[p.name for p in parameters].index("thresholds_c")]
            allowed = (ParameterType.PARAMETER_DOUBLE_ARRAY, ParameterType.PARAMETER_INTEGER_ARRAY)
            if thresholds.type_.value not in allowed:
                return SetParametersResult(successful=False,
                                           reason="thresholds_c must be a list of numbers (°C)")
        policy_names = {"budget_levels", "thresholds_c", "hysteresis_c", "recover_interval_s"}
        if policy_names & changes.keys():
            try:
                config = self._policy_config_from(changes)
            except (TypeError, ValueError) as error:
                return SetParametersResult(successful=False, reason=f"invalid budget policy value: {error}")
            problem = config.problems()
            if problem:
                return SetParametersResult(successful=False, reason=problem)
            self.policy.reconfigure(config)
        if "budget_override" in changes:
            self.policy.override = int(changes["budget_override"])
        if changes.keys() & (policy_names | {"budget_override"}):
            self._sample()  # apply now, not at the next tick
        return SetParametersResult(successful=True)

    def _sample(self) -> None:
        try:
            celsius = self.plausible.check(self.source.read_celsius(), self.source.describe())
            if self.last_error:
                self.get_logger().info(f"temperature source recovered: {celsius:.1f} °C")
            self.last_error = ""
        except Exception as error:  # any source failure -> fail-safe, never an executor crash
            reason = str(error) or type(error).__name__
            self._log_failure(reason, lasting=bool(self.last_error))
            self.last_error = reason
            celsius = None
        if isinstance(self.source, ScriptedProfile) and not self._script_start_logged:
            self._log_script_start(self.source.started_at)
        decision = self.policy.update(celsius, self._now_s())
        self.last_decision = decision
        if decision.changed:
            self.get_logger().info(f"compute budget {decision.budget} ({decision.state}, "
                                   f"{'n/a' if celsius is None else f'{celsius:.1f} °C'})")
            self._publish(decision)

    def _log_failure(self, error: str, lasting: bool) -> None:
        message = f"temperature source failed, fail-safe budget: {error}"
        if not lasting:
            self.get_logger().error(message)
        else:  # it fails every sample (each one is in the diagnostics): a reminder every FAILURE_LOG_PERIOD_S
            self.get_logger().error(message, throttle_duration_sec=FAILURE_LOG_PERIOD_S, skip_first=True)

    def _log_script_start(self, started_at: float | None) -> None:
        if started_at is None:
            self.get_logger().info("the clock reads 0 (use_sim_time, no /clock yet): the scripted profile holds its "
                                   "first point and starts at the first non-zero time", once=True)
            return
        self._script_start_logged = True
        self.get_logger().info(f"scripted profile started at clock {started_at:.3f} s")

    def _republish(self) -> None:
        if self.last_decision is not None:
            self._publish(self.last_decision)

    def _publish(self, decision: BudgetDecision) -> None:
        self.budget_publisher.publish(Int32(data=int(decision.budget)))
        self.diagnostics_publisher.publish(self._diagnostics(decision))

    def _diagnostics(self, decision: BudgetDecision) -> DiagnosticArray:
        status = DiagnosticStatus(name="thermal_monitor: compute budget", hardware_id=self.source.describe())
        if self.last_error:
            status.level, status.message = DiagnosticStatus.ERROR, f"temperature source failed: {self.last_error}"
        elif decision.state == THROTTLED:
            status.level, status.message = DiagnosticStatus.WARN, "throttled by temperature"
        else:
            status.level, status.message = DiagnosticStatus.OK, decision.state.lower()
        temperature = "n/a" if decision.temperature_c is None else f"{decision.temperature_c:.2f}"
        status.values = [KeyValue(key=k, value=v) for k, v in (
            ("temperature_c", temperature), ("source", self.source.describe()),
            ("budget", str(decision.budget)), ("level", str(decision.level)), ("state", decision.state),
            ("budget_override", str(self.policy.override)), ("last_error", self.last_error))]
        if isinstance(self.source, ScriptedProfile):
            started = self.source.started_at
            status.values.append(KeyValue(key="script", value=(
                "waiting for the clock (sim time at 0): holding the first point" if started is None
                else f"started at clock {started:.3f} s")))
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        return array


def main(args: list[str] | None = None) -> int:
    from rclpy.exceptions import ParameterException

    from admn_ros.nodes.shutdown import spin_until_shutdown

    # Misconfiguration (a bad value, a parameter out of its range): one line saying what is wrong, no traceback.
    return spin_until_shutdown(ThermalMonitorNode, "thermal_monitor", (ValueError, ParameterException), args)


if __name__ == "__main__":
    sys.exit(main())
