"""admn_ros.nodes.shutdown: a node process ends with exit code 0 and no traceback on SIGINT / SIGTERM, wherever it
lands."""

import os
import subprocess
import sys

import pytest

from ros_fixtures import isolate_ros_environment

# A node in a fresh interpreter. The signal is sent from inside, at a chosen moment, so each race is hit every time;
# `wait_for_shutdown` waits for rclpy's handler to shut the context down before the next rclpy call.
PROBE = """
import os, signal, sys, time
from rclpy.node import Node
from std_msgs.msg import Int32
from admn_ros.nodes.shutdown import spin_until_shutdown

SIGNAL, MOMENT = getattr(signal, sys.argv[1]), sys.argv[2]

def wait_for_shutdown(node):
    deadline = time.monotonic() + 10.0
    while node.context.ok() and time.monotonic() < deadline:
        time.sleep(0.01)

class Probe(Node):
    def __init__(self):
        super().__init__("shutdown_probe")
        if MOMENT == "misconfigured":
            raise ValueError("probe_rate must be > 0, got -1")
        if MOMENT == "building":
            os.kill(os.getpid(), SIGNAL)
            wait_for_shutdown(self)
        self.publisher = self.create_publisher(Int32, "probe", 1)
        self.create_timer(0.01, self.tick)

    def tick(self):
        if MOMENT == "publishing":
            os.kill(os.getpid(), SIGNAL)
            wait_for_shutdown(self)
        self.publisher.publish(Int32(data=1))

    def destroy_node(self):
        print("destroyed", flush=True)
        return super().destroy_node()

sys.exit(spin_until_shutdown(Probe, "shutdown_probe", (ValueError,)))
"""


def run_probe(signal_name: str, moment: str) -> subprocess.CompletedProcess:
    isolate_ros_environment()
    return subprocess.run([sys.executable, "-c", PROBE, signal_name, moment], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ))


@pytest.mark.ros
@pytest.mark.parametrize(("signal_name", "moment", "destroyed"), [
    # The node's next create_* call meets a shut-down context: its constructor never returns, nothing to destroy.
    ("SIGTERM", "building", []),
    ("SIGINT", "building", []),
    # A callback's publish meets a shut-down context: the built node is destroyed on the way out.
    ("SIGTERM", "publishing", ["destroyed"]),
    ("SIGINT", "publishing", ["destroyed"]),
], ids=["SIGTERM-building", "SIGINT-building", "SIGTERM-publishing", "SIGINT-publishing"])
def test_a_signal_anywhere_ends_the_process_cleanly(signal_name, moment, destroyed):
    completed = run_probe(signal_name, moment)
    assert "Traceback" not in completed.stderr, completed.stderr
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == destroyed


@pytest.mark.ros
def test_a_startup_error_is_one_line_and_exit_code_2():
    completed = run_probe("SIGTERM", "misconfigured")
    assert completed.returncode == 2
    assert completed.stderr.strip() == "shutdown_probe: cannot start: probe_rate must be > 0, got -1"
