"""admn_soak: sustained-load soak of the real admn_node (a separate process) over DDS, with figures and checks.

    admn_soak --duration 60                       # slow-test soak: 3 views x (VGA camera + depth 30 Hz, mic 50 Hz)
    admn_soak --duration 600 --json soak.json     # the benchmark soak
    admn_soak --model tiny.safetensors --device cuda --duration 120

What it does: makes a random-weights bundle of `--preset` (unless `--model` is given), starts admn_node as a child
process (its own interpreter, so its RSS is its own; started as bring-up starts it, with the shipped parameter file
under the soak's own values), and publishes, for every view of the model, camera images
(rgb8, default 640x480 at 30 Hz), depth images (16UC1, same size and rate, same stamps as the camera) and microphone
chunks (the 32FC1 Image carrier, default 50 Hz = 320 samples at 16 kHz) stamped with the wall clock. It records
every allocation the node publishes (end-to-end latency = arrival wall clock - input stamp) and every /diagnostics
status of the node, and samples the node's resident memory once a second (psutil when installed, else /proc).

Reported (and checked, exit status 1 when a check fails):
* memory: RSS after warm-up and at the end, growth, and the least-squares slope (MiB/min) after warm-up;
* queues: the most sets waiting for their audio, the largest synchronizer queue and audio ring seen in diagnostics,
  against their bounds (the pipeline's MAX_PENDING_SETS, sync_queue_size, the ring's capacity);
* latency: end-to-end p50/p90/p99/max over every output, and the node's own model_ms / end_to_end_ms percentiles;
* drops: sets published vs synchronized (transport / sync), dropped_stale (worker busy: latest-only slot), bad input,
  out of order, processed; the drop rate. Every figure is read from the node's /diagnostics, i.e. published.
Large images cross processes through Fast DDS's shared memory, so both processes get the package's
fastdds_large_data.xml profile (FASTDDS_DEFAULT_PROFILES_FILE) unless one is already set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from admn_core.ros_interface import ALLOCATION_TOPIC, DIAGNOSTICS_TOPIC, NODE_NAME, output_topic, sensor_topic
from admn_core.stream.pipeline import MAX_PENDING_SETS
from admn_ros.tools.bringup import (
    FASTDDS_PROFILE_VARIABLE,
    ProcessSpec,
    fastdds_profile_environment,
    node_command,
    start_process,
)
from admn_ros.tools.processes import stop_process

MIB = 1024 * 1024


@dataclass
class SoakConfig:
    duration_s: float = 60.0
    warmup_s: float = 5.0
    preset: str = "tiny"
    model: str | None = None
    device: str = "cpu"
    width: int = 640
    height: int = 480
    camera_hz: float = 30.0
    depth_hz: float = 30.0  # published with the camera's stamps (a synchronized RGB-D camera); == camera_hz
    audio_hz: float = 50.0
    input_qos: str = "sensor_data"
    budget: int = 12
    sync_queue_size: int = 10
    torch_threads: int = 0
    startup_timeout_s: float = 120.0
    max_memory_growth_mib: float = 64.0


@dataclass
class SoakReport:
    config: dict
    node_alive: bool = False
    node_exit_code: int | None = None
    duration_s: float = 0.0
    views: int = 0
    published: dict = field(default_factory=dict)
    outputs: int = 0
    latency_ms: dict = field(default_factory=dict)
    node_latency_ms: dict = field(default_factory=dict)
    memory_mib: dict = field(default_factory=dict)
    queues: dict = field(default_factory=dict)
    drops: dict = field(default_factory=dict)
    diagnostics_seen: int = 0
    inference_level: int | None = None
    inference_message: str = ""
    checks: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(self.checks.values())


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` (psutil when installed, else /proc/<pid>/status)."""
    try:
        import psutil
    except ImportError:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for pid {pid}") from None
    return psutil.Process(pid).memory_info().rss


def _slope_mib_per_min(samples: list[tuple[float, int]]) -> float:
    if len(samples) < 3:
        return float("nan")
    t = np.array([s[0] for s in samples]) / 60.0
    y = np.array([s[1] for s in samples], dtype=np.float64) / MIB
    return float(np.polyfit(t - t[0], y, 1)[0])


def _percentiles(values, quantiles=(50, 90, 99)) -> dict[str, float]:
    if not values:
        return {f"p{q}": float("nan") for q in quantiles} | {"max": float("nan"), "count": 0}
    array = np.asarray(values, dtype=np.float64)
    return {f"p{q}": float(np.percentile(array, q)) for q in quantiles} | {"max": float(array.max()),
                                                                            "count": int(array.size)}


class _Recorder:
    """Driver-side subscriptions: allocations (latency) and the node's diagnostics (latest values, queue maxima)."""

    def __init__(self, node, namespace: str):
        from diagnostic_msgs.msg import DiagnosticArray

        self.lock = threading.Lock()
        self.latencies_ms: list[float] = []
        self.inference: dict[str, str] = {}
        self.inputs: dict[str, str] = {}
        self.inference_level: int | None = None
        self.inference_message = ""
        self.diagnostics_seen = 0
        self.queue_max: dict[str, int] = {}
        node.create_subscription(DiagnosticArray, output_topic(ALLOCATION_TOPIC, namespace), self._on_allocation, 50)
        node.create_subscription(DiagnosticArray, DIAGNOSTICS_TOPIC, self._on_diagnostics, 10)

    def _on_allocation(self, msg) -> None:
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latency = (time.time_ns() - stamp_ns) / 1e6
        with self.lock:
            self.latencies_ms.append(latency)

    def _on_diagnostics(self, msg) -> None:
        with self.lock:
            for status in msg.status:
                values = {kv.key: kv.value for kv in status.values}
                if status.name == "admn_node: inference":
                    self.inference = values
                    self.inference_level = int.from_bytes(status.level, "little") if isinstance(
                        status.level, bytes) else int(status.level)
                    self.inference_message = status.message
                    self.diagnostics_seen += 1
                    self._track("pending_sets", values.get("pending_sets"))
                elif status.name == "admn_node: inputs":
                    self.inputs = values
                    for key, value in values.items():
                        if key.endswith(".queued"):
                            self._track("sync_queue", value)
                        elif key.endswith(".chunks_buffered"):
                            self._track("audio_chunks_buffered", value)

    def _track(self, name: str, value) -> None:
        if value is not None and str(value).isdigit():
            self.queue_max[name] = max(self.queue_max.get(name, 0), int(value))


class _Publisher:
    """All sensor streams of all views, paced by one scheduler thread; counts what it actually published."""

    def __init__(self, node, config, soak: SoakConfig):
        from sensor_msgs.msg import Image

        from admn_ros.msgs.audio import numpy_to_audio_image
        from admn_ros.msgs.conversions import numpy_to_image
        from admn_ros.msgs.qos import sensor_qos

        qos = sensor_qos(soak.input_qos, depth=5)
        self.soak = soak
        self.views = sorted({view for spec in config.modalities for view in spec.views})
        kinds = {spec.kind for spec in config.modalities}
        rng = np.random.default_rng(0)
        self.cameras, self.depths, self.mics = {}, {}, {}
        for view in self.views:
            if "rgb" in kinds:
                frames = [numpy_to_image(rng.integers(0, 256, (soak.height, soak.width, 3), dtype=np.uint8), "rgb8")
                          for _ in range(2)]
                self.cameras[view] = (node.create_publisher(Image, sensor_topic("rgb", view), qos), frames)
            if "depth" in kinds:
                frames = [numpy_to_image(rng.integers(400, 8000, (soak.height, soak.width), dtype=np.uint16), "16UC1")
                          for _ in range(2)]
                self.depths[view] = (node.create_publisher(Image, sensor_topic("depth", view), qos), frames)
            if "audio" in kinds:
                rate = next(s.audio.sample_rate for s in config.modalities if s.kind == "audio")
                self.chunk = round(rate / soak.audio_hz)
                chunks = [numpy_to_audio_image((0.1 * rng.standard_normal(self.chunk)).astype(np.float32))
                          for _ in range(4)]
                self.mics[view] = (node.create_publisher(Image, sensor_topic("audio", view), qos), chunks)
        self.published = {"frame_ticks": 0, "camera_msgs": 0, "depth_msgs": 0, "audio_msgs": 0,
                          "frame_ticks_skipped": 0, "audio_ticks_skipped": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak_publisher", daemon=True)

    def publishers(self):
        return [p for streams in (self.cameras, self.depths, self.mics) for p, _ in streams.values()]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)

    def _run(self) -> None:
        from admn_ros.msgs.conversions import ns_to_stamp

        frame_period, audio_period = 1.0 / self.soak.camera_hz, 1.0 / self.soak.audio_hz
        now = time.monotonic()
        next_frame, next_audio = now, now
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_audio:
                stamp = ns_to_stamp(time.time_ns())  # capture time of the chunk's last sample
                for _publisher, chunks in self.mics.values():
                    msg = chunks[self.published["audio_msgs"] % len(chunks)]
                    msg.header.stamp = stamp
                    _publisher.publish(msg)
                    self.published["audio_msgs"] += 1
                next_audio += audio_period
                if now - next_audio > audio_period:  # overloaded: skip, never burst; counted
                    skipped = int((now - next_audio) / audio_period)
                    self.published["audio_ticks_skipped"] += skipped
                    next_audio += skipped * audio_period
            if now >= next_frame:
                stamp = ns_to_stamp(time.time_ns())
                tick = self.published["frame_ticks"]
                for streams, counter in ((self.cameras, "camera_msgs"), (self.depths, "depth_msgs")):
                    for _publisher, frames in streams.values():
                        msg = frames[tick % len(frames)]
                        msg.header.stamp = stamp
                        _publisher.publish(msg)
                        self.published[counter] += 1
                self.published["frame_ticks"] += 1
                next_frame += frame_period
                if now - next_frame > frame_period:
                    skipped = int((now - next_frame) / frame_period)
                    self.published["frame_ticks_skipped"] += skipped
                    next_frame += skipped * frame_period
            self._stop.wait(max(0.0, min(next_frame, next_audio) - time.monotonic()))


def _make_bundle(soak: SoakConfig, directory: Path) -> Path:
    if soak.model:
        return Path(soak.model).expanduser().resolve()
    from admn_core.bench import random_bundle
    from admn_core.bundle import save_bundle
    from admn_core.presets import preset_config

    config = preset_config(soak.preset)
    budgets = [b for b in (6, 12, 18) if b < 12 * len(config.modalities)]
    return save_bundle(directory / f"{soak.preset}_random.safetensors", random_bundle(config, budgets, seed=0))


def node_spec(soak: SoakConfig, bundle: Path, namespace: str) -> ProcessSpec:
    """admn_node's command: bring-up's, with the soak's model, device, QoS, budget and queue over the shipped file."""
    return node_command(NODE_NAME, namespace=namespace, overrides={
        "model": bundle, "device": soak.device, "input_qos": soak.input_qos, "budget_override": soak.budget,
        "sync_queue_size": soak.sync_queue_size, "torch_threads": soak.torch_threads})


def _use_node_dds_profile(log) -> None:
    """Give this (driver) process the nodes' Fast DDS profile, before rclpy.init: large frames cross by shared memory
    only when both ends use it."""
    if FASTDDS_PROFILE_VARIABLE in os.environ:
        return
    profile = fastdds_profile_environment()
    if "rclpy" in sys.modules:  # Fast DDS may have read its profiles already: this process keeps the defaults
        log(f"admn_soak: warning: {FASTDDS_PROFILE_VARIABLE} set after rclpy was imported in this process; if it "
            "already started a participant, the driver keeps Fast DDS's default transports and large best-effort "
            f"frames may be lost — export {FASTDDS_PROFILE_VARIABLE}={profile[FASTDDS_PROFILE_VARIABLE]} before "
            "starting")
    os.environ.update(profile)


def run_soak(soak: SoakConfig, log=print) -> SoakReport:
    """Run one soak; returns the report (never raises for a failing check: see report.checks)."""
    _use_node_dds_profile(log)
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from admn_core.bundle import inspect_bundle

    report = SoakReport(config=asdict(soak))
    workdir = Path(tempfile.mkdtemp(prefix="admn_soak_"))
    bundle = _make_bundle(soak, workdir)
    model_config = inspect_bundle(bundle).config
    namespace = f"/soak_{uuid.uuid4().hex[:8]}"
    node_log = workdir / "admn_node.log"
    log(f"admn_soak: node log {node_log}; bundle {bundle} ({model_config.name}); namespace {namespace}")
    process = start_process(node_spec(soak, bundle, namespace), node_log)
    context = Context()
    rclpy.init(context=context)
    driver = Node("admn_soak_driver", namespace=namespace, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(driver)
    recorder = _Recorder(driver, namespace)
    publisher = _Publisher(driver, model_config, soak)
    report.views = len(publisher.views)
    spinning = threading.Event()
    spinning.set()

    def spin():
        while spinning.is_set() and context.ok():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, name="soak_spin", daemon=True)
    spinner.start()
    memory: list[tuple[float, int]] = []
    try:
        deadline = time.monotonic() + soak.startup_timeout_s
        while time.monotonic() < deadline and process.poll() is None:
            if all(p.get_subscription_count() >= 1 for p in publisher.publishers()) and recorder.diagnostics_seen:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"admn_node did not come up within {soak.startup_timeout_s:.0f} s (exit code "
                               f"{process.poll()}); see {node_log}:\n{node_log.read_text()[-3000:]}")
        log(f"admn_soak: node up (pid {process.pid}); publishing {len(publisher.views)} views for "
            f"{soak.duration_s:.0f} s")
        started = time.monotonic()
        publisher.start()
        while time.monotonic() - started < soak.duration_s and process.poll() is None:
            memory.append((time.monotonic() - started, rss_bytes(process.pid)))
            time.sleep(1.0)
        report.duration_s = time.monotonic() - started
        publisher.stop()
        time.sleep(1.5)  # the last outputs and one more diagnostics round
        report.node_alive = process.poll() is None
        if report.node_alive:
            memory.append((time.monotonic() - started, rss_bytes(process.pid)))
    finally:
        publisher.stop()
        report.node_exit_code = stop_process(process)
        spinning.clear()
        spinner.join(5.0)
        executor.shutdown()
        driver.destroy_node()
        rclpy.try_shutdown(context=context)
    _fill_report(report, soak, publisher, recorder, memory, model_config)
    return report


def _fill_report(report, soak, publisher, recorder, memory, model_config) -> None:
    with recorder.lock:
        latencies = list(recorder.latencies_ms)
        inference, inputs = dict(recorder.inference), dict(recorder.inputs)
        report.queues = {f"{k}_max": v for k, v in recorder.queue_max.items()}
        report.diagnostics_seen = recorder.diagnostics_seen
        report.inference_level, report.inference_message = recorder.inference_level, recorder.inference_message
    report.published = dict(publisher.published)
    report.outputs = len(latencies)
    # Latency of the first seconds includes warm-up (first inferences, discovery); report steady state.
    report.latency_ms = _percentiles(latencies[len(latencies) // 10:])
    report.node_latency_ms = {k: float(v) for k, v in inference.items()
                              if k.startswith(("model_ms_", "end_to_end_ms_", "preprocess_ms_"))}
    after = [(t, rss) for t, rss in memory if t >= soak.warmup_s] or memory
    if after:
        report.memory_mib = {"rss_after_warmup": after[0][1] / MIB, "rss_end": after[-1][1] / MIB,
                             "growth": (after[-1][1] - after[0][1]) / MIB,
                             "rss_max": max(r for _, r in memory) / MIB,
                             "slope_mib_per_min": _slope_mib_per_min(after), "samples": len(memory),
                             "source": "psutil" if _has_psutil() else "/proc"}
    counters = ("sets_received", "sets_processed", "dropped_stale", "dropped_bad_input", "dropped_out_of_order",
                "skipped_budget", "failed", "audio_windows_missing", "dropped_non_finite_output", "time_jumps")
    drops = {name: int(inference[name]) for name in counters if name in inference}
    ticks = publisher.published["frame_ticks"]
    drops["sets_published"] = ticks
    if "sets_received" in drops:
        drops["lost_before_sync"] = max(0, ticks - drops["sets_received"])
        processed = drops.get("sets_processed", 0)
        drops["drop_rate"] = (ticks - processed) / ticks if ticks else float("nan")
        drops["stale_rate"] = drops.get("dropped_stale", 0) / ticks if ticks else float("nan")
    drops["sync_dropped_per_topic"] = {k.rsplit(".", 1)[0]: v for k, v in inputs.items() if k.endswith(".dropped")}
    report.drops = drops
    ring_bound = _ring_bound(model_config, soak)
    report.queues.update({"pending_sets_bound": MAX_PENDING_SETS, "sync_queue_bound": soak.sync_queue_size,
                          "audio_chunks_bound": ring_bound})
    report.checks = {
        "node_alive_until_stopped": report.node_alive,
        "node_exit_clean": report.node_exit_code == 0,
        "outputs_published": report.outputs > 0,
        "diagnostics_published": report.diagnostics_seen > 0 and bool(drops.get("sets_published")),
        "no_inference_failures": drops.get("failed", 1) == 0,
        "pending_sets_bounded": report.queues.get("pending_sets_max", 0) <= MAX_PENDING_SETS,
        "sync_queues_bounded": report.queues.get("sync_queue_max", 0) <= soak.sync_queue_size,
        "audio_rings_bounded": report.queues.get("audio_chunks_buffered_max", 0) <= ring_bound,
        "memory_flat": bool(report.memory_mib) and report.memory_mib["growth"] <= soak.max_memory_growth_mib,
        # Every synchronized set ends in exactly one counter (1 of slack: a set in flight at the last snapshot).
        "drops_accounted": abs(drops.get("sets_received", 0) - sum(drops.get(name, 0) for name in (
            "sets_processed", "dropped_stale", "dropped_bad_input", "dropped_out_of_order", "skipped_budget",
            "failed", "dropped_non_finite_output"))) <= 1,
    }


def _ring_bound(model_config, soak: SoakConfig) -> int:
    audio = [s for s in model_config.modalities if s.kind == "audio"]
    if not audio:
        return 0
    capacity_s = audio[0].audio_window_seconds + 2.0  # admn_node's ring: window + 2 s of history
    return int(np.ceil(capacity_s * soak.audio_hz)) + 2


def _has_psutil() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


def format_report(report: SoakReport) -> str:
    memory, latency, drops, queues = report.memory_mib, report.latency_ms, report.drops, report.queues
    lines = [
        f"admn_soak: {report.duration_s:.1f} s, {report.views} views x (camera {report.config['width']}x"
        f"{report.config['height']} @ {report.config['camera_hz']:g} Hz + depth @ {report.config['depth_hz']:g} Hz + "
        f"audio @ {report.config['audio_hz']:g} Hz), device {report.config['device']}, "
        f"budget {report.config['budget']}",
        f"  published: {report.published}",
        f"  outputs: {report.outputs}; end-to-end latency ms (steady state): p50 {latency.get('p50', float('nan')):.1f}"
        f" p90 {latency.get('p90', float('nan')):.1f} p99 {latency.get('p99', float('nan')):.1f} max "
        f"{latency.get('max', float('nan')):.1f}; node: {report.node_latency_ms}",
    ]
    if memory:
        lines.append(f"  memory ({memory['source']}): RSS {memory['rss_after_warmup']:.1f} MiB after warm-up -> "
                     f"{memory['rss_end']:.1f} MiB at the end (growth {memory['growth']:+.1f} MiB, slope "
                     f"{memory['slope_mib_per_min']:+.2f} MiB/min, max {memory['rss_max']:.1f} MiB)")
    lines.append(f"  drops: {drops}")
    lines.append(f"  queues (max seen / bound): {queues}")
    lines.append(f"  node status at the end: level {report.inference_level} '{report.inference_message}'")
    lines.append("  checks: " + ", ".join(f"{k}={'ok' if v else 'FAIL'}" for k, v in report.checks.items()))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[SoakConfig, str | None]:
    defaults = SoakConfig()
    parser = argparse.ArgumentParser(prog="admn_soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=defaults.duration_s, help="seconds of load (default 60)")
    parser.add_argument("--warmup", type=float, default=defaults.warmup_s,
                        help="seconds excluded from the memory-growth figure (default 5)")
    parser.add_argument("--preset", default=defaults.preset, help="model preset for a random bundle (default tiny)")
    parser.add_argument("--model", help="an existing .safetensors bundle instead of a random one")
    parser.add_argument("--device", default=defaults.device, help="cpu | cuda | cuda:N")
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--height", type=int, default=defaults.height)
    parser.add_argument("--camera-hz", type=float, default=defaults.camera_hz, help="camera and depth rate")
    parser.add_argument("--audio-hz", type=float, default=defaults.audio_hz, help="microphone chunk rate")
    parser.add_argument("--input-qos", default=defaults.input_qos, choices=("sensor_data", "reliable"))
    parser.add_argument("--budget", type=int, default=defaults.budget, help="budget_override for the node")
    parser.add_argument("--torch-threads", type=int, default=defaults.torch_threads)
    parser.add_argument("--max-memory-growth-mib", type=float, default=defaults.max_memory_growth_mib)
    parser.add_argument("--json", help="write the report as JSON here")
    args = parser.parse_args(argv)
    return SoakConfig(duration_s=args.duration, warmup_s=args.warmup, preset=args.preset, model=args.model,
                      device=args.device, width=args.width, height=args.height, camera_hz=args.camera_hz,
                      depth_hz=args.camera_hz, audio_hz=args.audio_hz, input_qos=args.input_qos, budget=args.budget,
                      torch_threads=args.torch_threads, max_memory_growth_mib=args.max_memory_growth_mib), args.json


def main(argv: list[str] | None = None) -> int:
    soak, json_path = parse_args(argv)
    report = run_soak(soak)
    print(format_report(report))
    if json_path:
        Path(json_path).write_text(json.dumps(asdict(report) | {"passed": report.passed}, indent=2, default=str))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
