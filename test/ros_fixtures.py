"""Reusable rclpy test fixtures: an isolated DDS environment and a private rclpy context.

Import explicitly in a test module (there is deliberately no conftest.py):

    from ros_fixtures import ros_context, spin_until, unique_name  # noqa: F401  (pytest finds fixtures by name)

Isolation, set before the first rclpy.init of the session:
* ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST: Kilted ignores ROS_LOCALHOST_ONLY; this keeps discovery on loopback.
* A private ROS_DOMAIN_ID (from the process id; pin with ADMN_TEST_ROS_DOMAIN_ID), so parallel test runs on one
  host do not see each other's topics.
* ROS_HOME in a temp dir, so rclpy log files do not pile up in ~/.ros.
Topic names from `unique_name()` add a second guard in case two runs draw the same domain.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable

import pytest

_ISOLATED = False


def isolate_ros_environment() -> dict[str, str]:
    """Set the DDS/ROS environment variables for this process (idempotent); returns what was set."""
    global _ISOLATED
    if not _ISOLATED:
        ros_home = tempfile.mkdtemp(prefix="admn_ros_test_home_")
        atexit.register(shutil.rmtree, ros_home, ignore_errors=True)
        os.environ["ROS_HOME"] = ros_home
        os.environ["ROS_LOG_DIR"] = os.path.join(ros_home, "log")
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        # Always override: a developer's shell often exports the robot's domain. 1..100 fit the default port mapping.
        os.environ["ROS_DOMAIN_ID"] = os.environ.get("ADMN_TEST_ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
        _ISOLATED = True
    return {key: os.environ[key] for key in ("ROS_HOME", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")}


def unique_name(prefix: str = "t") -> str:
    """A ROS-legal name part unique to this call, e.g. for topic namespaces."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def ros_context():
    """A private, initialised rclpy Context; shut down (with every node on it) after the test."""
    isolate_ros_environment()
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


@pytest.fixture
def temp_dir():
    path = tempfile.mkdtemp(prefix="admn_ros_test_")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def spin_until(executor, predicate: Callable[[], bool], timeout_s: float = 5.0, step_s: float = 0.02) -> bool:
    """Spin `executor` until `predicate()` holds or the timeout passes; returns the predicate's last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=step_s)
    return predicate()


def spin_for(executor, seconds: float, step_s: float = 0.02) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=step_s)
