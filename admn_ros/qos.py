"""Shared QoS profiles and the `/compute_budget` subscription helper.

Budget QoS decision
-------------------
`/compute_budget` (std_msgs/Int32) is latest-value state. Two kinds of publisher must reach the perception node:

* `thermal_monitor` publishes RELIABLE + TRANSIENT_LOCAL + KEEP_LAST(1) (`BUDGET_PUBLISHER_QOS`), so a node that
  starts late is handed the current budget on connection.
* `ros2 topic pub /compute_budget std_msgs/msg/Int32 "{data: 12}"` publishes with the `system_default` preset,
  i.e. RELIABLE + VOLATILE.

DDS durability matching is "offered >= requested": a TRANSIENT_LOCAL *subscription* is INCOMPATIBLE with a VOLATILE
publisher (nothing is delivered, only an incompatible-QoS event), while a VOLATILE subscription matches both kinds
but never receives the latched value of a publisher that spoke before it joined. No single profile does both, and
`DurabilityPolicy.BEST_AVAILABLE` (Iron+) resolves once at creation from the publishers discovered so far, so it is
racy at start-up and absent on Humble.

Decision: subscribe twice to the same topic, once TRANSIENT_LOCAL (`BUDGET_LATCHED_SUBSCRIPTION_QOS`, gets the latched
value from thermal_monitor) and once VOLATILE (`BUDGET_VOLATILE_SUBSCRIPTION_QOS`, gets `ros2 topic pub`). Live samples
from thermal_monitor then arrive on both subscriptions; that is harmless because the budget is idempotent
latest-value state. `subscribe_budget()` wires this up. Alternatively, `ros2 topic pub --qos-durability
transient_local` matches both subscriptions.
"""

from __future__ import annotations

from collections.abc import Callable

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
    qos_profile_system_default,
)

BUDGET_TOPIC = "/compute_budget"

BUDGET_PUBLISHER_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
BUDGET_LATCHED_SUBSCRIPTION_QOS = BUDGET_PUBLISHER_QOS
BUDGET_VOLATILE_SUBSCRIPTION_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

DIAGNOSTICS_QOS = QoSProfile(depth=10)

SENSOR_QOS_NAMES = ("sensor_data", "reliable", "best_effort", "system_default")


def sensor_qos(name: str, depth: int = 5) -> QoSProfile:
    """QoS for sensor inputs by name; `reliable` is the safe choice for large images without a Fast DDS profile."""
    if depth < 1:
        raise ValueError(f"QoS depth must be >= 1, got {depth}")
    if name in ("sensor_data", "best_effort"):
        base = qos_profile_sensor_data
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=base.reliability,
                          durability=base.durability)
    if name == "reliable":
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
    if name == "system_default":
        base = qos_profile_system_default
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=base.reliability,
                          durability=base.durability)
    raise ValueError(f"unknown QoS name {name!r}; expected one of {', '.join(SENSOR_QOS_NAMES)}")


def subscribe_budget(node, callback: Callable, topic: str = BUDGET_TOPIC, callback_group=None) -> tuple:
    """Create the latched + volatile budget subscriptions (see module docstring); returns both."""
    from rclpy.event_handler import SubscriptionEventCallbacks
    from std_msgs.msg import Int32

    # A volatile publisher (`ros2 topic pub`) is incompatible with the latched subscription by design — the
    # volatile one receives it — so rclpy's default "incompatible QoS" warning would be noise on every publish.
    expected_mismatch = SubscriptionEventCallbacks(incompatible_qos=lambda event: None)
    latched = node.create_subscription(Int32, topic, callback, BUDGET_LATCHED_SUBSCRIPTION_QOS,
                                       callback_group=callback_group, event_callbacks=expected_mismatch)
    volatile = node.create_subscription(Int32, topic, callback, BUDGET_VOLATILE_SUBSCRIPTION_QOS,
                                        callback_group=callback_group)
    return latched, volatile
