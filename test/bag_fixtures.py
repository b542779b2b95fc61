"""Crafted rosbag2 bags for the evaluator's tests: copy a bag with changes, edit its metadata.yaml."""

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from ruamel.yaml import YAML

from admn_ros.bags.bag_reader import open_reader

# What rosbag2 writes into metadata.yaml for a default publisher (the data file written by rosbags holds none):
# the QoS-text mismatch real bags show between metadata.yaml and their storage file.
ROSBAG2_QOS = [{"history": "keep_last", "depth": 10, "reliability": "reliable", "durability": "volatile",
                "deadline": {"sec": 9223372036, "nsec": 854775807}, "lifespan": {"sec": 9223372036, "nsec": 854775807},
                "liveliness": "automatic", "liveliness_lease_duration": {"sec": 9223372036, "nsec": 854775807},
                "avoid_ros_namespace_conventions": False}]


def rewrite(source, target, storage="sqlite3", transform=None, extra=(), raw_connections=()):
    """Copy a bag message by message; transform(topic, msgtype, msg) -> list of (topic, msgtype, msg).
    `raw_connections`: (topic, msgtype, msgdef text, [(t, raw bytes)]) written as given (definitions rosbags cannot
    parse, such as a service event's)."""
    store = get_typestore(Stores.ROS2_KILTED)
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    reader = open_reader(source)
    connections = {}
    with Writer(target, version=9, storage_plugin=plugin) as writer:
        def write(topic, msgtype, t, msg):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], t, store.serialize_cdr(msg, msgtype))

        for topic, msgtype, definition, messages in raw_connections:
            connection = writer.add_connection(topic, msgtype, msgdef=definition, rihs01="RIHS01_" + "0" * 64)
            for t, raw in messages:
                writer.write(connection, t, raw)
        for connection, t, raw in reader.messages():
            msg = reader.deserialize(raw, connection.msgtype)
            outputs = transform(connection.topic, connection.msgtype, msg) if transform else [
                (connection.topic, connection.msgtype, msg)]
            for topic, msgtype, out in outputs:
                write(topic, msgtype, t, out)
        for topic, msgtype, t, msg in extra:
            write(topic, msgtype, t, msg)
    reader.close()
    return target


def edit_metadata(bag, change):
    """change(info) edits metadata.yaml's rosbag2_bagfile_information dict in place."""
    yaml = YAML(typ="safe")
    path = bag / "metadata.yaml"
    document = yaml.load(path.read_text())
    change(document["rosbag2_bagfile_information"])
    with open(path, "w") as file:
        yaml.dump(document, file)
    return bag


def write_labelled_clip_bag(path, labels, seconds, kinds=("rgb", "audio"), view="clip", rate_hz=10,
                            image_size=(24, 32), seed=0, start_ns=1_700_000_000 * 10**9):
    """A bag of one view's sensors with /ground_truth/class labels ((seconds, class), each holding until the next).
    Every frame shows its class: RGB brightness and depth distance grow with the class index (plus noise), so a
    classifier can learn them; audio is 20 ms chunks of 16 kHz noise stamped at their last sample."""
    import numpy as np

    from admn_core.ros_interface import CLASS_GROUND_TRUTH_TOPIC, sensor_topic

    store = get_typestore(Stores.ROS2_KILTED)
    types = store.types
    rng = np.random.default_rng(seed)
    rows, cols = image_size

    def header(ns):
        return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](
            sec=ns // 10**9, nanosec=ns % 10**9), frame_id=view)

    def image(ns, array, encoding):
        return types["sensor_msgs/msg/Image"](
            header=header(ns), height=array.shape[0], width=array.shape[1], encoding=encoding, is_bigendian=0,
            step=array.shape[1] * array.itemsize * (array.shape[2] if array.ndim == 3 else 1),
            data=np.ascontiguousarray(array).view(np.uint8).reshape(-1))

    def class_at(seconds_in):  # the label holding then (frames before the first label show the first class)
        return next((label for start, label in reversed(labels) if start <= seconds_in), labels[0][1])

    with Writer(path, version=9) as writer:
        connections = {kind: writer.add_connection(f"/{sensor_topic(kind, view)}", "sensor_msgs/msg/Image",
                                                   typestore=store) for kind in kinds}
        label_connection = writer.add_connection(CLASS_GROUND_TRUTH_TOPIC, "std_msgs/msg/Int32", typestore=store)
        messages = [(start_ns + round(start * 1e9), label_connection, types["std_msgs/msg/Int32"](data=label))
                    for start, label in labels]
        if "audio" in kinds:
            for chunk in range(int(seconds * 50)):
                ns = start_ns + round((chunk + 1) * 0.02e9) - 62_500
                wave = (0.1 * rng.standard_normal((1, 320))).astype("<f4")
                messages.append((ns, connections["audio"], image(ns, wave, "32FC1")))
        for frame in range(int(seconds * rate_hz)):
            ns = start_ns + round(frame * 1e9 / rate_hz)
            label = class_at(frame / rate_hz)
            if "rgb" in kinds:
                rgb = np.clip(40 + 60 * label + rng.normal(0, 20, (rows, cols, 3)), 0, 255).astype(np.uint8)
                messages.append((ns, connections["rgb"], image(ns, rgb, "rgb8")))
            if "depth" in kinds:
                depth = np.clip(800 + 700 * label + rng.normal(0, 100, (rows, cols)), 1, 9000).astype("<u2")
                messages.append((ns, connections["depth"], image(ns, depth, "16UC1")))
        for ns, connection, message in sorted(messages, key=lambda item: item[0]):
            writer.write(connection, ns, store.serialize_cdr(message, connection.msgtype))
    return path


def short_training(preset: str) -> str:
    """Training settings of one epoch per stage at budgets 6 and 12 (a run checks the path, not the model)."""
    return f"""
preset: {preset}
corruption: gaussian
budgets: [6, 12]
universal_extra_budgets: []
mns_budgets: []
trained_baselines: false
latency_samples: 1
stage1: {{epochs: 1, batch_size: 8, init: random, no_layerdrop_ablation: false}}
controller: {{epochs: 1, warmup_epochs: 0, batch_size: 8, universal_epochs: 1, ablation_budgets: []}}
"""
