"""Stream a rosbag2 (sqlite3 or mcap, via `rosbags`) for ADMN evaluation: topic plan, type checks, clear errors.

`open_bag(path, config)` checks the bag against what admn_node would subscribe to and returns a `BagPlan`:

* sensor topics per (view, modality): `/<ns>/<view>/camera/image_raw` (or `.../compressed` when only that is
  recorded), `/<ns>/<view>/depth/image_raw` (or `.../compressedDepth`), `/<ns>/<view>/mic/audio`;
* ground truth `/ground_truth/pose` (PoseStamped, PoseWithCovarianceStamped, PointStamped or nav_msgs/Odometry),
  corruption labels `/ground_truth/corruption` (DiagnosticArray), and `/compute_budget` (std_msgs/Int32), all optional.

A missing camera/depth topic, a sensor topic of an unexpected type, a path that is not a bag, or a bag whose index
cannot be read raise `BagError` naming the file/topic and listing what the bag holds. Missing microphones or ground
truth are warnings (the node runs without them too: a silent window). `stream(plan)` yields messages in bag-time order,
one at a time (never the whole bag in memory); a message that does not deserialize is counted and skipped with a
warning naming its topic, and a file that breaks off mid-stream (truncated) ends the stream with `plan.stream_error`
set instead of raising.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
AUDIO_TYPES = (IMAGE, "audio_common_msgs/msg/AudioStamped", "audio_common_msgs/msg/AudioDataStamped")
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped",
              "geometry_msgs/msg/PointStamped", "nav_msgs/msg/Odometry")
GROUND_TRUTH_TOPIC = "/ground_truth/pose"
CORRUPTION_TOPIC = "/ground_truth/corruption"
BUDGET_TOPIC = "/compute_budget"
CLOCK_TOPIC = "/clock"


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

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

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


def open_reader(path: str | Path):
    """An open rosbags AnyReader for a bag directory (or a single .mcap/.db3 file); BagError with the reason."""
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore
    except ImportError:
        raise BagError("reading bags needs the `rosbags` package (pip install rosbags)") from None
    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such bag (expected a rosbag2 directory with metadata.yaml, or a .mcap/.db3 file)")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(f"{path}: not a rosbag2 directory: metadata.yaml is missing "
                       f"(contents: {', '.join(sorted(p.name for p in path.iterdir())) or 'empty'})")
    reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED))
    try:
        reader.open()
    except Exception as error:  # rosbags raises several unrelated types for broken files
        raise BagError(f"{path}: cannot open the bag ({type(error).__name__}: {error}); the file is truncated, "
                       "corrupt or not a rosbag2 sqlite3/mcap bag") from None
    return reader


def topic_table(reader) -> str:
    return "; ".join(f"{c.topic} [{c.msgtype}]" for c in sorted(reader.connections, key=lambda c: c.topic))


def open_bag(path: str | Path, config, namespace: str = "", require_ground_truth: bool = False) -> BagPlan:
    """Open and check a bag for `config` (a ModelConfig); see the module docstring."""
    path = Path(path)
    reader = open_reader(path)
    try:
        return _plan(path, reader, config, namespace, require_ground_truth)
    except BaseException:
        try:
            reader.close()
        except Exception:
            pass
        raise


def _plan(path: Path, reader, config, namespace: str, require_ground_truth: bool) -> BagPlan:
    types = {}
    for connection in reader.connections:
        types.setdefault(connection.topic, connection.msgtype)
    sensors, missing, wrong, warnings = {}, [], [], []
    for spec in config.modalities:
        for view in spec.views:
            key = (view, spec.name)
            if spec.kind == "rgb":
                candidates = [(_absolute(namespace, f"{view}/camera/image_raw"), (IMAGE, COMPRESSED)),
                              (_absolute(namespace, f"{view}/camera/image_raw/compressed"), (COMPRESSED,))]
            elif spec.kind == "depth":
                candidates = [(_absolute(namespace, f"{view}/depth/image_raw"), (IMAGE, COMPRESSED)),
                              (_absolute(namespace, f"{view}/depth/image_raw/compressedDepth"), (COMPRESSED,))]
            else:
                candidates = [(_absolute(namespace, f"{view}/mic/audio"), AUDIO_TYPES)]
            present = [(topic, allowed) for topic, allowed in candidates if topic in types]
            if not present:
                (missing if spec.kind != "audio" else warnings).append(
                    candidates[0][0] if spec.kind != "audio" else
                    f"{candidates[0][0]} is not in the bag: the model's {spec.name} input for {view} gets a silent "
                    "window (as admn_node does without audio)")
                continue
            topic, allowed = present[0]
            if types[topic] not in allowed:
                wrong.append(f"{topic} has type {types[topic]}, expected {' or '.join(allowed)}")
                continue
            sensors[topic] = SensorTopic(key, spec.kind, topic, types[topic])
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

    ground_truth = optional(GROUND_TRUTH_TOPIC, POSE_TYPES, "ground truth, so no errors are computed")
    if require_ground_truth and ground_truth is None:
        raise BagError(f"{path}: {warnings[-1]}. The bag holds: {topic_table(reader)}")
    corruption = optional(CORRUPTION_TOPIC, ("diagnostic_msgs/msg/DiagnosticArray",), "corruption labels")
    budget = BUDGET_TOPIC if types.get(BUDGET_TOPIC) == "std_msgs/msg/Int32" else None
    return BagPlan(path, reader, sensors, ground_truth, corruption, budget, int(reader.start_time),
                   int(reader.end_time), _storage_of(path), warnings)


def stream(plan: BagPlan, extra_topics: tuple[str, ...] = ()) -> Iterator[tuple[str, int, object]]:
    """Yield (topic, bag time ns, deserialized message) in bag-time order for the planned topics."""
    wanted = set(plan.sensors) | {t for t in (plan.ground_truth, plan.corruption, plan.budget) if t} | set(extra_topics)
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
