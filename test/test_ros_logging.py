"""The logging → rclpy bridge: admn_core's log records reach the node's logger, /rosout included."""

import logging

import pytest
from rclpy.logging import LoggingSeverity

from admn_ros.nodes.ros_logging import LIBRARY_LOGGER, forward_logging_to_node, ros_severity, stop_forwarding

from ros_fixtures import ros_context, spin_until, unique_name  # noqa: F401 - pytest fixtures


def test_python_levels_map_to_the_rcutils_severity_of_the_same_rank():
    assert [ros_severity(level) for level in (5, logging.DEBUG, 15, logging.INFO, 25, logging.WARNING,
                                              logging.ERROR, logging.CRITICAL, 60)] == [
        LoggingSeverity.DEBUG, LoggingSeverity.DEBUG, LoggingSeverity.DEBUG, LoggingSeverity.INFO,
        LoggingSeverity.INFO, LoggingSeverity.WARN, LoggingSeverity.ERROR, LoggingSeverity.FATAL,
        LoggingSeverity.FATAL]


@pytest.fixture
def library_logger():
    """The admn_core logger, its level and handlers restored after the test."""
    logger = logging.getLogger(LIBRARY_LOGGER)
    level, handlers = logger.level, list(logger.handlers)
    yield logger
    logger.setLevel(level)
    logger.handlers[:] = handlers


@pytest.mark.ros
def test_library_records_reach_rosout_with_their_severity_until_forwarding_stops(ros_context,  # noqa: F811
                                                                                   library_logger):
    from rcl_interfaces.msg import Log
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    node = Node(unique_name("bridged"), context=ros_context)
    listener = Node(unique_name("listener"), context=ros_context)
    received = []
    qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    listener.create_subscription(Log, "/rosout", received.append, qos)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(listener)
    name = node.get_logger().name

    def from_node():
        return [(m.level, m.msg) for m in received if m.name == name]

    handler = forward_logging_to_node(node)
    pipeline = logging.getLogger("admn_core.train.pipeline")
    pipeline.debug("below the forwarded level")
    pipeline.info("== stage1 ==")
    pipeline.warning("cache settings changed")
    try:
        raise ValueError("bad manifest")
    except ValueError:
        pipeline.exception("stage failed")
    logging.getLogger("unrelated.library").warning("not ours")
    assert spin_until(executor, lambda: len(from_node()) >= 3, timeout_s=15.0)
    levels, texts = zip(*from_node())
    assert levels == (Log.INFO, Log.WARN, Log.ERROR)
    assert texts[0] == "admn_core.train.pipeline: == stage1 =="
    assert texts[1] == "admn_core.train.pipeline: cache settings changed"
    assert texts[2].startswith("admn_core.train.pipeline: stage failed") and "ValueError: bad manifest" in texts[2]

    stop_forwarding(handler)
    assert handler not in library_logger.handlers
    pipeline.info("after forwarding stopped")
    node.get_logger().info("sentinel")  # same publisher, in order: once it arrives, anything earlier has too
    assert spin_until(executor, lambda: any(text == "sentinel" for _, text in from_node()), timeout_s=15.0)
    assert not any("after forwarding stopped" in text for _, text in from_node())
