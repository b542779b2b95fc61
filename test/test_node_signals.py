"""SIGTERM/SIGINT end admn_node cleanly: exit code 0, no traceback, started or still starting (warm-up)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from test_admn_node import bundle_path  # noqa: F401 - pytest fixture

from ros_fixtures import isolate_ros_environment, unique_name

pytestmark = pytest.mark.ros


def _start(bundle: str) -> subprocess.Popen:
    isolate_ros_environment()
    return subprocess.Popen([sys.executable, "-m", "admn_ros.nodes.admn_node", "--ros-args", "-p", f"model:={bundle}",
                             "-r", f"__ns:=/{unique_name('signal')}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))


def _wait_for_line(process: subprocess.Popen, text: str, timeout_s: float = 120.0) -> str:
    seen, deadline = "", time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen += line
        if text in line:
            return seen
    process.kill()
    raise AssertionError(f"admn_node did not log {text!r}:\n{seen}")


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("moment", ["admn_node ready", "loading model bundle"])
def test_a_signal_ends_admn_node_cleanly(bundle_path, sent, moment):  # noqa: F811
    process = _start(bundle_path)
    _wait_for_line(process, moment)
    process.send_signal(sent)
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
