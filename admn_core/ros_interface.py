"""admn_node's ROS interface, named once: topic names and the defaults the node and the offline evaluator share.

Plain strings and numbers (no ROS import), so the bag writer in admn_core and every ROS module use the same names.

Names a node uses are relative, resolved in its namespace (`robot1` turns `node_1/camera/image_raw` into
`/robot1/node_1/camera/image_raw`), and private outputs (`~/pose`) live under the node's own name:
* inputs per view, `SENSOR_TOPICS` (`sensor_topic()` adds image_transport's `/compressed` or `/compressedDepth`);
* `BUDGET_TOPIC` = `compute_budget`: relative, so each namespace has its own budget unless remapped;
* outputs `POSE_TOPIC`, `CLASSIFICATION_TOPIC`, `ALLOCATION_TOPIC`; `output_topic()` spells them as another node
  subscribes to them;
* `CLOCK_TOPIC` and `DIAGNOSTICS_TOPIC`: absolute by ROS convention.

A bag stores absolute names. `RECORDED_BUDGET_TOPIC` (`/compute_budget`) is the budget as a bag recorded at the
root holds it (what `admn world-bag` writes and the evaluator's `--budget bag` reads); it is not the name a node
uses, which is the relative `BUDGET_TOPIC`. The ground-truth topics exist only in bags.
"""

from __future__ import annotations

from dataclasses import dataclass

NODE_NAME = "admn_node"

SENSOR_TOPICS = {"rgb": "{view}/camera/image_raw", "depth": "{view}/depth/image_raw", "audio": "{view}/mic/audio"}
CAMERA_INFO_TOPIC = "{view}/camera/camera_info"
COMPRESSED_TRANSPORTS = {"rgb": "compressed", "depth": "compressedDepth"}  # image_transport plugin per image kind

BUDGET_TOPIC = "compute_budget"
RECORDED_BUDGET_TOPIC = "/compute_budget"

POSE_TOPIC = "~/pose"
CLASSIFICATION_TOPIC = "~/classification"
ALLOCATION_TOPIC = "~/allocation"

CLOCK_TOPIC = "/clock"
DIAGNOSTICS_TOPIC = "/diagnostics"

GROUND_TRUTH_TOPIC = "/ground_truth/pose"
CLASS_GROUND_TRUTH_TOPIC = "/ground_truth/class"  # std_msgs/Int32: the class index, holding until the next message
CORRUPTION_TOPIC = "/ground_truth/corruption"


def sensor_topic(kind: str, view: str, transport: str = "raw") -> str:
    """The relative input topic of one view's `kind` (rgb | depth | audio); a non-raw `transport` names
    image_transport's sub-topic, e.g. `node_1/camera/image_raw/compressed`."""
    if kind not in SENSOR_TOPICS:
        raise ValueError(f"unknown sensor kind {kind!r}; expected one of {', '.join(SENSOR_TOPICS)}")
    base = SENSOR_TOPICS[kind].format(view=view)
    return base if transport == "raw" else f"{base}/{transport}"


def output_topic(private_topic: str, namespace: str = "", node_name: str = NODE_NAME) -> str:
    """A node's private topic as others name it: ("~/pose", "robot1") -> "/robot1/admn_node/pose"."""
    prefix = f"/{namespace.strip('/')}" if namespace.strip("/") else ""
    return f"{prefix}/{node_name}/{private_topic.removeprefix('~/')}"


@dataclass(frozen=True)
class NodeDefaults:
    """admn_node's parameter defaults that offline evaluation must share to reproduce the node's sets and budgets
    (config/admn_node.yaml ships the same values)."""

    sync_slop: float = 0.05  # s; camera/depth stamps of one set may differ by this much (30 Hz: < 1/2 frame)
    sync_queue_size: int = 10  # messages kept per synchronizer input
    default_budget: int = 12  # layers, until the first budget message
    audio_wait_s: float = 0.1  # s; a few microphone chunk periods (32 ms chunks are common)
    frame_id: str = "map"  # REP-105: the world-fixed frame the pose is expressed in
    fast_path: bool = True  # admn_core.fastpath; offline evaluation runs the same path, so results match bit for bit


NODE_DEFAULTS = NodeDefaults()
