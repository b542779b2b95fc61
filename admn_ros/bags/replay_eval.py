"""Offline bag evaluation: stream a rosbag2 through admn_node's own frame pipeline (no DDS) and score it.

The same object as the node: `admn_core.stream.pipeline.FramePipeline` with the node's synchronizer (message_filters
when importable, else the builtin one; `sync_backend` chooses), decoding (`admn_ros.msgs.frame_assembly`),
set-completeness
rule, budget rules and output checks. Messages are fed in bag order at their bag (log) times, so each set is
evaluated with exactly the audio an idle node had when it processed that set. What the node does differently by
design: it drops sets while its worker is busy (`dropped_stale`); offline evaluates every set.

Budget sources (`BudgetSource`): a fixed budget, a schedule [(seconds since bag start, budget), ...], the bag's own
`/compute_budget` (latest value wins, `default_budget` before the first), or a per-stamp map (to re-run a live
replay's budgets and compare).

Results are `FrameRecord`s; `write_csv`, `summarize`, `format_summary` (replay_report) and `plots.plot_timeline`
turn them into the per-frame CSV, the summary table and the PNG.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from admn_core.ros_interface import NODE_DEFAULTS
from admn_core.stream.pipeline import (
    TIME_JUMP_BACK_S,  # noqa: F401 - the node's rule, re-exported for offline use
    FramePipeline,
    InputFilter,
)
from admn_core.stream.throttled_log import ThrottledLog
from admn_ros.bags.bag_reader import (
    BagPlan,
    ClassLabels,
    corruption_label,
    open_bag,
    stamp_ns,
    stream,
    truth_of,
    truth_stamp_ns,
)
from admn_ros.msgs.frame_assembly import FrameAssembler, synchronizer_factory
from admn_ros.msgs.sync import MESSAGE_FILTERS

GT_TOLERANCE_S = 0.034  # ground truth joined to the nearest pose stamp within this (half a 15 Hz frame)


@dataclass
class FrameRecord:
    stamp_ns: int
    status: str = "ok"  # ok | skipped_budget | bad_input | out_of_order | no_output
    reason: str = ""
    budget: int | None = None
    budget_origin: str = ""
    budget_used: int | None = None
    source: str = ""
    active_blocks: dict = field(default_factory=dict)  # modality -> list of block indices
    position: tuple | None = None  # (x, y) metres
    ground_truth: tuple | None = None  # (x, y) metres
    error_cm: float | None = None
    predicted_class: int | None = None  # classification models: the most probable class
    true_class: int | None = None
    corruption: str = ""
    episode: str = ""
    inference_ms: float | None = None
    t_s: float = 0.0  # seconds since the bag's start

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def correct(self) -> bool | None:
        """Classification: the predicted class is the labelled one (None without both)."""
        if self.predicted_class is None or self.true_class is None:
            return None
        return self.predicted_class == self.true_class


class BudgetSource:
    """Which budget each synchronized set is evaluated under (see the module docstring)."""

    def __init__(self, kind: str, fixed: int | None = None, schedule: Sequence | None = None,
                 per_stamp: dict | None = None, default: int = NODE_DEFAULTS.default_budget):
        if kind not in ("fixed", "schedule", "bag", "per_stamp"):
            raise ValueError(f"budget source must be fixed | schedule | bag | per_stamp, got {kind!r}")
        self.kind, self.fixed, self.default = kind, fixed, int(default)
        self.schedule = sorted((float(t), int(b)) for t, b in (schedule or []))
        self._schedule_times = [t for t, _ in self.schedule]
        self.per_stamp = per_stamp or {}
        self.latest_topic: int | None = None

    @classmethod
    def parse(cls, text: str, default: int = NODE_DEFAULTS.default_budget) -> BudgetSource:
        """'12' -> fixed; 'bag' -> /compute_budget; '0:36,20:16,40:6' -> schedule (seconds:budget)."""
        text = str(text).strip()
        if text == "bag":
            return cls("bag", default=default)
        if ":" in text:
            try:
                points = [(float(t), int(b)) for t, b in (item.split(":") for item in text.split(","))]
            except ValueError:
                raise ValueError(f"budget schedule must look like '0:36,20:16', got {text!r}") from None
            return cls("schedule", schedule=points, default=default)
        try:
            return cls("fixed", fixed=int(text))
        except ValueError:
            raise ValueError(f"budget must be an integer, 'bag' or a schedule 't:b,...', got {text!r}") from None

    def on_budget_message(self, value: int) -> None:
        self.latest_topic = int(value)

    def budget_at(self, stamp: int, t_s: float) -> tuple[int | None, str]:
        if self.kind == "fixed":
            return self.fixed, "fixed"
        if self.kind == "schedule":
            index = bisect.bisect_right(self._schedule_times, t_s) - 1
            return (self.schedule[index][1], "schedule") if index >= 0 else (self.default, "default")
        if self.kind == "bag":
            return (self.latest_topic, "topic") if self.latest_topic is not None else (self.default, "default")
        budget = self.per_stamp.get(stamp)
        return (budget, "live") if budget is not None else (None, "no live budget")


_log = logging.getLogger(__name__)


def stamp_adapter(synchronizer) -> Callable:
    """msg -> msg as `synchronizer` reads it: message_filters converts header.stamp with rclpy's Time.from_msg, which
    takes only builtin_interfaces/Time, so a rosbags message gets that type (same sec/nanosec)."""
    if synchronizer is None or synchronizer.implementation != MESSAGE_FILTERS:
        return lambda msg: msg
    from builtin_interfaces.msg import Time

    def adapt(msg):
        msg.header.stamp = Time(sec=int(msg.header.stamp.sec), nanosec=int(msg.header.stamp.nanosec))
        return msg

    return adapt


class BagClock:
    """The pipeline's clock offline: the log time (seconds) of the message being fed."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class EvalResult:
    records: list
    bag: str
    warnings: list
    sets: int = 0
    bad_input: dict = field(default_factory=dict)  # topic/key -> count
    stream_error: str | None = None
    seconds: float = 0.0
    duration_s: float = 0.0
    interrupted: bool = False  # Ctrl-C: the records cover the part read before it
    read_counts: dict = field(default_factory=dict)  # topic -> (read, declared by the bag)
    stamps: dict = field(default_factory=dict)  # camera/depth topic -> StampAudit
    empty_depth: dict = field(default_factory=dict)  # (view, modality) -> frames without one valid depth pixel

    def ok_records(self) -> list:
        return [r for r in self.records if r.ok]


@dataclass
class StampAudit:
    """Header stamps of one camera/depth topic: the synchronizer pairs by them, so zero or backward stamps collapse
    frames into few sets (or drop them as out of order)."""

    messages: int = 0
    zero: int = 0
    backward: int = 0
    last: int | None = None

    def add(self, stamp: int) -> None:
        self.messages += 1
        self.zero += stamp == 0
        self.backward += self.last is not None and stamp < self.last
        self.last = stamp

    def problem(self) -> str | None:
        parts = ([f"{self.zero} of {self.messages} header stamps are zero"] if self.zero else []) + (
            [f"{self.backward} of {self.messages} header stamps run backwards"] if self.backward else [])
        return "; ".join(parts) or None


class SyncedStream:
    """The node's synchronizer over a bag: calls on_set(stamp_ns, {key: msg}) per emitted set."""

    def __init__(self, plan: BagPlan, config, on_set: Callable, slop: float = NODE_DEFAULTS.sync_slop,
                 queue_size: int = NODE_DEFAULTS.sync_queue_size, backend: str = "auto"):
        self.keys, self.inputs = [], {}
        by_key = {sensor.key: topic for topic, sensor in plan.sensors.items()}
        # The node's input order: modalities then views; camera/depth only (audio is not synchronized).
        for spec in config.modalities:
            for view in spec.views:
                topic = by_key.get((view, spec.name))
                if spec.kind != "audio" and topic is not None:
                    self.inputs[topic] = InputFilter(topic)
                    self.keys.append((view, spec.name))
        filters = list(self.inputs.values())
        self._on_set = on_set
        if len(filters) >= 2:
            self.synchronizer = synchronizer_factory(slop, queue_size, backend)(filters)
            self.synchronizer.registerCallback(self._emit)
        else:
            self.synchronizer = None
            filters[0].registerCallback(self._emit)
        self._adapt = stamp_adapter(self.synchronizer)

    def _emit(self, *messages) -> None:
        self._on_set(stamp_ns(messages[0]), dict(zip(self.keys, messages, strict=True)))

    def feed(self, topic: str, msg) -> None:
        self.inputs[topic].signalMessage(self._adapt(msg))


def synchronized_stamps(bag, config, namespace: str = "", slop: float = NODE_DEFAULTS.sync_slop,
                        remap: dict | None = None) -> list[int]:
    """Stamps of every set the node's synchronizer forms from the bag (no decoding, no inference)."""
    stamps = []
    with open_bag(bag, config, namespace, remap=remap) as plan:
        plan.ground_truth = plan.corruption = plan.budget = None
        sync = SyncedStream(plan, config, lambda stamp, _m: stamps.append(stamp), slop)
        for topic, _t, msg in stream(plan):
            if topic in sync.inputs:
                sync.feed(topic, msg)
    return stamps


def read_ground_truth(bag, config, namespace: str = "") -> tuple[list, list]:
    """-> (sorted [(stamp_ns, x, y)] or [(stamp_ns, class)] for a classifier, sorted [(stamp_ns, detail, episode)])
    from the bag's ground-truth topics."""
    poses, labels = [], []
    with open_bag(bag, config, namespace) as plan:
        plan.sensors = {}
        plan.budget = None
        for topic, log_time_ns, msg in stream(plan):
            if topic == plan.ground_truth:
                poses.append((truth_stamp_ns(msg, log_time_ns), *truth_of(msg)))
            elif topic == plan.corruption:
                labels.append((stamp_ns(msg), *corruption_label(msg)))
    return sorted(poses), sorted(labels)


def attach_ground_truth(records: list, poses: list, labels: list, start_ns: int, task: str = "localization",
                        tolerance_s: float = GT_TOLERANCE_S) -> None:
    """Join each record to the nearest ground-truth pose / corruption label by stamp; computes error_cm. A
    classifier's ground truth (`task` "classification": [(stamp_ns, class)]) holds from its stamp until the next
    one: a record gets the latest at or before it."""
    pose_stamps = [p[0] for p in poses]
    label_stamps = [label[0] for label in labels]
    tolerance_ns = round(tolerance_s * 1e9)

    def nearest(stamps, stamp):
        index = bisect.bisect_left(stamps, stamp)
        best = min((i for i in (index - 1, index) if 0 <= i < len(stamps)),
                   key=lambda i: abs(stamps[i] - stamp), default=None)
        return best if best is not None and abs(stamps[best] - stamp) <= tolerance_ns else None

    classes = ClassLabels(poses) if task == "classification" else None
    for record in records:
        record.t_s = (record.stamp_ns - start_ns) / 1e9
        if classes is not None:
            record.true_class = classes.class_at(record.stamp_ns)
            index = None
        else:
            index = nearest(pose_stamps, record.stamp_ns)
        if index is not None:
            record.ground_truth = poses[index][1:]
            if record.position is not None:
                record.error_cm = 100.0 * math.dist(record.position, record.ground_truth)
        index = nearest(label_stamps, record.stamp_ns)
        if index is not None:
            record.corruption, record.episode = labels[index][1], labels[index][2]
        elif labels:
            record.episode = "unlabelled"


def evaluate_bag(bag, engine, budget: BudgetSource | int | str = NODE_DEFAULTS.default_budget, namespace: str = "",
                 sync_slop: float = NODE_DEFAULTS.sync_slop, sync_queue_size: int = NODE_DEFAULTS.sync_queue_size,
                 on_record: Callable | None = None, max_sets: int | None = None, remap: dict | None = None,
                 progress=None, audio_wait_s: float = NODE_DEFAULTS.audio_wait_s,
                 sync_backend: str = "auto") -> EvalResult:
    """Run `engine` (an admn_core.runtime.InferenceEngine) over every synchronized set of `bag`.

    The messages go, in bag order and at their bag times, through admn_node's own FramePipeline: a set is evaluated
    once its audio has arrived (or `audio_wait_s` of bag time later), exactly when an idle node would process it.
    `on_record(record)` is called as each set is evaluated (before ground truth is joined at the end).
    `progress`: a stream (e.g. sys.stderr) for a progress bar with an ETA, shown only when it is a terminal.
    Ctrl-C stops reading: the result then covers the sets evaluated so far and has `interrupted` set."""
    if not isinstance(budget, BudgetSource):
        budget = BudgetSource.parse(str(budget))
    started = time.perf_counter()
    config = engine.config
    records, bad_input, empty_depth = [], {}, Counter()
    with open_bag(bag, config, namespace, remap=remap) as plan:
        if budget.kind == "bag" and plan.budget is None:
            plan.warnings.append(f"budget source 'bag' but the bag has no std_msgs/Int32 /compute_budget: "
                                 f"default budget {budget.default} throughout")
        start_ns = plan.start_ns
        pipeline, clock = bag_pipeline(plan, engine, lambda stamp: budget.budget_at(stamp, (stamp - start_ns) / 1e9),
                                       sync_slop, sync_queue_size, sync_backend, audio_wait_s)

        def evaluate(pending) -> None:
            outcome = pipeline.process(pending)
            record = record_of(outcome, (outcome.stamp_ns - start_ns) / 1e9)
            if outcome.status == "bad_input":
                _count_bad_input(bad_input, plan, str(outcome.bad_key), f"bad input at {record.stamp_ns / 1e9:.3f} s: "
                                 f"{outcome.reason}; set skipped (as admn_node does; further ones are counted)")
            if outcome.assembled is not None:
                empty_depth.update(outcome.assembled.depth_all_invalid)
            records.append(record)  # only once complete: Ctrl-C mid-inference leaves no half-filled record
            if on_record is not None:
                on_record(record)

        fed = feed_bag(plan, pipeline, clock, evaluate, bad_input, budget, progress,
                       stop=None if max_sets is None else lambda: len(records) >= max_sets)
        result = EvalResult(records, str(plan.path), _warnings(plan, fed.stamps, empty_depth, fed.finished),
                            pipeline.counters.sets_received, bad_input, plan.stream_error, duration_s=plan.duration_s,
                            interrupted=fed.interrupted,
                            read_counts={t: (plan.read_counts[t], plan.reader.declared_counts.get(t, 0))
                                         for t in plan.topics},
                            stamps=fed.stamps, empty_depth=dict(empty_depth))
    attach_ground_truth(records, sorted(fed.poses), sorted(fed.labels), start_ns, engine.config.head.task)
    result.seconds = time.perf_counter() - started
    return result


def bag_pipeline(plan: BagPlan, engine, budget_for: Callable, sync_slop: float = NODE_DEFAULTS.sync_slop,
                 sync_queue_size: int = NODE_DEFAULTS.sync_queue_size, sync_backend: str = "auto",
                 audio_wait_s: float = NODE_DEFAULTS.audio_wait_s) -> tuple[FramePipeline, BagClock]:
    """admn_node's FramePipeline for the bag behind `plan`, on the bag's clock (fed by `feed_bag`)."""
    clock = BagClock()
    pipeline = FramePipeline(
        engine, FrameAssembler(engine.config), budget_for,
        synchronizer_factory(sync_slop, sync_queue_size, sync_backend),
        topics={sensor.key: topic for topic, sensor in plan.sensors.items()}, audio_wait_s=audio_wait_s,
        clock=clock, log=ThrottledLog(_log))
    return pipeline, clock


@dataclass
class BagFeed:
    """What `feed_bag` read besides the sets: ground truth, corruption labels, stamp audits, how it ended."""

    poses: list = field(default_factory=list)  # (stamp_ns, x, y), or (stamp_ns, class) for a classifier
    labels: list = field(default_factory=list)  # (stamp_ns, detail, episode)
    stamps: dict = field(default_factory=dict)  # camera/depth topic -> StampAudit
    finished: bool = False  # the whole bag was read (not stopped, not interrupted)
    interrupted: bool = False  # Ctrl-C


def feed_bag(plan: BagPlan, pipeline: FramePipeline, clock: BagClock, on_set: Callable, bad_input: dict,
             budget: BudgetSource | None = None, progress=None, stop: Callable | None = None) -> BagFeed:
    """Feed the bag's messages, in bag order at their bag times, into `pipeline` and call `on_set(pending)` for each
    set as it becomes ready (as an idle admn_node takes it); at the end of the bag the remaining sets are drained.
    `stop()` -> True ends reading early; Ctrl-C ends it with `interrupted` set."""
    fed = BagFeed(stamps={topic: StampAudit() for topic, sensor in plan.sensors.items() if sensor.kind != "audio"})
    adapt = stamp_adapter(pipeline.synchronizer)
    bar = _progress_bar(progress, plan)
    try:
        for topic, bag_time_ns, msg in stream(plan):
            bar.update()
            clock.now = bag_time_ns / 1e9
            if topic in fed.stamps:
                fed.stamps[topic].add(stamp_ns(msg))
                pipeline.add_frame(plan.sensors[topic].key, adapt(msg))
            elif topic in plan.sensors:  # audio
                reason = pipeline.add_audio(plan.sensors[topic].key, msg)
                if reason is not None:
                    _count_bad_input(bad_input, plan, topic, f"bad audio chunk on {topic}: {reason}; skipped "
                                                             "(further ones are counted)")
            elif topic == plan.budget and budget is not None:
                budget.on_budget_message(msg.data)
            elif topic == plan.ground_truth:
                fed.poses.append((truth_stamp_ns(msg, bag_time_ns), *truth_of(msg)))
            elif topic == plan.corruption:
                fed.labels.append((stamp_ns(msg), *corruption_label(msg)))
            for pending in pipeline.ready_sets():
                on_set(pending)
            if stop is not None and stop():
                break
        else:
            fed.finished = True
            for pending in pipeline.drain():  # the bag ended: nothing more will arrive for these
                on_set(pending)
    except KeyboardInterrupt:
        fed.interrupted = True
    finally:
        bar.close()
    return fed


def record_of(outcome, t_s: float) -> FrameRecord:
    """The pipeline's Outcome of one set as a FrameRecord (the CSV row)."""
    record = FrameRecord(outcome.stamp_ns, status=outcome.status, reason=outcome.reason, budget=outcome.budget,
                         budget_origin=outcome.budget_origin, t_s=t_s)
    if outcome.ok:
        fill_from_result(record, outcome.result)
    return record


def _count_bad_input(bad_input: dict, plan: BagPlan, name: str, first_warning: str) -> None:
    bad_input[name] = bad_input.get(name, 0) + 1
    if bad_input[name] == 1:
        plan.warnings.append(first_warning)


def _progress_bar(stream_to, plan: BagPlan):
    """tqdm over the messages the plan reads, with an ETA; disabled unless `stream_to` is a terminal."""
    from tqdm import tqdm

    return tqdm(total=plan.declared_total() or None, file=stream_to, disable=None if stream_to else True,
                unit="msg", desc=plan.path.name, dynamic_ncols=True, mininterval=0.5)


def _warnings(plan: BagPlan, stamps: dict, empty_depth: Counter, finished: bool) -> list[str]:
    warnings = list(plan.warnings)
    warnings += [f"{topic}: {count} message(s) did not deserialize and were skipped"
                 for topic, count in plan.deserialize_errors.items()]
    if finished or plan.stream_error:  # a run stopped early reads less than declared by design
        warnings += [f"{mismatch}; results cover only what was read" for mismatch in plan.count_mismatches()]
    warnings += [f"{topic}: {problem}; the synchronizer pairs frames by header stamp, so sets are lost"
                 for topic, audit in stamps.items() if (problem := audit.problem())]
    warnings += [f"{view}/{modality}: {count} depth frame(s) without one valid pixel (all zero or NaN); evaluated as "
                 "admn_node would" for (view, modality), count in sorted(empty_depth.items())]
    return warnings


def fill_from_result(record: FrameRecord, result) -> None:
    allocation = result.allocation
    record.budget_used = int(allocation.budget_used)
    record.source = allocation.source
    record.active_blocks = {name: list(map(int, blocks)) for name, blocks in allocation.active_blocks().items()}
    if result.position_m is not None:
        record.position = (float(result.position_m[0]), float(result.position_m[1]))
    if result.class_probabilities is not None:
        record.predicted_class = int(np.argmax(result.class_probabilities))
    record.inference_ms = float(result.timings_ms.get("total", float("nan")))


def errors_of(records) -> np.ndarray:
    return np.array([r.error_cm for r in records if r.ok and r.error_cm is not None], dtype=np.float64)
