"""The ROS side of synchronization: `Subscriber` (an rclpy subscription as a filter) and `make_synchronizer`.

The policies live in `admn_core.stream.sync` (pure Python: message_filters' `SimpleFilter`, `Cache`,
`TimeSynchronizer`, `ApproximateTimeSynchronizer`, re-exported here). `make_synchronizer()` builds message_filters'
`ApproximateTimeSynchronizer` when that package is importable and the built-in one otherwise; both emit the same sets.
It wraps either in a `SynchronizerHandle` (diagnostics, callback errors logged, time-jump-back reset), and stamps
headerless messages with the subscribing node's ROS clock in the built-in one (message_filters uses a wall clock).

API (same as message_filters): `Subscriber(node, msg_type, topic, qos_profile=10, **kwargs)`,
`ApproximateTimeSynchronizer(fs, queue_size, slop, allow_headerless=False)`, `registerCallback(cb, *args)`; the
callback receives one message per input, in input order. Our `Subscriber` also feeds message_filters' synchronizers.
"""

from __future__ import annotations

from collections.abc import Sequence

from admn_core.stream.sync import (  # noqa: F401 - re-exported: the API of message_filters
    BUILTIN,
    ApproximateTimeSynchronizer,
    Cache,
    InputStats,
    SimpleFilter,
    SynchronizerHandle,
    SyncStats,
    TimeSynchronizer,
    wall_clock,
)

MESSAGE_FILTERS = "message_filters"


class Subscriber(SimpleFilter):
    """A ROS subscription as a filter: `Subscriber(node, msg_type, topic, qos_profile=10, **kwargs)`."""

    def __init__(self, node, msg_type, topic: str, qos_profile=10, **kwargs):
        super().__init__()
        self.node = node
        self.topic = topic
        self.sub = node.create_subscription(msg_type, topic, self.callback, qos_profile, **kwargs)

    def callback(self, msg) -> None:
        self.signalMessage(msg)

    def getTopic(self) -> str:
        return self.topic

    def __getattr__(self, key):
        # Serve the rclpy Subscription API (e.g. .topic_name, .destroy) like message_filters does.
        if key == "sub":
            raise AttributeError(key)
        return getattr(self.sub, key)


def message_filters_available() -> bool:
    try:
        import message_filters  # noqa: F401
    except ImportError:
        return False
    return True


def node_clock(inputs: Sequence):
    """A clock reading the ROS time (sim time aware) of the first input's node, or the wall clock without one."""
    node = next((f.node for f in inputs if getattr(f, "node", None) is not None), None)
    return wall_clock if node is None else (lambda: node.get_clock().now())


def make_synchronizer(inputs: Sequence, queue_size: int, slop: float, allow_headerless: bool = False,
                      backend: str = "auto", time_jump_threshold: float | None = 1.0) -> SynchronizerHandle:
    """Approximate-time synchronizer over `inputs`; backend 'auto' (message_filters if importable), 'builtin' or
    'message_filters'. `time_jump_threshold` (seconds, None = off): see `SynchronizerHandle`."""
    if backend not in ("auto", "builtin", MESSAGE_FILTERS):
        raise ValueError(f"sync backend must be 'auto', 'builtin' or 'message_filters', got {backend!r}")
    if backend == MESSAGE_FILTERS or (backend == "auto" and message_filters_available()):
        import message_filters  # raises ImportError with the module name when explicitly requested but absent

        def build(fs):
            return message_filters.ApproximateTimeSynchronizer(fs, queue_size, slop, allow_headerless=allow_headerless)

        return SynchronizerHandle(inputs, build, MESSAGE_FILTERS, time_jump_threshold)

    def build_builtin(fs):
        return ApproximateTimeSynchronizer(fs, queue_size, slop, allow_headerless=allow_headerless,
                                           clock=node_clock(fs))

    return SynchronizerHandle(inputs, build_builtin, BUILTIN, time_jump_threshold)
