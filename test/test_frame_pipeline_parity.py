"""The node and the bag evaluator are one frame pipeline: the same recorded stream gives bit-identical results.

A short bag (admn_core.data.bag_writer) is evaluated offline and published, message by message in bag order, to a real
admn_node over rclpy loopback; after each message the test waits until the node received it and processed every set
that message made ready (so nothing is dropped as stale). On the CPU, allocations and positions must be identical,
with the builtin synchronizer and with message_filters', also when the microphones' chunks reach the node well after
the frames they cover (the node must wait for them, not take a window without them).
"""

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from admn_core.bench import random_bundle
from admn_core.bundle import save_bundle
from admn_core.data.bag_writer import write_trajectory_bag
from admn_core.runtime import InferenceEngine
from admn_ros.bags.bag_reader import open_reader
from admn_ros.bags.replay_eval import evaluate_bag
from admn_ros.msgs.conversions import stamp_to_ns
from admn_ros.msgs.sync import message_filters_available
from admn_ros.nodes.admn_node import AdmnNode
from admn_ros.nodes.outputs import parse_allocation

from model_fixtures import micro_config
from ros_fixtures import ros_context, spin_until, unique_name  # noqa: F401 - pytest fixtures

pytestmark = pytest.mark.ros

VIEWS = ("node_1", "node_2")
BUDGET = 8
AUDIO_WAIT_S = 5.0  # longer than any wait here: every set is processed because its audio arrived
SENSOR_SUFFIXES = ("/camera/image_raw", "/depth/image_raw", "/mic/audio")
BACKENDS = ["builtin", pytest.param("message_filters", marks=pytest.mark.skipif(
    not message_filters_available(), reason="message_filters is not importable (install it with "
                                            "/work/shared/ros-tools/install.sh)"))]


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    return write_trajectory_bag(tmp_path_factory.mktemp("bags") / "world", duration_s=1.0, seed=5)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "micro.safetensors"
    return str(save_bundle(path, random_bundle(micro_config(views=VIEWS), budgets=[6, 8], seed=1)))


def sensor_messages(bag, audio_late_s: float) -> list[tuple[str, Image]]:
    """The bag's sensor messages in bag order; with `audio_late_s`, every audio chunk comes that much later (a
    microphone's transport lagging behind the cameras')."""
    reader = open_reader(bag)
    try:
        messages = [(c.topic, deserialize_message(bytes(raw), Image)) for c, _t, raw in reader.messages()
                    if c.topic.endswith(SENSOR_SUFFIXES) and c.topic.split("/")[1] in VIEWS]
    finally:
        reader.close()
    lag_ns = round(audio_late_s * 1e9)
    return sorted(messages, key=lambda m: stamp_to_ns(m[1].header.stamp) + lag_ns * m[0].endswith("/mic/audio"))


def run_node(context, model, bag, backend, audio_late_s) -> dict[int, tuple]:
    """Publish the bag's sensor messages to a real node -> {stamp_ns: (position, active blocks)} of its outputs."""
    namespace = "/" + unique_name("parity")
    node = AdmnNode(context=context, namespace=namespace, parameter_overrides=[
        Parameter("model", value=model), Parameter("fast_path", value=False),
        Parameter("budget_override", value=BUDGET), Parameter("sync_backend", value=backend),
        Parameter("audio_wait_s", value=AUDIO_WAIT_S),
        Parameter("input_qos", value="reliable")])
    peer = Node("parity_peer", context=context, namespace=namespace)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(peer)
    poses, allocations = {}, {}
    peer.create_subscription(PoseWithCovarianceStamped, "admn_node/pose",
                             lambda m: poses.__setitem__(stamp_to_ns(m.header.stamp), m), 100)
    peer.create_subscription(DiagnosticArray, "admn_node/allocation",
                             lambda m: allocations.__setitem__(stamp_to_ns(m.header.stamp), m), 100)
    try:
        messages = sensor_messages(bag, audio_late_s)
        publishers = {topic: peer.create_publisher(Image, topic.lstrip("/"), 100) for topic, _ in messages}
        assert spin_until(executor, lambda: all(p.get_subscription_count() for p in publishers.values()), 10.0)
        keys = {state.resolved_topic: key for key, state in node.inputs.items()}
        pipeline, counters = node.pipeline, node.counters

        def settled():  # every formed set answered, or the newest one waiting for its audio
            answered = (counters.sets_processed + counters.skipped_budget + counters.dropped_out_of_order +
                        counters.dropped_bad_input + counters.failed + counters.dropped_non_finite_output)
            return answered == counters.sets_received or pipeline.waiting_for_audio()

        for topic, msg in messages:
            state = node.inputs[keys[namespace + topic]]
            before = state.received
            publishers[topic].publish(msg)
            assert spin_until(executor, lambda s=state, b=before: s.received > b, 10.0), f"{topic} not received"
            assert spin_until(executor, settled, 30.0), f"sets not processed: {counters}"
        assert spin_until(executor, lambda: counters.sets_processed == counters.sets_received, 2 * AUDIO_WAIT_S)
        assert spin_until(executor, lambda: len(poses) == len(allocations) == counters.sets_processed, 10.0)
        assert counters.dropped_stale == 0
        return {stamp: ((poses[stamp].pose.pose.position.x, poses[stamp].pose.pose.position.y),
                        {k.removeprefix("active_blocks."): [int(b) for b in v.split(",")]
                         for k, v in parse_allocation(allocations[stamp]).items() if k.startswith("active_blocks.")})
                for stamp in poses}
    finally:
        node.destroy_node()
        peer.destroy_node()
        executor.shutdown()


@pytest.mark.parametrize("audio_late_s", [0.0, 0.2], ids=["in_bag_order", "audio_late"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_node_and_the_evaluator_give_identical_results(ros_context, model, bag, backend,  # noqa: F811
                                                           audio_late_s):
    offline = evaluate_bag(bag, InferenceEngine.from_bundle(model), BUDGET, audio_wait_s=AUDIO_WAIT_S,
                           sync_backend=backend)
    expected = {r.stamp_ns: (r.position, r.active_blocks) for r in offline.records if r.ok}
    assert len(expected) >= 10 and len(expected) == len(offline.records)  # 15 Hz for 1 s, every set ran
    live = run_node(ros_context, model, bag, backend, audio_late_s)
    assert sorted(live) == sorted(expected)
    for stamp, (position, blocks) in expected.items():
        assert live[stamp][1] == blocks, f"allocation differs at {stamp}"
        assert live[stamp][0] == position, f"position differs at {stamp}: live {live[stamp][0]}, offline {position}"
