"""A compute_budget flood must not starve admn_node: real rclpy over loopback, the real node.

Two publisher processes send budgets as fast as they can (the thermal monitor's QoS, so both budget subscriptions
receive them) while the camera/depth/microphone inputs keep streaming at 10 Hz. The node must keep publishing
outputs and answering parameter services during the flood. Counts, not rates: robust under CPU load.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from rclpy.parameter_client import AsyncParameterClient
from test_admn_node import AUDIO_CHUNK, VIEWS, Rig, bundle_path  # noqa: F401 - pytest fixture

from admn_ros.msgs.audio import numpy_to_audio_image
from admn_ros.msgs.conversions import ns_to_stamp

from ros_fixtures import ros_context, spin_for, spin_until  # noqa: F401 - pytest fixtures

pytestmark = pytest.mark.ros

FLOOD_S = 4.0
FLOOD_PUBLISHERS = 2
# A budget publisher gone wild, in its own process (own GIL, own DDS participant): as fast as it can for argv[2] s.
FLOOD_SCRIPT = """
import sys, time, rclpy
from rclpy.node import Node
from std_msgs.msg import Int32
from admn_ros.msgs.qos import BUDGET_PUBLISHER_QOS, BUDGET_TOPIC
rclpy.init()
node = Node("budget_flood", namespace=sys.argv[1])
publisher = node.create_publisher(Int32, BUDGET_TOPIC, BUDGET_PUBLISHER_QOS)
while publisher.get_subscription_count() < 2:
    rclpy.spin_once(node, timeout_sec=0.05)
print("flooding", flush=True)
sent, deadline = 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    for _ in range(100):
        publisher.publish(Int32(data=(6, 8, 12)[sent % 3]))
        sent += 1
print(sent, flush=True)
"""


def _publish_inputs(rig: Rig, stamp_s: float) -> None:
    """One set of every input without waiting for delivery (the node may be slow to take them)."""
    stamp = ns_to_stamp(round(stamp_s * 1e9))
    for view in VIEWS:
        chunk = (0.1 * rig.rng.standard_normal(AUDIO_CHUNK)).astype(np.float32)
        rig.mics[view].publish(numpy_to_audio_image(chunk, stamp=stamp))
        rig.cameras[view].publish(rig.camera(stamp_s))
        rig.depths[view].publish(rig.depth(stamp_s))


def test_a_budget_flood_does_not_starve_inputs_inference_or_parameters(ros_context, bundle_path):  # noqa: F811
    rig = Rig(ros_context, bundle_path)
    client = AsyncParameterClient(rig.peer, rig.node.get_fully_qualified_name())
    floods = [subprocess.Popen([sys.executable, "-c", FLOOD_SCRIPT, rig.namespace, str(FLOOD_S + 3.0)],
                               stdout=subprocess.PIPE, text=True) for _ in range(FLOOD_PUBLISHERS)]
    try:
        for flood in floods:
            assert flood.stdout.readline().strip() == "flooding"
        assert spin_until(rig.executor, lambda: client.services_are_ready(), 10.0)
        spin_for(rig.executor, 0.5)  # the flood is under way before the inputs start
        before = {key: entry.received for key, entry in rig.node.inputs.items()}
        allocations_before = len(rig.allocations)
        answer = client.get_parameters(["sync_slop"])
        stamp_s, deadline = 100.0, time.monotonic() + FLOOD_S
        while time.monotonic() < deadline:
            stamp_s = round(stamp_s + 0.1, 3)
            _publish_inputs(rig, stamp_s)
            spin_for(rig.executor, 0.1)
        answered_during_flood = answer.done()
        outputs_during_flood = len(rig.allocations) - allocations_before
        received = {key: entry.received - before[key] for key, entry in rig.node.inputs.items()}
        flooding = [flood.poll() is None for flood in floods]
    finally:
        sent = [int(flood.communicate(timeout=60)[0].strip() or 0) for flood in floods]
        rig.close()
    assert all(flooding), "a flood publisher stopped before the end of the measurement"
    assert outputs_during_flood > 0, f"no output during the flood; counters {rig.node.counters}, inputs {received}"
    assert all(count > 0 for count in received.values()), f"an input starved during the flood: {received}"
    assert answered_during_flood, "get_parameters was not answered during the flood"
    assert answer.result().values[0].double_value == pytest.approx(0.05)
    print(f"flood: budget messages sent {sent}, budget callbacks {rig.node.counters.budget_messages}, outputs "
          f"{outputs_during_flood}, inputs received {received}")
