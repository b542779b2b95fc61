"""Training samples from recorded bags: the sets admn_node would form, decoded as it decodes them, with ground truth.

`bag_samples(bag, config, on_sample)` feeds a bag through the node's own FramePipeline exactly as the evaluator does
(`replay_eval.feed_bag`: bag order, bag time, the node's synchronizer, audio-complete sets, decoding, the set rules),
but where the evaluator runs inference this captures the decoded sample the engine would have received
(`SampleCapture` stands in the engine's place). Each set of a localization model gets the ground-truth position from
a pose topic (PoseStamped, PoseWithCovarianceStamped, PointStamped or nav_msgs/Odometry) interpolated linearly to the
set's stamp from the poses on either side, each at most `max_gap_s` away; each set of a classifier gets the class
index of a std_msgs/Int32 label topic holding at its stamp (a label holds from its stamp until the next one, as
`admn_replay_eval` scores classifiers). Sets without ground truth are skipped and counted.

`write_bag_cache(bags, out, config, ...)` writes the samples of one or more bags into one cache in the world cache
format (admn_core/data/FORMAT.md), reused when its fingerprint (bag files, sizes, mtimes, model inputs, options)
matches, so training streams recorded data as it streams the world's.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from admn_core.data.cache import SampleCacheWriter, WorldCache
from admn_core.data.errors import CacheFormatError
from admn_core.ros_interface import CLASS_GROUND_TRUTH_TOPIC, GROUND_TRUTH_TOPIC, NODE_DEFAULTS
from admn_core.runtime import Allocation, Result
from admn_ros.bags.bag_reader import (
    CLASS_TYPES,
    POSE_TYPES,
    BagError,
    BagPlan,
    ClassLabels,
    corruption_plan,
    open_bag,
    stamp_ns,
    stream,
    topic_resolver,
    topic_table,
    truth_of,
    truth_stamp_ns,
)
from admn_ros.bags.replay_eval import bag_pipeline, feed_bag

# What a cache built by this code holds besides the bags and options: caches of other content are rebuilt.
CACHE_CONTENT = "samples, poses or class labels, corruption labels"
DEFAULT_GT_MAX_GAP_S = 0.1  # a set's ground truth is interpolated between poses at most this far from its stamp

_log = logging.getLogger(__name__)


class SampleCapture:
    """The engine's place in FramePipeline when sets are captured instead of inferred: `infer` keeps the sample it
    is handed — exactly what the engine would receive after the pipeline's rules, decoding, audio windows and, for a
    clip model, the frame history — and returns an empty allocation."""

    min_budget = max_budget = 0
    device = torch.device("cpu")

    def __init__(self, config):
        self.config = config
        self.sample: dict | None = None  # the last set's sample
        self._empty = np.zeros((len(config.modalities), config.blocks_per_backbone), dtype=bool)

    def infer(self, sample: dict, budget: int) -> Result:
        self.sample = sample
        return Result(Allocation(self.config.modality_names, self._empty, budget, 0, "capture"))


@dataclass
class BagSampleReport:
    bag: str
    sets: int = 0  # sets the synchronizer formed
    samples: int = 0  # sets handed on with ground truth
    no_ground_truth: int = 0  # sets without poses within max_gap_s on both sides, or before the first class label
    not_ok: Counter = field(default_factory=Counter)  # status -> sets the pipeline did not pass (bad_input, ...)
    warnings: list = field(default_factory=list)
    interrupted: bool = False

    def summary(self) -> str:
        skipped = ", ".join(f"{count} {status}" for status, count in sorted(self.not_ok.items()))
        return (f"{self.bag}: {self.samples} samples of {self.sets} sets ({self.no_ground_truth} without ground "
                f"truth{', ' + skipped if skipped else ''})")


class GroundTruth:
    """Poses of one topic, sorted by stamp; `at(stamp)` interpolates linearly within `max_gap_s`."""

    def __init__(self, poses: list, max_gap_s: float):
        poses = sorted(poses)
        self.stamps = [p[0] for p in poses]
        self.xy = np.array([p[1:] for p in poses], dtype=np.float64).reshape(-1, 2)
        self.max_gap_ns = round(max_gap_s * 1e9)

    def at(self, stamp: int) -> dict | None:
        """{"position": float32 [2], "heading" (of the motion, rad), "speed" (m/s)} or None without nearby poses."""
        right = bisect.bisect_left(self.stamps, stamp)
        if right < len(self.stamps) and self.stamps[right] == stamp:
            left = right
        else:
            left = right - 1
        if left < 0 or right >= len(self.stamps):
            return None
        t0, t1 = self.stamps[left], self.stamps[right]
        if stamp - t0 > self.max_gap_ns or t1 - stamp > self.max_gap_ns:
            return None
        p0, p1 = self.xy[left], self.xy[right]
        alpha = 0.0 if t1 == t0 else (stamp - t0) / (t1 - t0)
        segment = self._segment(left)
        return {"position": (p0 + alpha * (p1 - p0)).astype(np.float32), **segment}

    def _segment(self, index: int) -> dict:
        """Heading and speed of the motion between pose `index` and the next (the previous one at the end)."""
        a, b = (index, index + 1) if index + 1 < len(self.stamps) else (index - 1, index)
        if a < 0 or self.stamps[b] == self.stamps[a]:
            return {"heading": 0.0, "speed": 0.0}
        delta = self.xy[b] - self.xy[a]
        return {"heading": math.atan2(delta[1], delta[0]),
                "speed": float(np.hypot(*delta)) / ((self.stamps[b] - self.stamps[a]) / 1e9)}


def default_truth_topic(config) -> str:
    """The ground-truth topic admn_replay_eval reads for this model: class labels for a classifier, else poses."""
    return CLASS_GROUND_TRUTH_TOPIC if config.head.task == "classification" else GROUND_TRUTH_TOPIC


def resolve_ground_truth_topic(plan: BagPlan, gt_topic: str, namespace: str = "", remap: dict | None = None,
                               task: str = "localization") -> str:
    """The bag topic of the ground truth (after namespace and remapping); BagError if absent or of another type."""
    topic = topic_resolver(namespace, remap)(gt_topic)
    types = {c.topic: c.msgtype for c in plan.reader.connections}
    allowed, what = (CLASS_TYPES, "a class label") if task == "classification" else (POSE_TYPES, "a pose")
    if topic not in types:
        raise BagError(f"{plan.path}: no ground-truth topic {topic}: training needs {what} per set. The bag holds: "
                       f"{topic_table(plan.reader)}")
    if types[topic] not in allowed:
        raise BagError(f"{plan.path}: ground-truth topic {topic} has type {types[topic]}, expected "
                       f"{' or '.join(allowed)} ({what} per set for a {task} model)")
    return topic


def read_truth(bag, config, gt_topic: str = "", namespace: str = "", remap: dict | None = None) -> list:
    """[(stamp_ns, x, y)] of the bag's pose topic, or [(stamp_ns, class)] of its class-label topic for a classifier
    (only that topic is read; `gt_topic` "" = the model's default). BagError on a negative class index."""
    task = config.head.task
    with open_bag(bag, config, namespace, remap=remap) as plan:
        plan.ground_truth = resolve_ground_truth_topic(plan, gt_topic or default_truth_topic(config), namespace,
                                                       remap, task)
        plan.sensors, plan.corruption, plan.budget = {}, None, None
        truth = [(truth_stamp_ns(msg, log_time_ns), *truth_of(msg)) for _topic, log_time_ns, msg in stream(plan)]
    negative = next((item for item in truth if task == "classification" and item[1] < 0), None)
    if negative is not None:
        raise BagError(f"{bag}: {plan.ground_truth} holds class {negative[1]} at {negative[0] / 1e9:.3f} s; class "
                       "indices start at 0")
    return truth


def read_corruption_plans(bag, config, namespace: str = "", remap: dict | None = None) -> list:
    """[(stamp_ns, {(view, modality): CorruptionSpec})] of the bag's corruption-label topic; [] when it has none."""
    with open_bag(bag, config, namespace, remap=remap) as plan:
        if plan.corruption is None:
            return []
        plan.sensors, plan.ground_truth, plan.budget = {}, None, None
        return [(stamp_ns(msg), corruption_plan(msg)) for _topic, _t, msg in stream(plan)]


def label_at(labels: list, stamp: int, max_gap_s: float) -> dict:
    """The newest label at or before `stamp` within `max_gap_s` ({} when none: the inputs count as clean)."""
    index = bisect.bisect_right([label_stamp for label_stamp, _ in labels], stamp) - 1
    if index < 0 or stamp - labels[index][0] > max_gap_s * 1e9:
        return {}
    return labels[index][1]


def bag_samples(bag, config, on_sample: Callable[[dict, dict], None], gt_topic: str = "",
                max_gap_s: float = DEFAULT_GT_MAX_GAP_S, namespace: str = "", remap: dict | None = None,
                sync_slop: float = NODE_DEFAULTS.sync_slop, sync_queue_size: int = NODE_DEFAULTS.sync_queue_size,
                sync_backend: str = "auto", audio_wait_s: float = NODE_DEFAULTS.audio_wait_s,
                progress=None) -> BagSampleReport:
    """Call `on_sample(sample, target)` for every set of `bag` the node would process that has ground truth:
    sample = {(view, modality): array} as the engine would receive it, target = {"position", "heading", "speed"} (a
    localization model) or {"label"} (a classifier), with "time" (seconds since the bag's start) and "plan" (the
    corruption labels of the bag's /ground_truth/corruption topic at the set, when it has one). `gt_topic` "" = the
    model's default topic. BagError (naming the bag and topic) when the bag cannot be used."""
    gt_topic = gt_topic or default_truth_topic(config)
    recorded = read_truth(bag, config, gt_topic, namespace, remap)
    labels = read_corruption_plans(bag, config, namespace, remap)
    if not recorded:
        raise BagError(f"{bag}: ground-truth topic {gt_topic} holds no message")
    classifier = config.head.task == "classification"
    truth = ClassLabels(recorded) if classifier else GroundTruth(recorded, max_gap_s)
    with open_bag(bag, config, namespace, remap=remap) as plan:
        report = BagSampleReport(str(plan.path))
        plan.ground_truth = plan.corruption = plan.budget = None  # ground truth was read above
        engine = SampleCapture(config)
        pipeline, clock = bag_pipeline(plan, engine, lambda _stamp: (0, "capture"), sync_slop, sync_queue_size,
                                       sync_backend, audio_wait_s)

        def capture(pending) -> None:
            outcome = pipeline.process(pending)
            if not outcome.ok:
                report.not_ok[outcome.status] += 1
                return
            target = truth.at(outcome.stamp_ns)
            if target is None:
                report.no_ground_truth += 1
                return
            target["time"] = (outcome.stamp_ns - plan.start_ns) / 1e9
            target["plan"] = label_at(labels, outcome.stamp_ns, max_gap_s)
            on_sample(engine.sample, target)
            report.samples += 1

        fed = feed_bag(plan, pipeline, clock, capture, {}, progress=progress)
        report.sets, report.interrupted = pipeline.counters.sets_received, fed.interrupted
        report.warnings = list(plan.warnings) + ([plan.stream_error] if plan.stream_error else [])
    if report.sets and not report.samples:
        first, last = truth.stamps[0] / 1e9, truth.stamps[-1] / 1e9
        if classifier:
            raise BagError(f"{bag}: all {report.sets} sets precede the first class label on {gt_topic} (at "
                           f"{first:.3f} s): the stamps do not overlap")
        raise BagError(f"{bag}: none of the {report.sets} sets has ground truth on {gt_topic} within {max_gap_s} s "
                       f"(poses from {first:.3f} s to {last:.3f} s): the stamps do not overlap")
    if not report.sets:
        raise BagError(f"{bag}: the synchronizer formed no set from {', '.join(plan.sensors)} (no overlapping "
                       "camera/depth stamps)")
    return report


@dataclass(frozen=True)
class CacheOptions:
    """Everything besides the bags that decides a cache's content (part of its fingerprint)."""

    gt_topic: str = ""  # "" = the model's default (default_truth_topic)
    max_gap_s: float = DEFAULT_GT_MAX_GAP_S
    namespace: str = ""
    remap: tuple = ()  # ((from, to), ...)
    sync_slop: float = NODE_DEFAULTS.sync_slop
    sync_queue_size: int = NODE_DEFAULTS.sync_queue_size
    sync_backend: str = "auto"
    audio_wait_s: float = NODE_DEFAULTS.audio_wait_s


def bag_files(bag) -> list[tuple[str, int, int]]:
    """(file, size, mtime_ns) of every file of a bag (its folder, or the single file)."""
    path = Path(bag).resolve()
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]


def cache_fingerprint(bags, config, options: CacheOptions) -> str:
    inputs = [(spec.name, spec.kind, list(spec.views), spec.frames,
               spec.audio_window_seconds if spec.kind == "audio" else None) for spec in config.modalities]
    options = replace(options, gt_topic=options.gt_topic or default_truth_topic(config))
    text = json.dumps({"bags": [bag_files(bag) for bag in bags], "inputs": inputs, "options": asdict(options),
                       "task": config.head.task, "content": CACHE_CONTENT}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_views(config) -> tuple[str, ...]:
    """The one view list of the cache format: every modality of the model must have the same views."""
    views = {tuple(spec.views) for spec in config.modalities}
    if len(views) != 1:
        raise ValueError(f"model {config.name!r} has different views per modality ({sorted(views)}); the sample "
                         "cache holds one view list")
    return views.pop()


def write_bag_cache(bags, out, config, options: CacheOptions = CacheOptions(), progress=None) -> tuple[Path, list]:
    """One cache of every bag's samples at `out`, or the existing one when its fingerprint matches.
    -> (cache path, [BagSampleReport] — empty when reused)."""
    out = Path(out)
    fingerprint = cache_fingerprint(bags, config, options)
    try:
        if WorldCache(out).manifest.get("source", {}).get("fingerprint") == fingerprint:
            _log.info(f"{out}: cache of the same bags and options exists; reused")
            return out, []
    except CacheFormatError:
        pass
    source = {"bags": [str(Path(bag).resolve()) for bag in bags], "fingerprint": fingerprint, **asdict(options)}
    writer = SampleCacheWriter(out, cache_views(config), tuple((s.name, s.kind) for s in config.modalities), source,
                               config.head.task)
    reports = []
    try:
        for bag in bags:
            report = bag_samples(bag, config, writer.add, options.gt_topic, options.max_gap_s, options.namespace,
                                 dict(options.remap), options.sync_slop, options.sync_queue_size,
                                 options.sync_backend, options.audio_wait_s, progress)
            _log.info(report.summary())
            for warning in report.warnings:
                _log.warning(f"{report.bag}: {warning}")
            if report.interrupted:
                raise KeyboardInterrupt
            reports.append(report)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    return out, reports
