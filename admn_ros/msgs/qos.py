"""Shared QoS profiles and the `compute_budget` subscription helper.

The budget topic is relative (`compute_budget`): `/compute_budget` at the root, `/robot1/compute_budget` under the
namespace robot1, so two robots on one network do not share a budget (remap it to share one on purpose).

Floods: the budget is latest-value state. Each budget subscription keeps one sample (KEEP_LAST 1, so DDS overwrites
unread ones: the latest value wins) and sits in a `CoalescingCallbackGroup`, which leaves it out of the executor's
wait set for BUDGET_MIN_INTERVAL_S after each callback. A publisher gone wild then costs the executor at most
1 / BUDGET_MIN_INTERVAL_S callbacks per second per subscription, and the inputs and parameter services keep their
turn. A change takes effect at the next wake of the executor (the next input frame, or the 1 s diagnostics timer).

QoS overrides: every subscription made here accepts rclpy's `qos_overrides.<topic>.subscription.*` parameters
(history, depth, reliability), as upstream ROS 2 nodes do; see `overridable`.

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

import time
from collections.abc import Callable

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
    qos_profile_system_default,
)
from rclpy.qos_overriding_options import QoSOverridingOptions

from admn_core.ros_interface import BUDGET_TOPIC

BUDGET_MIN_INTERVAL_S = 0.01  # at most 100 budget callbacks per second per subscription, whatever is published

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


def overridable(entity_id: str | None = None) -> QoSOverridingOptions:
    """rclpy's default overridable policies (history, depth, reliability) for one subscription; `entity_id` tells
    apart two subscriptions of one topic (`qos_overrides.<topic>.subscription_<entity_id>.*`)."""
    return QoSOverridingOptions.with_default_policies(entity_id=entity_id)


def _copy(profile: QoSProfile) -> QoSProfile:
    # rclpy applies qos_overrides to the profile object it is given: never hand it a shared constant.
    return QoSProfile(history=profile.history, depth=profile.depth, reliability=profile.reliability,
                      durability=profile.durability)


class CoalescingCallbackGroup(MutuallyExclusiveCallbackGroup):
    """A callback group whose entities stay out of the executor's wait set for `min_interval_s` after each callback.

    With KEEP_LAST(1) subscriptions this coalesces a flood into its latest value; see the module docstring."""

    def __init__(self, min_interval_s: float = BUDGET_MIN_INTERVAL_S):
        super().__init__()
        self._min_interval_ns = round(min_interval_s * 1e9)
        self._ready_at_ns = 0

    def can_execute(self, entity) -> bool:
        return time.monotonic_ns() >= self._ready_at_ns and super().can_execute(entity)

    def ending_execution(self, entity) -> None:
        self._ready_at_ns = time.monotonic_ns() + self._min_interval_ns
        super().ending_execution(entity)


def subscribe_budget(node, callback: Callable, topic: str = BUDGET_TOPIC, callback_group=None) -> tuple:
    """Create the latched + volatile budget subscriptions (see module docstring); returns both.

    Without `callback_group` both share a new CoalescingCallbackGroup. QoS overrides:
    `qos_overrides.<topic>.subscription.*` (the volatile one, which `ros2 topic pub` reaches) and
    `qos_overrides.<topic>.subscription_latched.*`."""
    from rclpy.event_handler import SubscriptionEventCallbacks
    from std_msgs.msg import Int32

    group = callback_group if callback_group is not None else CoalescingCallbackGroup()
    # A volatile publisher (`ros2 topic pub`) is incompatible with the latched subscription by design — the
    # volatile one receives it — so rclpy's default "incompatible QoS" warning would be noise on every publish.
    expected_mismatch = SubscriptionEventCallbacks(incompatible_qos=lambda event: None)
    latched = node.create_subscription(Int32, topic, callback, _copy(BUDGET_LATCHED_SUBSCRIPTION_QOS),
                                       callback_group=group, event_callbacks=expected_mismatch,
                                       qos_overriding_options=overridable("latched"))
    volatile = node.create_subscription(Int32, topic, callback, _copy(BUDGET_VOLATILE_SUBSCRIPTION_QOS),
                                        callback_group=group, qos_overriding_options=overridable())
    return latched, volatile
