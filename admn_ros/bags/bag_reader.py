"""Stream a rosbag2 (sqlite3 or mcap, via `rosbags`) for ADMN evaluation: topic plan, type checks, clear errors.

`open_bag(path, config)` checks the bag against what admn_node would subscribe to and returns a `BagPlan`:

* sensor topics per (view, modality): `/<ns>/<view>/camera/image_raw` (or `.../compressed` when only that is
  recorded), `/<ns>/<view>/depth/image_raw` (or `.../compressedDepth`), `/<ns>/<view>/mic/audio`;
* ground truth `/ground_truth/pose` (PoseStamped, PoseWithCovarianceStamped, PointStamped or nav_msgs/Odometry), or
  for a classification model `/ground_truth/class` (std_msgs/Int32, the class index from its stamp until the next),
  corruption labels `/ground_truth/corruption` (DiagnosticArray), and `/compute_budget` (std_msgs/Int32), all optional.

A missing camera/depth topic, a sensor topic of an unexpected type, a path that is not a bag, or a bag whose index
cannot be read raise `BagError` naming the file/topic and listing what the bag holds. Missing microphones, microphone
topics of another type, and missing ground truth are warnings (the node runs without them too: a silent window).
Topic names follow ROS remapping: `open_bag(..., namespace="robot1", remap={"node_1/camera/image_raw":
"/camera/color/image_raw"})`. `BagPlan.count_mismatches()` compares what was read with the counts the bag declares.

`stream(plan)` yields messages in bag-time order, one at a time (never the whole bag in memory); a message that does
not deserialize is counted and skipped with a warning naming its topic, and a file that breaks off mid-stream
(truncated) ends the stream with `plan.stream_error` set instead of raising.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from admn_core.ros_interface import (
    CLASS_GROUND_TRUTH_TOPIC,
    COMPRESSED_TRANSPORTS,
    CORRUPTION_TOPIC,
    GROUND_TRUTH_TOPIC,
    RECORDED_BUDGET_TOPIC,
    sensor_topic,
)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
AUDIO_TYPES = (IMAGE, "audio_common_msgs/msg/AudioStamped", "audio_common_msgs/msg/AudioDataStamped")
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped",
              "geometry_msgs/msg/PointStamped", "nav_msgs/msg/Odometry")
CLASS_TYPES = ("std_msgs/msg/Int32",)


class BagError(RuntimeError):
    """The bag cannot be evaluated; the text names the file or topic and the reason."""


@dataclass(frozen=True)
class SensorTopic:
    key: tuple[str, str]  # (view, modality)
    kind: str  # rgb | depth | audio
    topic: str  # absolute topic in the bag
    msgtype: str


@dataclass
class BagPlan:
    path: Path
    reader: object  # rosbags AnyReader (open)
    sensors: dict  # topic -> SensorTopic
    ground_truth: str | None
    corruption: str | None
    budget: str | None
    start_ns: int
    end_ns: int
    storage: str
    warnings: list = field(default_factory=list)
    deserialize_errors: Counter = field(default_factory=Counter)
    stream_error: str | None = None
    messages_read: int = 0
    read_counts: Counter = field(default_factory=Counter)  # topic -> messages read

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def topics(self) -> list[str]:
        """Every topic the plan reads: sensors, then ground truth, corruption labels and budget when present."""
        return list(self.sensors) + [t for t in (self.ground_truth, self.corruption, self.budget) if t]

    def declared_total(self, topics=None) -> int:
        return sum(self.reader.declared_counts.get(topic, 0) for topic in (topics or self.topics))

    def count_mismatches(self) -> list[str]:
        """One line per planned topic whose read count differs from the count the bag declares."""
        return [f"{topic}: read {self.read_counts[topic]} of the {declared} messages the bag declares"
                for topic in self.topics
                if (declared := self.reader.declared_counts.get(topic, 0)) != self.read_counts[topic]]

    def close(self) -> None:
        try:
            self.reader.close()
        except Exception:  # closing a half-broken reader must not mask the real error
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _absolute(namespace: str, relative: str) -> str:
    namespace = namespace.strip("/")
    return f"/{namespace}/{relative}" if namespace else f"/{relative}"


def _storage_of(path: Path) -> str:
    files = [path] if path.is_file() else list(path.iterdir())
    suffixes = {p.suffix for p in files}
    return "mcap" if ".mcap" in suffixes else "sqlite3" if ".db3" in suffixes else "unknown"


BAG_FORMS = "a rosbag2 folder (with metadata.yaml), its metadata.yaml, or a .db3/.mcap file"
# rosbags' texts for problems found in metadata.yaml (version, storage plugin, serialization format, compression,
# missing files): those are the reason; anything else failed while opening the data file itself.
_METADATA_PROBLEMS = ("metadata", "version", "not supported", "missing")


def resolve_bag_path(path: str | Path) -> Path:
    """The bag `path` names: a rosbag2 folder (also when it ends in .bag), its metadata.yaml (-> the folder), or a
    single .db3/.mcap file. BagError for anything else, saying which forms are accepted."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such bag (expected {BAG_FORMS})")
    if path.is_file() and path.name == "metadata.yaml":
        path = path.parent
    if path.is_dir():
        if not (path / "metadata.yaml").is_file():
            raise BagError(f"{path}: not a rosbag2 folder: metadata.yaml is missing "
                           f"(contents: {', '.join(sorted(p.name for p in path.iterdir())) or 'empty'})")
        return path
    if path.suffix == ".bag":
        raise BagError(f"{path}: a ROS 1 bag; convert it to rosbag2 first "
                       f"(rosbags-convert --src {path} --dst {path.with_suffix('')})")
    if path.suffix not in (".db3", ".mcap"):
        raise BagError(f"{path}: not a rosbag2 bag (expected {BAG_FORMS})")
    return path


class BagSource:
    """An open rosbag2 bag read through rosbags' rosbag2 `Reader`, tolerant where rosbags is strict:

    * metadata.yaml's offered-QoS text may differ from the data file's (rosbag2 writes them differently across
      releases); rosbags then matches no connection and reads nothing. Messages are matched by topic and type.
    * a topic whose type definition in the bag does not parse (MCAP service-event topics carry the raw .srv text)
      or is unknown is left out with a note in `skipped`, instead of the whole bag failing to open.

    Same reading interface as rosbags' AnyReader: connections, messages(connections), deserialize, start_time,
    end_time, close. `declared_counts` are the per-topic message counts the bag declares (metadata.yaml for a folder,
    the file's own index for a single file).
    """

    def __init__(self, path: Path, reader):
        from rosbags.typesys import Stores, get_typestore

        self.path, self._reader = path, reader
        self.skipped: dict[str, str] = {}  # topic -> why it is not read
        self.notes: list[str] = []
        self._file_exts = self._data_file_exts()
        self.typestore = get_typestore(Stores.EMPTY)
        self.connections = self._register_types(reader.connections, get_typestore(Stores.ROS2_KILTED))
        self.declared_counts = Counter()
        for connection in reader.connections:
            self.declared_counts[connection.topic] += int(connection.msgcount)

    @property
    def start_time(self) -> int:
        return self._reader.start_time

    @property
    def end_time(self) -> int:
        return self._reader.end_time

    def _data_file_exts(self) -> dict:
        """(topic, type) -> the connection extensions (serialization format + QoS) the data files hold, when they
        differ from metadata.yaml's."""
        files = getattr(self._reader.storage, "storages", [])  # a folder's data files; none for a single file
        exts = {}
        for storage in files:
            for connection in storage.connections:
                exts.setdefault((connection.topic, connection.msgtype), []).append(connection.ext)
        mismatched = sorted({topic for connection in self._reader.connections
                             for (topic, msgtype), file_exts in exts.items()
                             if (topic, msgtype) == (connection.topic, connection.msgtype)
                             and connection.ext not in file_exts})
        if mismatched:
            self.notes.append(f"metadata.yaml's offered QoS text differs from the data file's for "
                              f"{', '.join(mismatched)}; read by topic and type")
        return exts

    def _register_types(self, connections, default_store) -> list:
        from rosbags.interfaces import MessageDefinitionFormat
        from rosbags.typesys import get_types_from_idl, get_types_from_msg

        usable = []
        for connection in connections:
            definition = connection.msgdef
            try:
                if definition.format == MessageDefinitionFormat.MSG:
                    self.typestore.register(get_types_from_msg(definition.data, connection.msgtype))
                elif definition.format == MessageDefinitionFormat.IDL:
                    self.typestore.register(_types_from_idl_text(definition.data, get_types_from_idl))
                elif connection.msgtype in default_store.fielddefs:  # no definition stored: a standard type
                    self.typestore.register({name: fields for name, fields in default_store.fielddefs.items()
                                             if name not in self.typestore.fielddefs})
            except Exception as error:  # rosbags' parsers raise several types on definitions they cannot read
                self.skipped[connection.topic] = (f"type {connection.msgtype}: its definition in the bag cannot be "
                                                  f"parsed ({type(error).__name__}: {str(error).splitlines()[0]})")
                continue
            if connection.msgtype not in self.typestore.fielddefs:
                self.skipped[connection.topic] = f"type {connection.msgtype} is unknown (no definition in the bag)"
                continue
            usable.append(connection)
        return usable

    def messages(self, connections=()):
        """(connection, bag time ns, raw CDR) in bag order for `connections` (all readable ones when empty)."""
        wanted = list(connections) or self.connections
        variants = [c._replace(ext=ext) for c in wanted for ext in self._file_exts.get((c.topic, c.msgtype), ())
                    if ext != c.ext]
        return self._reader.messages(connections=wanted + variants)

    def deserialize(self, raw, msgtype: str):
        return self.typestore.deserialize_cdr(raw, msgtype)

    def close(self) -> None:
        self._reader.close()


def _types_from_idl_text(text: str, parse) -> dict:
    separator = "=" * 80 + "\n"
    if not text.startswith(f"{separator}IDL: "):
        return parse(text)
    types = {}
    for part in text.split(separator)[1:]:
        types.update(parse(part.split("\n", 1)[1]))
    return types


def open_reader(path: str | Path) -> BagSource:
    """An open BagSource for any form `resolve_bag_path` accepts; BagError with the real reason otherwise."""
    try:
        from rosbags.rosbag2 import Reader
    except ImportError:
        raise BagError("reading bags needs the `rosbags` package (pip install rosbags)") from None
    path = resolve_bag_path(path)
    try:
        reader = Reader(path)
        reader.open()
    except Exception as error:  # rosbags raises several unrelated types for broken files
        reason = str(error).replace("; please report issue.", "").strip()
        hint = "" if any(word in reason.lower() for word in _METADATA_PROBLEMS) else (
            "; the data file is truncated, corrupt or not a rosbag2 sqlite3/mcap file "
            "(`ros2 bag reindex` rebuilds a bag that was cut short)")
        raise BagError(f"{path}: cannot open the bag ({type(error).__name__}: {reason}){hint}") from None
    try:
        return BagSource(path, reader)
    except BaseException:
        reader.close()
        raise


def topic_table(reader) -> str:
    table = "; ".join(f"{c.topic} [{c.msgtype}]" for c in sorted(reader.connections, key=lambda c: c.topic))
    skipped = "; ".join(f"{topic} ({why})" for topic, why in sorted(getattr(reader, "skipped", {}).items()))
    return table + (f"; not readable: {skipped}" if skipped else "")


def parse_remaps(rules) -> dict[str, str]:
    """['FROM:=TO', ...] (ROS remapping syntax; relative names resolve in the namespace) -> {FROM: TO}."""
    remap = {}
    for rule in rules or ():
        source, separator, target = str(rule).partition(":=")
        if not separator or not source.strip() or not target.strip():
            raise ValueError(f"a remapping must look like FROM:=TO (e.g. node_1/camera/image_raw:=/camera/color/"
                             f"image_raw), got {rule!r}")
        remap[source.strip()] = target.strip()
    return remap


def topic_resolver(namespace: str, remap: dict | None):
    """name (relative to `namespace`, or absolute) -> the bag topic it reads, after the ROS-style `remap`."""
    def absolute(name: str) -> str:
        return name if name.startswith("/") else _absolute(namespace, name)

    rules = {absolute(source): absolute(target) for source, target in (remap or {}).items()}
    return lambda name: rules.get(absolute(name), absolute(name))


def open_bag(path: str | Path, config, namespace: str = "", require_ground_truth: bool = False,
             remap: dict | None = None) -> BagPlan:
    """Open and check a bag for `config` (a ModelConfig); see the module docstring."""
    reader = open_reader(path)
    try:
        return _plan(reader.path, reader, config, topic_resolver(namespace, remap), require_ground_truth)
    except BaseException:
        reader.close()
        raise


def _sensor_candidates(kind: str, base: str) -> list[tuple[str, tuple[str, ...]]]:
    """(topic, accepted types) to look for, best first; `base` is the resolved image_raw / audio topic."""
    if kind in COMPRESSED_TRANSPORTS:
        return [(base, (IMAGE, COMPRESSED)), (f"{base}/{COMPRESSED_TRANSPORTS[kind]}", (COMPRESSED,))]
    return [(base, AUDIO_TYPES)]


def _plan(path: Path, reader, config, resolve, require_ground_truth: bool) -> BagPlan:
    types = {}
    for connection in reader.connections:
        types.setdefault(connection.topic, connection.msgtype)
    if all(spec.kind == "audio" for spec in config.modalities):
        raise BagError(f"model {config.name!r} has no camera or depth input: the evaluator forms sets from "
                       "camera/depth frames (microphone chunks join the set they arrive before)")
    warnings = list(reader.notes) + [f"{topic} is not read: {why}" for topic, why in sorted(reader.skipped.items())]
    sensors, missing, wrong = {}, [], []
    for spec in config.modalities:
        for view in spec.views:
            candidates = _sensor_candidates(spec.kind, resolve(sensor_topic(spec.kind, view)))
            present = [(topic, allowed) for topic, allowed in candidates if topic in types]
            silent = (f"the model's {spec.name} input for {view} gets a silent window (as admn_node does "
                      "without audio)")
            if not present:
                if spec.kind == "audio":
                    warnings.append(f"{candidates[0][0]} is not in the bag: {silent}")
                else:
                    missing.append(candidates[0][0])
                continue
            topic, allowed = present[0]
            if types[topic] not in allowed:
                problem = f"{topic} has type {types[topic]}, expected {' or '.join(allowed)}"
                if spec.kind == "audio":
                    warnings.append(f"{problem}: {silent}")
                else:
                    wrong.append(problem)
                continue
            sensors[topic] = SensorTopic((view, spec.name), spec.kind, topic, types[topic])
    if missing or wrong:
        problems = ([f"missing topic(s) {', '.join(missing)}"] if missing else []) + wrong
        raise BagError(f"{path}: cannot evaluate model {config.name!r}: {'; '.join(problems)}. "
                       f"The bag holds: {topic_table(reader) or 'no topics'}")

    def optional(topic, allowed, what):
        if topic not in types:
            warnings.append(f"{topic} is not in the bag: no {what}")
            return None
        if types[topic] not in allowed:
            warnings.append(f"{topic} has type {types[topic]}, expected {' or '.join(allowed)}: no {what}")
            return None
        return topic

    if config.head.task == "classification":
        ground_truth = optional(resolve(CLASS_GROUND_TRUTH_TOPIC), CLASS_TYPES,
                                "class labels, so no accuracy is computed")
    else:
        ground_truth = optional(resolve(GROUND_TRUTH_TOPIC), POSE_TYPES, "ground truth, so no errors are computed")
    if require_ground_truth and ground_truth is None:
        raise BagError(f"{path}: {warnings[-1]}. The bag holds: {topic_table(reader)}")
    corruption = optional(resolve(CORRUPTION_TOPIC), ("diagnostic_msgs/msg/DiagnosticArray",), "corruption labels")
    budget = resolve(RECORDED_BUDGET_TOPIC)
    budget = budget if types.get(budget) == "std_msgs/msg/Int32" else None
    return BagPlan(path, reader, sensors, ground_truth, corruption, budget, int(reader.start_time),
                   int(reader.end_time), _storage_of(path), warnings)


def stream(plan: BagPlan, extra_topics: tuple[str, ...] = ()) -> Iterator[tuple[str, int, object]]:
    """Yield (topic, bag time ns, deserialized message) in bag-time order for the planned topics."""
    wanted = set(plan.topics) | set(extra_topics)
    connections = [c for c in plan.reader.connections if c.topic in wanted]
    iterator = plan.reader.messages(connections=connections)
    while True:
        try:
            connection, timestamp, raw = next(iterator)
        except StopIteration:
            return
        except Exception as error:  # a truncated/corrupt file breaks off mid-stream
            plan.stream_error = (f"{plan.path}: reading stopped after {plan.messages_read} messages "
                                 f"({type(error).__name__}: {error}); the file is truncated or corrupt — "
                                 "results cover the part before it")
            return
        plan.messages_read += 1
        plan.read_counts[connection.topic] += 1
        try:
            message = plan.reader.deserialize(raw, connection.msgtype)
        except Exception as error:
            plan.deserialize_errors[connection.topic] += 1
            if plan.deserialize_errors[connection.topic] == 1:
                plan.warnings.append(f"{connection.topic}: a {connection.msgtype} message at "
                                     f"{timestamp / 1e9:.3f} s does not deserialize ({type(error).__name__}: "
                                     f"{error}); skipped (further ones are counted)")
            continue
        yield connection.topic, int(timestamp), message


def stamp_ns(msg) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def truth_stamp_ns(msg, log_time_ns: int) -> int:
    """A ground-truth message's stamp: its header's, or for a headerless one (a std_msgs/Int32 class label) the time
    the bag logged it."""
    return stamp_ns(msg) if hasattr(msg, "header") else int(log_time_ns)


def truth_of(msg) -> tuple:
    """The ground truth a message carries: (x, y) of a pose type, (class index,) of an Int32 class label."""
    if hasattr(msg, "data"):
        return (int(msg.data),)
    return position_of(msg)


class ClassLabels:
    """Class labels [(stamp_ns, class)] of one topic, each holding from its stamp until the next (how bag evaluation
    scores a classifier and how bag training labels its sets); `class_at(stamp)` is None before the first label."""

    def __init__(self, labels: list):
        labels = sorted(labels)
        self.stamps = [stamp for stamp, _ in labels]
        self.classes = [label for _, label in labels]

    def class_at(self, stamp: int) -> int | None:
        index = bisect.bisect_right(self.stamps, stamp) - 1
        return self.classes[index] if index >= 0 else None

    def at(self, stamp: int) -> dict | None:
        """{"label": class} at `stamp` (a training target), None before the first label."""
        label = self.class_at(stamp)
        return None if label is None else {"label": label}


def position_of(msg) -> tuple[float, float]:
    """(x, y) of any accepted ground-truth pose type."""
    if hasattr(msg, "point"):
        point = msg.point
    elif hasattr(msg, "pose") and hasattr(msg.pose, "pose"):
        point = msg.pose.pose.position  # PoseWithCovarianceStamped, Odometry
    else:
        point = msg.pose.position
    return float(point.x), float(point.y)


def corruption_label(msg) -> tuple[str, str]:
    """DiagnosticArray of /ground_truth/corruption -> (per-input detail, episode label). Clean inputs are omitted."""
    detail, episode = [], set()
    for status in msg.status:
        if int(status.level) == 0 or status.message in ("", "clean", "none"):
            continue
        detail.append(f"{status.name}={status.message}")
        modality = status.name.split("/")[-1]
        episode.add(f"{modality}:{status.message}")
    return ";".join(detail), "+".join(sorted(episode)) or "clean"


def corruption_plan(msg) -> dict:
    """DiagnosticArray of /ground_truth/corruption -> {(view, modality): CorruptionSpec} of the inputs it labels.

    A status named "view/modality" with values category / severity / value (admn_core.data.bag_writer's layout);
    statuses of another shape or with an unknown category are left out (those inputs count as unlabelled)."""
    from admn_core.data.corruptions.labels import CorruptionSpec
    from admn_core.data.errors import CorruptionError

    plan = {}
    for status in msg.status:
        view, _, modality = status.name.rpartition("/")
        values = {kv.key: kv.value for kv in status.values}
        if not view or "category" not in values:
            continue
        try:
            plan[(view, modality)] = CorruptionSpec(values["category"], int(values.get("severity", 0)),
                                                    float(values.get("value", 0.0)))
        except (CorruptionError, ValueError):
            continue
    return plan
