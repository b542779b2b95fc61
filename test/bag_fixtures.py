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
