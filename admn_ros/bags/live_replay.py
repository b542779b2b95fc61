"""Live bag replay, as users do it with `ros2 bag play --clock`: publish a bag over DDS into a running admn_node.

    admn_live_replay BAG --model tiny.safetensors [--start-node] [--namespace NS] [--bag-namespace NS] [--rate R]
                     [--out DIR]

plays BAG with /clock into the admn_node under NS (started here, with use_sim_time, by --start-node; otherwise one
already running with use_sim_time:=true), records its outputs and writes OUT/live_frames.csv and OUT/summary.txt.
MODEL is the node's bundle: its config says which topics form a synchronized set. Exit codes: 0 replayed; 2 bad
arguments, model or bag; 3 no output received; 130 interrupted.

* `BagPlayer`: streams the bag with rosbags and publishes each message's raw CDR bytes (`publisher.publish(bytes)`;
  no deserialization) at the bag's rate (scaled by `rate`), publishing `/clock` = the message's bag time before it
  (the bag's own /clock topic is skipped: the player is the clock). Topics whose type has no rclpy class here are
  skipped with a warning naming the topic and type (rclpy needs the type support to create a publisher).
* `OutputRecorder`: records the node's `~/pose` and `~/allocation` and turns them into `FrameRecord`s (the offline
  evaluator's format), joined by the synchronized input stamp the node puts in both headers.
* `start_node()`: admn_node as a child process with use_sim_time, started as bring-up starts it
  (`admn_ros.tools.bringup.node_command`: the shipped parameter file, the Fast DDS profile rule), on loopback discovery
  unless ROS_AUTOMATIC_DISCOVERY_RANGE is set; `stop_process()`: SIGINT, then terminate/kill.
* `run_live_replay()`: wires them together, waits for discovery, plays, collects, joins ground truth and reports the
  output rate (outputs / synchronized sets of the bag) and gaps (a node that died or restarted mid-replay: runs of
  synchronized sets without any output are reported and the replay carries on).
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from admn_core.ros_interface import ALLOCATION_TOPIC, CLOCK_TOPIC, NODE_NAME, POSE_TOPIC, output_topic
from admn_ros.bags.bag_reader import BagError, open_bag, open_reader
from admn_ros.bags.replay_eval import FrameRecord, attach_ground_truth, read_ground_truth, synchronized_stamps
from admn_ros.bags.replay_report import find_gaps
from admn_ros.tools.bringup import ProcessSpec, node_command, start_process
from admn_ros.tools.processes import stop_process  # also re-exported for the demo and tests


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy class, or None when it is not installed here."""
    package, _, name = msgtype.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        return None


@dataclass
class PlayStats:
    published: int = 0
    skipped_topics: dict = field(default_factory=dict)  # topic -> reason
    wall_s: float = 0.0
    bag_s: float = 0.0
    max_lag_ms: float = 0.0  # how far publishing fell behind the bag's schedule
    stream_error: str | None = None


class BagPlayer:
    def __init__(self, node, bag, rate: float = 1.0, publish_clock: bool = True, exclude=(CLOCK_TOPIC,),
                 topics: set | None = None, qos_depth: int = 100, remap: dict | None = None):
        from rclpy.qos import QoSProfile

        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.node, self.bag, self.rate = node, Path(bag), rate
        self.reader = open_reader(bag)
        self.start_ns = int(self.reader.start_time)
        self.stats = PlayStats()
        self.publishers, self.connections = {}, []
        qos = QoSProfile(depth=qos_depth)
        for connection in self.reader.connections:
            topic = connection.topic
            if topic in exclude or (topics is not None and topic not in topics):
                continue
            cls = message_class(connection.msgtype)
            if cls is None:
                self.stats.skipped_topics[topic] = (f"type {connection.msgtype} has no Python message class here "
                                                    "(not installed); not published")
                continue
            if topic not in self.publishers:
                self.publishers[topic] = node.create_publisher(cls, (remap or {}).get(topic, topic), qos)
            self.connections.append(connection)
        self.clock_publisher = None
        if publish_clock:
            from rosgraph_msgs.msg import Clock

            self.clock_publisher = node.create_publisher(Clock, CLOCK_TOPIC, QoSProfile(depth=10))


    def subscribers_ready(self, topics) -> bool:
        return all(self.publishers[t].get_subscription_count() >= 1 for t in topics)

    def play(self, stop: threading.Event | None = None, on_progress: Callable | None = None) -> PlayStats:
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        started_wall = time.monotonic()
        last_clock = None
        iterator = self.reader.messages(connections=self.connections)
        last_progress = 0.0
        while stop is None or not stop.is_set():
            try:
                connection, timestamp, raw = next(iterator)
            except StopIteration:
                break
            except Exception as error:  # truncated file: stop playing, say where
                self.stats.stream_error = (f"{self.bag}: playback stopped after {self.stats.published} messages "
                                           f"({type(error).__name__}: {error})")
                break
            due = started_wall + (timestamp - self.start_ns) / 1e9 / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                self.stats.max_lag_ms = max(self.stats.max_lag_ms, -1e3 * delay)
            if self.clock_publisher is not None and (last_clock is None or timestamp > last_clock):
                self.clock_publisher.publish(Clock(clock=Time(sec=timestamp // 10**9, nanosec=timestamp % 10**9)))
                last_clock = timestamp
            self.publishers[connection.topic].publish(bytes(raw))
            self.stats.published += 1
            self.stats.bag_s = (timestamp - self.start_ns) / 1e9
            if on_progress is not None and time.monotonic() - last_progress > 0.1:
                last_progress = time.monotonic()
                on_progress(self.stats.bag_s)
        self.stats.wall_s = time.monotonic() - started_wall
        return self.stats

    def close(self) -> None:
        try:
            self.reader.close()
        except Exception:
            pass


class OutputRecorder:
    """Subscribes admn_node's `~/pose` and `~/allocation` under `namespace`; both carry the synchronized input
    stamp."""

    def __init__(self, node, namespace: str = "", on_output: Callable | None = None):
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from rclpy.qos import QoSProfile

        self.poses, self.allocations = {}, {}
        self.arrivals = []  # (monotonic, stamp) of completed outputs
        self.lock = threading.Lock()
        self.on_output = on_output
        self.latest_budget = None
        qos = QoSProfile(depth=200)
        self.pose_topic = output_topic(POSE_TOPIC, namespace)
        self.allocation_topic = output_topic(ALLOCATION_TOPIC, namespace)
        node.create_subscription(PoseWithCovarianceStamped, self.pose_topic, self._on_pose, qos)
        node.create_subscription(DiagnosticArray, self.allocation_topic, self._on_allocation, qos)
        self.node = node

    def watch_budget(self) -> None:
        from admn_ros.msgs.qos import subscribe_budget

        subscribe_budget(self.node, lambda msg: setattr(self, "latest_budget", int(msg.data)))

    @staticmethod
    def _stamp(msg) -> int:
        return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)

    def _on_pose(self, msg) -> None:
        stamp = self._stamp(msg)
        with self.lock:
            self.poses[stamp] = (msg.pose.pose.position.x, msg.pose.pose.position.y)
        self._maybe_complete(stamp)

    def _on_allocation(self, msg) -> None:
        stamp = self._stamp(msg)
        with self.lock:
            self.allocations[stamp] = {kv.key: kv.value for kv in msg.status[0].values}
        self._maybe_complete(stamp)

    def _maybe_complete(self, stamp: int) -> None:
        with self.lock:
            if stamp not in self.poses or stamp not in self.allocations:
                return
            self.arrivals.append((time.monotonic(), stamp))
            record = self._record(stamp)
        if self.on_output is not None:
            self.on_output(record)

    def _record(self, stamp: int) -> FrameRecord:
        values = self.allocations.get(stamp, {})
        record = FrameRecord(stamp, budget_origin=values.get("budget_origin", ""))
        if "budget_requested" in values:
            record.budget = int(values["budget_requested"])
            record.budget_used = int(values["budget_used"])
        record.source = values.get("source", "")
        record.active_blocks = {key.removeprefix("active_blocks."): [int(b) for b in value.split(",") if b]
                                for key, value in values.items() if key.startswith("active_blocks.")}
        record.position = self.poses.get(stamp)
        if "inference_ms" in values:
            record.inference_ms = float(values["inference_ms"])
        if record.position is None:
            record.status, record.reason = "no_output", "allocation without pose"
        return record

    def records(self) -> list[FrameRecord]:
        with self.lock:
            return [self._record(s) for s in sorted(set(self.poses) | set(self.allocations))]

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)


def node_spec(model, namespace: str = "", use_sim_time: bool = True, parameters: dict | None = None,
              env: dict | None = None) -> ProcessSpec:
    """admn_node's command: bring-up's, with `model`, `use_sim_time` and `parameters` over the shipped file."""
    discovery = {"ROS_AUTOMATIC_DISCOVERY_RANGE": os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")}
    overrides = {"model": Path(model).expanduser().resolve(), "use_sim_time": use_sim_time, **(parameters or {})}
    return node_command(NODE_NAME, overrides=overrides, namespace=namespace, env={**discovery, **(env or {})})


def start_node(model, namespace: str = "", use_sim_time: bool = True, parameters: dict | None = None,
               log_path: str | Path | None = None, env: dict | None = None) -> subprocess.Popen:
    """admn_node as a child process (see `node_spec`), its output appended to `log_path`."""
    return start_process(node_spec(model, namespace, use_sim_time, parameters, env), log_path)


@dataclass
class LiveResult:
    records: list  # FrameRecords of the node's outputs, ground truth attached
    expected_stamps: list  # synchronized sets the bag yields (the node's synchronizer, offline)
    play: PlayStats
    gaps: list  # (first_ns, last_ns, missing sets)
    warnings: list

    @property
    def output_fraction(self) -> float:
        have = {r.stamp_ns for r in self.records if r.ok}
        return len(have & set(self.expected_stamps)) / max(1, len(self.expected_stamps))


class Spinner:
    """Spins an executor on a background thread until stopped."""

    def __init__(self, executor):
        self.executor = executor
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="replay_spin", daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join(timeout=5.0)


def wait_for(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return predicate()


def run_live_replay(bag, config, context=None, namespace: str = "", bag_namespace: str = "", rate: float = 1.0,
                    discovery_timeout_s=60.0,
                    tail_timeout_s: float = 5.0, on_output: Callable | None = None,
                    on_progress: Callable | None = None, during_play: Callable | None = None,
                    watch_budget: bool = False, recorder_hook: Callable | None = None,
                    node_process: subprocess.Popen | None = None,
                    before_play: Callable | None = None) -> LiveResult:
    """Play `bag` into an already running admn_node (under `namespace`) and record its outputs.

    Sensor topics recorded under `bag_namespace` are published under the node's `namespace` (like
    `ros2 bag play --remap`); other topics keep their names.

    `context`: an initialised rclpy Context (None = the default one, initialised here if needed).
    `before_play(recorder)`: called once the node is discovered, right before playing (the demo starts
    thermal_monitor there). `during_play(player)`: called on a thread while playing (tests kill/restart the node).
    `node_process`: the node's Popen, if started by us: its early exit is reported instead of a discovery timeout."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    if context is None and not rclpy.ok():
        rclpy.init()
    warnings = []
    expected = synchronized_stamps(bag, config, bag_namespace)
    ns = f"/{namespace.strip('/')}" if namespace.strip("/") else ""
    bag_ns = f"/{bag_namespace.strip('/')}" if bag_namespace.strip("/") else ""
    with open_bag(bag, config, bag_namespace) as plan:
        sensor_topics = list(plan.sensors)
    remap = {topic: ns + topic[len(bag_ns):] for topic in sensor_topics}
    node = Node("admn_bag_player", context=context) if context is not None else Node("admn_bag_player")
    executor = SingleThreadedExecutor(context=context) if context is not None else SingleThreadedExecutor()
    executor.add_node(node)
    player = BagPlayer(node, bag, rate, remap=remap)
    recorder = OutputRecorder(node, namespace, on_output)
    if watch_budget:
        recorder.watch_budget()
    if recorder_hook is not None:
        recorder_hook(recorder)
    warnings += [f"{topic}: {reason}" for topic, reason in player.stats.skipped_topics.items()]
    sensor_topics = [t for t in sensor_topics if t in player.publishers]
    try:
        with Spinner(executor):
            def node_died():
                return node_process is not None and node_process.poll() is not None

            ready = wait_for(lambda: node_died() or (player.subscribers_ready(sensor_topics)
                             and node.count_publishers(recorder.allocation_topic) >= 1), discovery_timeout_s)
            if node_died():
                raise BagError(f"admn_node exited with code {node_process.returncode} before the replay started "
                               "(see its log)")
            if not ready:
                raise BagError(f"admn_node under '{ns or '/'}' did not subscribe to "
                               f"{', '.join(remap[t] for t in sensor_topics)} "
                               f"within {discovery_timeout_s:.0f} s (is it running, with use_sim_time and the "
                               "same ROS_DOMAIN_ID / ROS_AUTOMATIC_DISCOVERY_RANGE?)")
            if before_play is not None:
                before_play(recorder)
            time.sleep(0.3)  # let the readers match every writer (volatile QoS drops what precedes matching)
            helper = None
            if during_play is not None:
                helper = threading.Thread(target=during_play, args=(player,), daemon=True)
                helper.start()
            player.play(on_progress=on_progress)
            last = max(expected, default=None)
            wait_for(lambda: last is None or last in recorder.allocations, tail_timeout_s)
            time.sleep(0.2)
            if helper is not None:
                helper.join(timeout=30.0)
    finally:
        player.close()
        executor.remove_node(node)
        node.destroy_node()
    if player.stats.stream_error:
        warnings.append(player.stats.stream_error)
    records = recorder.records()
    poses, labels = read_ground_truth(bag, config, bag_namespace)
    attach_ground_truth(records, poses, labels, player.start_ns, config.head.task)
    period = _median_period(expected)
    gaps = find_gaps(expected, [r.stamp_ns for r in records if r.ok], period)
    for first, last_ns, count in gaps:
        warnings.append(f"no output for {count} synchronized sets from {(first - player.start_ns) / 1e9:.2f} s to "
                        f"{(last_ns - player.start_ns) / 1e9:.2f} s of the bag (node down, restarting or too slow); "
                        "evaluation carried on")
    return LiveResult(records, expected, player.stats, gaps, warnings)


def _median_period(stamps) -> float:
    stamps = sorted(stamps)
    if len(stamps) < 2:
        return 0.0
    diffs = sorted(b - a for a, b in itertools.pairwise(stamps))
    return diffs[len(diffs) // 2] / 1e9


EXIT_BAD_INPUT = 2
EXIT_NO_OUTPUT = 3
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="admn_live_replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", help="rosbag2 folder, its metadata.yaml, or a .db3/.mcap file")
    parser.add_argument("--model", required=True, help="the node's model bundle (.safetensors)")
    parser.add_argument("--start-node", action="store_true",
                        help="start admn_node here (use_sim_time) instead of using a running one")
    parser.add_argument("--namespace", default="", help="namespace of the admn_node to feed")
    parser.add_argument("--bag-namespace", default="", help="namespace of the bag's sensor topics")
    parser.add_argument("--rate", type=float, default=1.0, help="playback rate (default 1.0)")
    parser.add_argument("--discovery-timeout", type=float, default=60.0,
                        help="seconds to wait for the node's subscriptions (default 60)")
    parser.add_argument("--out", default="artifacts/live_replay", help="output directory (CSV, summary)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _replay(args)
    except KeyboardInterrupt:
        print("admn_live_replay: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _replay(args) -> int:
    from admn_core.bundle import BundleError, read_bundle_header
    from admn_core.config import ConfigError, ModelConfig
    from admn_ros.bags.replay_cli import prepare_out_dir
    from admn_ros.bags.replay_report import format_summary, summarize, write_csv

    node = None
    try:
        out = prepare_out_dir(args.out)
        open_reader(args.bag).close()
        config = ModelConfig.from_json(read_bundle_header(args.model)["config"])
        if args.start_node:
            node = start_node(args.model, args.namespace, log_path=out / "admn_node.log")
        result = run_live_replay(args.bag, config, namespace=args.namespace, bag_namespace=args.bag_namespace,
                                 rate=args.rate, discovery_timeout_s=args.discovery_timeout, node_process=node)
    except (BundleError, BagError, ConfigError, KeyError, ValueError, OSError) as error:
        print(f"admn_live_replay: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if node is not None:
            stop_process(node)
    for warning in result.warnings:
        print(f"admn_live_replay: note: {warning}", file=sys.stderr)
    csv_path = write_csv(result.records, out / "live_frames.csv")
    summary = format_summary(summarize(result.records), title=f"ADMN live replay of {Path(args.bag).name}")
    (out / "summary.txt").write_text(summary + "\n")
    print(summary)
    print(f"outputs for {result.output_fraction:.1%} of the bag's {len(result.expected_stamps)} synchronized sets; "
          f"wrote {csv_path} and {out / 'summary.txt'}")
    return 0 if result.records else EXIT_NO_OUTPUT


if __name__ == "__main__":
    sys.exit(main())
