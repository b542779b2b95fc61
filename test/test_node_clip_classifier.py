"""A clip classifier (several RGB frames per view + a microphone, like the AVE presets) served by admn_node over
real rclpy loopback: every set is answered with class probabilities and the allocation, from the stream's last
frames."""

from dataclasses import replace

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from admn_core.bench import random_bundle
from admn_core.bundle import save_bundle
from admn_core.ros_interface import sensor_topic
from admn_ros.msgs.audio import numpy_to_audio_image
from admn_ros.msgs.conversions import ns_to_stamp, numpy_to_image
from admn_ros.nodes.admn_node import AdmnNode
from admn_ros.nodes.outputs import classification_message_class, parse_allocation

from model_fixtures import micro_config
from ros_fixtures import ros_context, spin_until, unique_name  # noqa: F401 - pytest fixtures

VIEW = "clip"
FRAMES = 3
CLASSES = 5
SETS = 5


def clip_classifier_config():
    config = micro_config(with_mic=True, task="classification", views=(VIEW,))
    rgb, _depth, mic = config.modalities
    return replace(config, modalities=(replace(rgb, frames=FRAMES), mic))


@pytest.fixture
def clip_node(ros_context, tmp_path):  # noqa: F811 - fixture
    from rclpy.executors import SingleThreadedExecutor

    path = save_bundle(tmp_path / "clip.safetensors", random_bundle(clip_classifier_config(), budgets=[4], seed=2))
    namespace = "/" + unique_name("clip")
    node = AdmnNode(context=ros_context, namespace=namespace,
                    parameter_overrides=[Parameter("model", value=str(path)), Parameter("default_budget", value=4)])
    peer = Node("clip_peer", context=ros_context, namespace=namespace)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    executor.add_node(peer)
    yield node, peer, executor
    node.destroy_node()
    peer.destroy_node()
    executor.shutdown()


def test_every_set_gets_class_probabilities_and_an_allocation_once_the_clip_fills(clip_node):
    node, peer, executor = clip_node
    camera = peer.create_publisher(Image, sensor_topic("rgb", VIEW), 10)
    microphone = peer.create_publisher(Image, sensor_topic("audio", VIEW), 10)
    classes, allocations = [], []
    peer.create_subscription(classification_message_class(), "admn_node/classification", classes.append, 10)
    peer.create_subscription(DiagnosticArray, "admn_node/allocation", allocations.append, 10)
    assert spin_until(executor, lambda: camera.get_subscription_count() >= 1
                      and microphone.get_subscription_count() >= 1, 10.0), "the node's inputs were not discovered"
    rng = np.random.default_rng(0)
    for index in range(SETS):
        stamp = ns_to_stamp(50_000_000_000 + index * 100_000_000)
        received = node.inputs[(VIEW, "mic")].received
        microphone.publish(numpy_to_audio_image((0.1 * rng.standard_normal(1600)).astype(np.float32), stamp=stamp))
        assert spin_until(executor, lambda count=received: node.inputs[(VIEW, "mic")].received > count, 5.0)
        camera.publish(numpy_to_image(rng.integers(0, 256, (48, 64, 3), np.uint8), "rgb8", stamp))
        assert spin_until(executor, lambda count=index: len(allocations) > count, 20.0), \
            f"set {index}: {node.counters}"
    assert spin_until(executor, lambda: len(classes) == SETS, 10.0)
    assert node.counters.sets_processed == SETS and node.counters.dropped_bad_input == 0
    for message in classes:
        if isinstance(message, DiagnosticArray):  # the fallback without vision_msgs
            values = {kv.key: float(kv.value) for kv in message.status[0].values if kv.key.startswith("class_")}
            probabilities = np.array([values[f"class_{i}"] for i in range(CLASSES)])
        else:
            probabilities = np.zeros(CLASSES)
            for hypothesis in message.results:
                probabilities[int(hypothesis.class_id)] = hypothesis.score
        assert abs(probabilities.sum() - 1.0) < 1e-4
    np.testing.assert_allclose(probabilities, node.last_result.class_probabilities, atol=1e-5)
    blocks = {k: v for k, v in parse_allocation(allocations[-1]).items() if k.startswith("active_blocks.")}
    assert sorted(blocks) == ["active_blocks.mic", "active_blocks.rgb"]
    assert not node.pipeline.history.warming_up
