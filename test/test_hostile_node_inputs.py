"""admn_node against hostile inputs over real rclpy loopback: a decompression bomb on one camera and implausibly loud
audio on one microphone each degrade that one modality of that view, and the node keeps publishing poses; the budget
topic is relative to the node's namespace; qos_overrides parameters change the subscriptions' QoS."""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CompressedImage
from test_admn_node import AUDIO_CHUNK, VIEWS, Rig, bundle_path  # noqa: F401 - pytest fixture
from test_decompression_bombs import HUGE, png_declaring

from admn_ros.msgs.audio import numpy_to_audio_image
from admn_ros.msgs.conversions import ns_to_stamp, numpy_to_compressed
from admn_ros.nodes.admn_node import AdmnNode

from ros_fixtures import ros_context, unique_name  # noqa: F401 - pytest fixtures

pytestmark = pytest.mark.ros

CAMERA_1, MIC_1 = ("node_1", "rgb"), ("node_1", "mic")


@pytest.fixture
def rig(ros_context, bundle_path):  # noqa: F811 - fixture
    rig = Rig(ros_context, bundle_path, camera_transport="compressed")
    yield rig
    rig.close()


def inputs_status(rig) -> tuple[str, dict[str, str]]:
    status = rig.latest_status("admn_node: inputs")
    return status.message, {kv.key: kv.value for kv in status.values}


def test_a_decompression_bomb_degrades_one_camera_and_the_pose_is_still_published(rig):
    def bomb(stamp_s):
        good = numpy_to_compressed(np.zeros((48, 64, 3), np.uint8), "png", stamp=ns_to_stamp(round(stamp_s * 1e9)))
        return CompressedImage(header=good.header, format="png",
                               data=png_declaring(bytes(good.data), HUGE, HUGE))

    for stamp_s in (100.1, 100.2):
        rig.publish_set(stamp_s, camera=lambda s: bomb(s) if s == 100.1 else rig.camera(s))
        rig.next_allocation(stamp_s)  # both sets give an output: the bombed one without node_1's camera
    assert len(rig.poses) >= 1 or rig.spin_until(lambda: rig.poses)
    assert rig.node.counters.frames_rejected_oversize == 1 and rig.node.counters.dropped_bad_input == 0
    topic = rig.node.inputs[CAMERA_1].resolved_topic
    assert f"declares {HUGE}x{HUGE}" in rig.node.inputs[CAMERA_1].last_error
    _, values = inputs_status(rig)
    assert f"declares {HUGE}x{HUGE}" in values[f"{topic}.last_error"]
    assert rig.node._worker.is_alive() and rig.node.counters.failed == 0


def test_implausibly_loud_audio_is_rejected_and_the_pose_is_still_published(rig):
    mic = rig.node.inputs[MIC_1]
    errors = mic.errors
    loud = np.full(AUDIO_CHUNK, 3e38, np.float32)
    loud[::2] = -3e38
    stamp = ns_to_stamp(round(100.1 * 1e9))
    for view in VIEWS:  # node_1's microphone is broken, node_2's is fine
        chunk = loud if view == "node_1" else (0.1 * rig.rng.standard_normal(AUDIO_CHUNK)).astype(np.float32)
        rig.mics[view].publish(numpy_to_audio_image(chunk, stamp=stamp))
    assert rig.spin_until(lambda: mic.errors > errors)
    rig.publish_set(100.1, audio=False)
    rig.next_allocation(100.1)
    assert rig.spin_until(lambda: rig.poses) and np.isfinite(rig.poses[-1].pose.pose.position.x)
    assert rig.node.counters.dropped_non_finite_output == 0
    assert "beyond the plausible" in mic.last_error
    message, values = inputs_status(rig)
    assert "beyond the plausible" in values[f"{mic.resolved_topic}.last_error"]
    assert f"no audio at or before the frame stamp on {mic.resolved_topic}" in message  # that microphone: silent


def test_the_budget_topic_resolves_in_the_node_namespace(ros_context, bundle_path):  # noqa: F811
    namespace = "/" + unique_name("robot")
    node = AdmnNode(context=ros_context, namespace=namespace,
                    parameter_overrides=[Parameter("model", value=bundle_path)])
    try:
        assert {s.topic_name for s in node._budget_subscriptions} == {f"{namespace}/compute_budget"}
        graph = node.get_subscriptions_info_by_topic(f"{namespace}/compute_budget")
        assert sum(info.node_name == "admn_node" and info.node_namespace == namespace for info in graph) == 2
        assert not node.get_subscriptions_info_by_topic("/compute_budget")
    finally:
        node.destroy_node()


def test_qos_overrides_change_the_input_and_budget_subscriptions(ros_context, bundle_path):  # noqa: F811
    namespace = "/" + unique_name("qos")
    camera = f"{namespace}/node_1/camera/image_raw"
    budget = f"{namespace}/compute_budget"
    overrides = [Parameter("model", value=bundle_path),
                 Parameter(f"qos_overrides.{camera}.subscription.reliability", value="reliable"),
                 Parameter(f"qos_overrides.{camera}.subscription.depth", value=3),
                 Parameter(f"qos_overrides.{budget}.subscription.reliability", value="best_effort")]
    node = AdmnNode(context=ros_context, namespace=namespace, parameter_overrides=overrides)
    try:
        subscriptions = {(s.topic_name, s.qos_profile.durability): s.qos_profile for s in node.subscriptions}
        camera_qos = next(q for (topic, _), q in subscriptions.items() if topic == camera)
        assert camera_qos.reliability == ReliabilityPolicy.RELIABLE and camera_qos.depth == 3  # default best effort
        other_camera = next(q for (topic, _), q in subscriptions.items() if topic == f"{namespace}/node_2/camera/"
                            "image_raw")
        assert other_camera.reliability == ReliabilityPolicy.BEST_EFFORT
        budget_reliability = sorted(q.reliability.name for (topic, _), q in subscriptions.items() if topic == budget)
        assert budget_reliability == ["BEST_EFFORT", "RELIABLE"]  # the volatile one overridden, the latched not
        assert node.get_parameter(f"qos_overrides.{camera}.subscription.reliability").value == "reliable"
        assert not [text for _, text in node.parameter_problems if "qos_overrides" in text]
    finally:
        node.destroy_node()


def test_a_misspelt_qos_override_is_reported(ros_context, bundle_path):  # noqa: F811
    namespace = "/" + unique_name("qos")
    name = f"qos_overrides.{namespace}/node_1/camera/image_rawx.subscription.reliability"
    node = AdmnNode(context=ros_context, namespace=namespace,
                    parameter_overrides=[Parameter("model", value=bundle_path), Parameter(name, value="reliable")])
    try:
        assert any(name in text and "is ignored" in text for _, text in node.parameter_problems)
    finally:
        node.destroy_node()
