"""Sustained load on the real admn_node (a child process) through admn_ros.soak: a short run in `make test`, a
60 s run in `make test-slow`. The long soak is the benchmark command `admn_soak --duration 600 --json soak.json`.

Load: every view of the tiny model (3) x (camera 640x480 rgb8 @ 30 Hz + depth 640x480 16UC1 @ 30 Hz + microphone
chunks @ 50 Hz). Checked: the node stays alive and exits cleanly, outputs and diagnostics are published, queues stay
within their bounds, memory stays flat, every synchronized set is accounted for in a published counter.
"""

import pytest

from admn_ros.soak import SoakConfig, format_report, run_soak

from ros_fixtures import isolate_ros_environment

pytestmark = pytest.mark.ros


def _soak(duration_s: float, warmup_s: float):
    isolate_ros_environment()
    report = run_soak(SoakConfig(duration_s=duration_s, warmup_s=warmup_s), log=lambda text: None)
    print(format_report(report))
    failed = [name for name, ok in report.checks.items() if not ok]
    assert not failed, f"soak checks failed: {failed}\n{format_report(report)}"
    assert report.published["camera_msgs"] >= 0.8 * 30 * duration_s * report.views
    drops = report.drops
    assert drops["sets_received"] > 0 and drops["sets_processed"] > 0
    assert 0.0 <= drops["drop_rate"] <= 1.0
    return report


def test_short_soak():
    _soak(8.0, warmup_s=3.0)


@pytest.mark.slow
def test_soak_60_s():
    report = _soak(60.0, warmup_s=10.0)
    assert report.memory_mib["growth"] < 32.0, format_report(report)
