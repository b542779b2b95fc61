"""Bad-input catalogue through the REAL admn_node (rclpy over loopback DDS, random-weights micro bundle).

Every case: a clear error (log line and diagnostics), no crash (the worker thread lives, nothing counted as `failed`
unless the case is a fault), and the node recovers: a good set published afterwards is processed and its allocation
published. `test_admn_node.py` already covers: a depth image on the camera topic, truncated depth data, all-NaN
depth, an empty audio chunk, one out-of-order camera/depth pair, budget_override below the minimum, a missing model
and an invalid parameter value; this module extends, not repeats, those.

Cases that need the rosbag replay evaluator (the node restarted in the middle of a replay -> the evaluator reports the
gap; the same catalogue fed from a bag) are left to that work.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Int32
from test_admn_node import AUDIO_CHUNK, HEIGHT, VIEWS, WIDTH, Rig

from admn_core.bench import random_bundle
from admn_core.bundle import save_bundle
from admn_core.stream import pipeline as pipeline_module
from admn_ros.msgs.audio import numpy_to_audio_image
from admn_ros.msgs.conversions import ns_to_stamp, numpy_to_image
from admn_ros.nodes.admn_node import AdmnNode, ModelLoadError
from admn_ros.nodes.node_diagnostics import inference_status
from admn_ros.nodes.outputs import parse_allocation

from model_fixtures import micro_config
from ros_fixtures import ros_context, spin_for, unique_name  # noqa: F401 - pytest fixtures

pytestmark = pytest.mark.ros

INFERENCE = "admn_node: inference"
INPUTS = "admn_node: inputs"


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "micro.safetensors"
    return str(save_bundle(path, random_bundle(micro_config(views=VIEWS), budgets=[6, 8], seed=1)))


class RobustRig(Rig):
    """The node test rig plus log capture (rcutils writes to fd 2), diagnostics helpers and a recovery check."""

    def __init__(self, context, bundle_path, capfd, **parameters):
        super().__init__(context, bundle_path, **parameters)
        self._capfd = capfd
        self._log = ""
        self.stamp_s = 100.0  # good sets go forward from here

    def log(self) -> str:
        self._log += self._capfd.readouterr().err
        return self._log

    def wait_log(self, text: str, timeout_s: float = 5.0) -> bool:
        return self.spin_until(lambda: text in self.log(), timeout_s)

    def status(self, name: str) -> tuple[int, str, dict[str, str]]:
        status = self.latest_status(name)
        return status.level, status.message, {kv.key: kv.value for kv in status.values}

    def wait_status(self, name: str, predicate, timeout_s: float = 5.0):
        deadline = time.monotonic() + timeout_s
        while True:
            level, message, values = self.status(name)
            if predicate(level, message, values) or time.monotonic() > deadline:
                return level, message, values

    def next_stamp(self, step_s: float = 0.1) -> float:
        self.stamp_s = round(self.stamp_s + step_s, 3)
        return self.stamp_s

    def good_set(self, timeout_s: float = 5.0) -> dict[str, str]:
        stamp = self.next_stamp()
        self.publish_set(stamp)
        return parse_allocation(self.next_allocation(stamp, timeout_s))

    def recover(self, tries: int = 4) -> dict[str, str]:
        """Good input again: some good set (a synchronizer reset may eat the first) is processed and published."""
        for _ in range(tries):
            stamp = self.next_stamp()
            self.publish_set(stamp)
            wanted = ns_to_stamp(round(stamp * 1e9))
            if self.spin_until(lambda w=wanted: any(a.header.stamp == w for a in self.allocations), 3.0):
                assert self.node._worker.is_alive()
                return parse_allocation(next(a for a in self.allocations if a.header.stamp == wanted))
        raise AssertionError(f"the node did not recover: counters {self.node.counters}")

    def stamp(self, stamp_s: float):
        return ns_to_stamp(round(stamp_s * 1e9))


@pytest.fixture
def rig_factory(ros_context, bundle_path, capfd):  # noqa: F811 - fixture
    rigs = []

    def make(**parameters):
        rigs.append(RobustRig(ros_context, bundle_path, capfd, **parameters))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


# ------------------------------------------------------------------------------------------------ helpers


def image(encoding, array, stamp_s):
    return numpy_to_image(array, encoding, stamp=ns_to_stamp(round(stamp_s * 1e9)))


def raw_image(encoding, height, width, step, data: bytes, stamp_s):
    msg = Image(encoding=encoding, height=height, width=width, step=step, data=data)
    msg.header.stamp = ns_to_stamp(round(stamp_s * 1e9))
    return msg


def bad_set(rig, entry_key, camera=None, depth=None):
    """Publish one set whose node_1 camera or depth is bad; wait for the error to be counted on that input."""
    entry = rig.node.inputs[entry_key]
    before = entry.errors
    rig.publish_set(rig.next_stamp(), camera=camera, depth=depth)
    assert rig.spin_until(lambda: entry.errors > before), f"no error counted on {entry.resolved_topic}"
    return entry


def expect_input_error(rig, entry, text, set_dropped=True):
    """The reason is in the entry, in the inputs diagnostics (per-topic last_error) and in the log."""
    assert text in entry.last_error, entry.last_error
    _, _, values = rig.status(INPUTS)
    assert text in values[f"{entry.resolved_topic}.last_error"]
    assert int(values[f"{entry.resolved_topic}.errors"]) >= 1
    assert rig.wait_log(f"bad input on {entry.resolved_topic}: ") and text in rig.log()
    assert rig.node.counters.dropped_bad_input >= 1 or not set_dropped


def expect_finite_output(rig):
    result = rig.node.last_result
    assert result is not None and np.all(np.isfinite(result.position_m)) and np.all(np.isfinite(result.covariance_m2))
    assert rig.poses and np.isfinite(rig.poses[-1].pose.pose.position.x)


# ------------------------------------------------------------------------------------------------ the cases
# Each returns nothing; it injects the bad input and asserts the error (log + diagnostics). The test then checks
# that the node is alive and that a good set is processed afterwards.

CAMERA_1, DEPTH_1, MIC_1 = ("node_1", "rgb"), ("node_1", "depth"), ("node_1", "mic")


def case_unknown_encoding(rig):
    entry = bad_set(rig, CAMERA_1, camera=lambda s: raw_image("yuv999", HEIGHT, WIDTH, WIDTH * 2,
                                                              bytes(HEIGHT * WIDTH * 2), s))
    expect_input_error(rig, entry, "unsupported image encoding 'yuv999'")


def case_mismatched_depth_encoding(rig):
    entry = bad_set(rig, DEPTH_1, depth=lambda s: image("rgb8", np.zeros((HEIGHT, WIDTH, 3), np.uint8), s))
    expect_input_error(rig, entry, "depth encoding 'rgb8' is not one of")


def case_wrong_step(rig):
    entry = bad_set(rig, CAMERA_1, camera=lambda s: raw_image("rgb8", HEIGHT, WIDTH, WIDTH * 3 - 5,
                                                              bytes(HEIGHT * (WIDTH * 3 - 5)), s))
    expect_input_error(rig, entry, "is smaller than width*bytes_per_pixel")


def case_wrong_size(rig):
    # The header says 48 rows, the data holds 60 (a driver that changed resolution without updating the header).
    entry = bad_set(rig, CAMERA_1, camera=lambda s: raw_image("rgb8", HEIGHT, WIDTH, WIDTH * 3,
                                                              bytes(60 * WIDTH * 3), s))
    expect_input_error(rig, entry, "expected step*height")


def case_empty_image(rig):
    entry = bad_set(rig, DEPTH_1, depth=lambda s: raw_image("16UC1", 0, 0, 0, b"", s))
    expect_input_error(rig, entry, "empty image")


def case_nan_inf_depth(rig):
    # REP-117: NaN / +Inf / -Inf are "no return"; a partly invalid frame is used without complaint and the
    # output stays finite. A frame that is ALL +Inf is counted and warned about, and still used.
    def partly_invalid(stamp_s):
        metres = np.full((HEIGHT, WIDTH), 2.5, np.float32)
        metres[:10] = np.nan
        metres[10:20] = np.inf
        metres[20:30] = -np.inf
        return image("32FC1", metres, stamp_s)

    stamp = rig.next_stamp()
    rig.publish_set(stamp, depth=partly_invalid)
    rig.next_allocation(stamp)
    expect_finite_output(rig)
    assert rig.node.counters.depth_frames_all_invalid == 0
    stamp = rig.next_stamp()
    rig.publish_set(stamp, depth=lambda s: image("32FC1", np.full((HEIGHT, WIDTH), np.inf, np.float32), s))
    rig.next_allocation(stamp)
    expect_finite_output(rig)
    assert rig.node.counters.depth_frames_all_invalid == 1
    assert rig.wait_log("depth frame has no valid pixel")
    _, _, values = rig.status(INPUTS)
    assert "no valid pixel" in values[f"{rig.node.inputs[DEPTH_1].resolved_topic}.last_error"]


def case_all_zero_frames(rig):
    stamp = rig.next_stamp()
    rig.publish_set(stamp, camera=lambda s: image("rgb8", np.zeros((HEIGHT, WIDTH, 3), np.uint8), s),
                    depth=lambda s: image("16UC1", np.zeros((HEIGHT, WIDTH), np.uint16), s))
    rig.next_allocation(stamp)
    expect_finite_output(rig)
    assert rig.node.counters.depth_frames_all_invalid == 1  # 0 mm = no return: a blind depth camera, said so
    assert rig.wait_log("depth frame has no valid pixel")
    _, _, values = rig.status(INFERENCE)
    assert values["depth_frames_all_invalid"] == "1"


def case_saturated_frames(rig):
    stamp = rig.next_stamp()
    rig.publish_set(stamp, camera=lambda s: image("rgb8", np.full((HEIGHT, WIDTH, 3), 255, np.uint8), s),
                    depth=lambda s: image("16UC1", np.full((HEIGHT, WIDTH), 65535, np.uint16), s))
    rig.next_allocation(stamp)
    expect_finite_output(rig)
    assert rig.node.counters.dropped_non_finite_output == 0 and rig.node.counters.dropped_bad_input == 0


def _bad_audio(rig, msg, text):
    entry = rig.node.inputs[MIC_1]
    before = entry.errors
    rig.mics["node_1"].publish(msg)
    assert rig.spin_until(lambda: entry.errors > before)
    expect_input_error(rig, entry, text, set_dropped=False)  # a rejected chunk, not a dropped set


def case_audio_wrong_channel_count(rig):
    stereo = numpy_to_audio_image(np.zeros((2, AUDIO_CHUNK), np.float32), stamp=rig.stamp(rig.next_stamp()))
    _bad_audio(rig, stereo, "expected 1 channel row(s)")


def case_audio_wrong_encoding(rig):
    msg = image("16UC1", np.zeros((1, AUDIO_CHUNK), np.uint16), rig.next_stamp())
    _bad_audio(rig, msg, "audio Image carrier must be 32FC1")


def case_audio_non_finite(rig):
    samples = np.zeros(AUDIO_CHUNK, np.float32)
    samples[::7] = np.nan
    _bad_audio(rig, numpy_to_audio_image(samples, stamp=rig.stamp(rig.next_stamp())), "non-finite samples")


def _chunks(rig, count, samples, step_s):
    """`count` chunks of `samples` samples on node_1's microphone, stamps `step_s` apart."""
    entry = rig.node.inputs[MIC_1]
    before = entry.received
    for _ in range(count):
        chunk = (0.1 * rig.rng.standard_normal(samples)).astype(np.float32)
        rig.stamp_s = round(rig.stamp_s + step_s, 6)
        rig.mics["node_1"].publish(numpy_to_audio_image(chunk, stamp=rig.stamp(rig.stamp_s)))
        time.sleep(0.002)
    assert rig.spin_until(lambda: entry.received >= before + count)


def case_audio_wrong_rate(rig):
    # A driver at 32 kHz sending 1600-sample chunks every 50 ms, to a node configured for 16 kHz.
    _chunks(rig, 14, AUDIO_CHUNK, 0.05)
    entry = rig.node.inputs[MIC_1]
    assert "runs at about 32000 Hz" in entry.last_error
    level, message, _ = rig.status(INPUTS)
    assert level == DiagnosticStatus.WARN and "runs at about 32000 Hz" in message
    assert rig.wait_log("runs at about 32000 Hz")
    _chunks(rig, 25, AUDIO_CHUNK, 0.1)  # the driver fixed: the warning clears
    assert rig.node.assembler.rate_checks[MIC_1].problem is None


def case_audio_wrong_length(rig):
    # Chunks far shorter than their stamp spacing (a driver sending 100 of every 1600 samples): the window is
    # mostly zero-filled; counted and warned, inference still runs.
    _chunks(rig, 3, 100, 0.1)
    before = rig.node.counters.audio_samples_zero_filled
    rig.cameras["node_1"].publish(rig.camera(rig.stamp_s))
    rig.depths["node_1"].publish(rig.depth(rig.stamp_s))
    for view in VIEWS[1:]:
        rig.cameras[view].publish(rig.camera(rig.stamp_s))
        rig.depths[view].publish(rig.depth(rig.stamp_s))
    rig.next_allocation(rig.stamp_s)
    assert rig.node.counters.audio_samples_zero_filled > before
    assert rig.wait_log("audio window mostly zero-filled")
    assert "mostly zero-filled" in rig.node.pipeline.audio_problem


def case_duplicated_stamps(rig):
    stamp = rig.next_stamp()
    rig.publish_set(stamp)
    rig.next_allocation(stamp)
    rig.publish_set(stamp)  # the same stamps again (a bag recorded twice, a driver repeating frames)
    # The synchronizer emitted the first set, so the repeat forms a set of its own: not newer than the last one.
    assert rig.spin_until(lambda: rig.node.counters.dropped_out_of_order == 1, 5.0)
    assert rig.wait_log("is not newer than the last processed")
    _, _, values = rig.status(INFERENCE)
    assert values["dropped_out_of_order"] == "1"
    assert rig.node.counters.sets_processed == 1


def case_out_of_order_set(rig):
    stamp = rig.next_stamp()
    rig.publish_set(stamp)
    rig.next_allocation(stamp)
    rig.publish_set(stamp - 0.5)  # a whole set half a second older (a reordering relay)
    camera = rig.node.inputs[CAMERA_1]
    assert rig.spin_until(lambda: "out-of-order" in camera.last_error, 5.0)
    assert rig.wait_log("out-of-order")
    assert rig.node.counters.sets_processed == 1


def case_never_synchronizable(rig):
    # Cameras stamped with bag time, depth with wall-clock time (a driver ignoring use_sim_time): never within slop.
    # Both keep streaming (no input is silent), so the inputs status must name the synchronization itself.
    wall = time.time()
    rig.diagnostics.clear()

    def reported():
        return [s for d in rig.diagnostics for s in d.status if s.name == INPUTS and "no synchronized set" in s.message]

    for index in range(40):
        stamp = rig.next_stamp()
        for view in VIEWS:
            rig.mics[view].publish(numpy_to_audio_image(np.zeros(AUDIO_CHUNK, np.float32), stamp=rig.stamp(stamp)))
            rig.cameras[view].publish(rig.camera(stamp))
            rig.depths[view].publish(rig.depth(wall + 0.1 * index))
        spin_for(rig.executor, 0.1)
        if reported():
            break
    assert rig.node.counters.sets_received == 0
    status = reported()[0]
    assert status.level == DiagnosticStatus.WARN and "differ by more than sync_slop=0.02" in status.message
    assert rig.wait_log("no synchronized set")


def case_time_jumps_back(rig):
    stamp = rig.next_stamp()
    rig.publish_set(stamp)
    rig.next_allocation(stamp)
    rig.stamp_s = stamp - 60.0  # the bag loops: one minute back
    allocation = rig.good_set()
    assert allocation["budget_requested"] == "12" and rig.node.counters.time_jumps == 1
    assert rig.wait_log("input time jumped back")
    _, _, values = rig.status(INFERENCE)
    assert values["time_jumps"] == "1"


def case_modality_missing_for_seconds(rig):
    # node_2's depth camera goes silent for 1.5 s while every other input keeps streaming at 10 Hz.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        stamp = rig.next_stamp()
        for view in VIEWS:
            rig.cameras[view].publish(rig.camera(stamp))
        rig.depths["node_1"].publish(rig.depth(stamp))
        spin_for(rig.executor, 0.1)
    depth_2 = rig.node.inputs[("node_2", "depth")].resolved_topic
    level, message, _ = rig.wait_status(INPUTS, lambda lv, msg, _: f"no message on {depth_2}" in msg)
    assert level == DiagnosticStatus.WARN and f"no message on {depth_2}" in message
    assert rig.wait_log(f"no message on {depth_2}")
    assert rig.node.counters.sets_received == 0


def case_audio_missing_for_seconds(rig):
    # Frames keep coming, the microphones are silent: inference runs on a silent window and says so.
    for _ in range(3):
        stamp = rig.next_stamp(0.5)
        rig.publish_set(stamp, audio=False)
        rig.next_allocation(stamp)
    assert rig.node.counters.audio_windows_missing >= 3
    level, message, _ = rig.status(INPUTS)
    assert level == DiagnosticStatus.WARN and "no audio at or before the frame stamp" in message
    assert rig.wait_log("silent window used")
    rig.recover()
    assert rig.node.pipeline.audio_problem is None  # audio back: the warning clears


def _budget(rig, value):
    rig.budget.publish(Int32(data=value))
    assert rig.spin_until(lambda: rig.node.current_budget() == (value, "topic"))


def case_budget_below_minimum(rig):
    _budget(rig, 1)
    rig.publish_set(rig.next_stamp())
    assert rig.spin_until(lambda: rig.node.counters.skipped_budget == 1)
    level, message, _ = rig.status(INFERENCE)
    assert level == DiagnosticStatus.WARN and "budget 1 (topic) is below the model's minimum 3" in message
    assert rig.wait_log("below the model's minimum")
    assert rig.allocations == []
    _budget(rig, 6)


def case_budget_negative(rig):
    _budget(rig, -5)
    rig.publish_set(rig.next_stamp())
    assert rig.spin_until(lambda: rig.node.counters.skipped_budget == 1)
    assert "budget -5 (topic) is below the model's minimum" in rig.status(INFERENCE)[1]
    result = rig.node.set_parameters([Parameter("budget_override", value=-7)])[0]
    assert not result.successful and "budget_override" in result.reason  # rclpy's range check names it
    _budget(rig, 8)


def case_budget_above_maximum(rig):
    _budget(rig, 1000)
    values = rig.good_set()
    assert values["budget_requested"] == "1000" and values["source"] == "full" and values["budget_used"] == "36"
    _, _, diagnostics = rig.status(INFERENCE)
    assert diagnostics["budget"] == "1000" and diagnostics["budget_max"] == "36"


def case_budget_flood_1khz(rig):
    # A budget publisher gone wild: 1 kHz for a second, values cycling through invalid and valid ones, while sets
    # flow. Every inference obeys the budget it read; the change log is throttled; parameters stay responsive.
    values = [2, 6, 40, -1, 8, 3, 12]
    stop = threading.Event()
    sent = [0]

    def flood():
        started = time.perf_counter()
        while not stop.is_set() and sent[0] < 1000:
            rig.budget.publish(Int32(data=values[sent[0] % len(values)]))
            sent[0] += 1
            time.sleep(max(0.0, started + sent[0] / 1000 - time.perf_counter()))

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            rig.publish_set(rig.next_stamp())
            spin_for(rig.executor, 0.05)
        assert rig.node.set_parameters([Parameter("sync_slop", value=0.05)])[0].successful
    finally:
        stop.set()
        thread.join(5.0)
    spin_for(rig.executor, 0.5)
    # compute_budget is latest-value state (KEEP_LAST 1, coalesced to at most 100 callbacks/s per subscription by
    # admn_ros.msgs.qos.CoalescingCallbackGroup): most of the 1000 are overwritten before they are taken.
    assert sent[0] >= 500 and 1 <= rig.node.counters.budget_messages < sent[0]
    for allocation in rig.allocations:
        parsed = parse_allocation(allocation)
        assert int(parsed["budget_used"]) <= min(int(parsed["budget_requested"]), 36)
    assert rig.log().count("/compute_budget:") <= 3, "budget change log not throttled"
    _budget(rig, 8)


@dataclass
class Case:
    run: callable
    parameters: dict = field(default_factory=dict)
    expected_failed: int = 0


CATALOGUE = {
    "unknown_encoding": Case(case_unknown_encoding),
    "mismatched_depth_encoding": Case(case_mismatched_depth_encoding),
    "wrong_step": Case(case_wrong_step),
    "wrong_size": Case(case_wrong_size),
    "empty_image": Case(case_empty_image),
    "nan_inf_depth": Case(case_nan_inf_depth),
    "all_zero_frames": Case(case_all_zero_frames),
    "saturated_frames": Case(case_saturated_frames),
    "audio_wrong_channel_count": Case(case_audio_wrong_channel_count),
    "audio_wrong_encoding": Case(case_audio_wrong_encoding),
    "audio_non_finite": Case(case_audio_non_finite),
    "audio_wrong_rate": Case(case_audio_wrong_rate),
    "audio_wrong_length": Case(case_audio_wrong_length),
    "duplicated_stamps": Case(case_duplicated_stamps),
    "out_of_order_set": Case(case_out_of_order_set),
    "never_synchronizable": Case(case_never_synchronizable, {"no_input_warning_s": 0.5, "sync_slop": 0.02}),
    "time_jumps_back": Case(case_time_jumps_back),
    "modality_missing_for_seconds": Case(case_modality_missing_for_seconds, {"no_input_warning_s": 0.5}),
    "audio_missing_for_seconds": Case(case_audio_missing_for_seconds),
    "budget_below_minimum": Case(case_budget_below_minimum),
    "budget_negative": Case(case_budget_negative),
    "budget_above_maximum": Case(case_budget_above_maximum),
    "budget_flood_1khz": Case(case_budget_flood_1khz),
}


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_bad_input_catalogue(rig_factory, name):
    case = CATALOGUE[name]
    rig = rig_factory(**case.parameters)
    case.run(rig)
    assert rig.node._worker.is_alive(), "the inference worker died"
    rig.recover()
    assert rig.node.counters.failed == case.expected_failed
    assert rig.node._worker.is_alive()


# ------------------------------------------------------------------------------------ bundles and config files


def _tensors_and_metadata(path):
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata())


def _rewrite(source, target, edit_tensors=None, edit_metadata=None):
    from safetensors.torch import save_file

    tensors, metadata = _tensors_and_metadata(source)
    if edit_tensors:
        edit_tensors(tensors)
    if edit_metadata:
        edit_metadata(metadata)
    save_file(tensors, str(target), metadata=metadata)
    return str(target)


def _edit_config(change):
    def edit(metadata):
        config = json.loads(metadata["config"])
        change(config)
        metadata["config"] = json.dumps(config)
    return edit


def _bad_bundles(good: str, directory: Path) -> dict[str, tuple[str, dict, str]]:
    """name -> (model path, extra parameters, expected error text)."""
    data = Path(good).read_bytes()
    truncated = directory / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    tampered = directory / "tampered.safetensors"
    flipped = bytearray(data)
    flipped[-100] ^= 0xFF  # inside the tensor data: the header still parses
    tampered.write_bytes(bytes(flipped))

    def widen(config):
        config["modalities"][0]["embed_dim"] = 64  # tensors are 32 wide: an incompatible bundle

    def typo(config):
        config["modalities"][0]["embed_dimm"] = config["modalities"][0].pop("embed_dim")

    def newer(metadata):
        metadata["format_version"] = "99"

    foreign = directory / "foreign.safetensors"
    import torch
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3)}, str(foreign), metadata={"format": "someone-elses"})
    return {
        "truncated": (str(truncated), {}, "not a readable safetensors file (truncated or corrupt?)"),
        "tampered": (str(tampered), {}, "do not match the recorded content_sha256"),
        "incompatible_shapes": (_rewrite(good, directory / "wide.safetensors", edit_metadata=_edit_config(widen)), {},
                                "does not match its config"),
        "config_unknown_key": (_rewrite(good, directory / "typo.safetensors", edit_metadata=_edit_config(typo)), {},
                               "unknown key 'embed_dimm' (did you mean 'embed_dim'?)"),
        "newer_format": (_rewrite(good, directory / "newer.safetensors", edit_metadata=newer), {},
                         "is newer than this code reads"),
        "not_an_admn_bundle": (str(foreign), {}, "not an ADMN bundle"),
        "wrong_sha256": (good, {"expected_sha256": "0" * 64}, "does not match the expected " + "0" * 64),
    }


def _inference_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "admn_inference" and t.is_alive())


def test_bad_bundles_are_refused_with_a_clear_error_and_no_inference(ros_context, bundle_path, tmp_path,  # noqa: F811
                                                                    capfd):
    threads = _inference_threads()
    for name, (model, extra, text) in _bad_bundles(bundle_path, tmp_path).items():
        overrides = [Parameter("model", value=model)] + [Parameter(k, value=v) for k, v in extra.items()]
        with pytest.raises(ModelLoadError) as raised:
            AdmnNode(context=ros_context, namespace="/" + unique_name(name), parameter_overrides=overrides)
        assert text in str(raised.value), (name, str(raised.value))
        assert str(Path(model).resolve()) in str(raised.value), f"{name}: the error must name the resolved file"
        assert _inference_threads() == threads, f"{name}: an inference worker was started"
        err = capfd.readouterr().err
        assert f"cannot load the model bundle {Path(model).resolve()}" in err and text in err, name
    # Recovery: the good bundle (with its correct hash) still loads in the same process and context.
    import hashlib

    digest = hashlib.sha256(Path(bundle_path).read_bytes()).hexdigest()
    node = AdmnNode(context=ros_context, parameter_overrides=[Parameter("model", value=bundle_path),
                                                              Parameter("expected_sha256", value=digest.upper())])
    try:
        assert node._worker.is_alive()
    finally:
        node.destroy_node()


def test_nothing_is_unpickled_and_paths_are_resolved_and_logged(ros_context, bundle_path, tmp_path,  # noqa: F811
                                                                monkeypatch, capfd):
    import pickle

    import torch

    # A pickle whose loading would run code (writes a marker file), named like a bundle and like a checkpoint.
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.write_text, (marker, "unpickled"))

    for name in ("evil.safetensors", "evil.pth"):
        (tmp_path / name).write_bytes(pickle.dumps(Exploit()))
        with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
            AdmnNode(context=ros_context, parameter_overrides=[Parameter("model", value=str(tmp_path / name))])
    assert not marker.exists(), "a pickle was executed while loading a model"

    # Loading a good bundle never reaches an unpickler at all.
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling during bundle load")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    # A path with `..` and a relative path: both resolved, and the resolved path is what the log reports.
    roundabout = str(Path(bundle_path).parent / ".." / Path(bundle_path).parent.name / Path(bundle_path).name)
    monkeypatch.chdir(Path(bundle_path).parent.parent)
    relative = str(Path(Path(bundle_path).parent.name) / Path(bundle_path).name)
    for given in (roundabout, relative):
        node = AdmnNode(context=ros_context, parameter_overrides=[Parameter("model", value=given)])
        try:
            assert node.model_path == Path(bundle_path).resolve()
            assert f"loading model bundle {Path(bundle_path).resolve()}" in capfd.readouterr().err
            assert inference_status(node).hardware_id == str(Path(bundle_path).resolve())
        finally:
            node.destroy_node()


def test_a_params_file_typo_is_reported_with_the_closest_name(rig_factory, ros_context, bundle_path, tmp_path,  # noqa: F811
                                                              capfd):
    params = tmp_path / "admn_node.yaml"
    params.write_text("/**/admn_node:\n  ros__parameters:\n    sync_slopp: 0.1\n    budget_overide: 6\n"
                      "    frame_id: map\n    some_other_nodes_setting: 3\n")
    node = AdmnNode(context=ros_context, namespace="/" + unique_name("typo"),
                    cli_args=["--ros-args", "--params-file", str(params)],
                    parameter_overrides=[Parameter("model", value=bundle_path)])
    try:
        assert node.get_parameter("frame_id").value == "map"  # the valid key applied
        levels = dict((text.split("'")[1], level) for level, text in node.parameter_problems)
        assert levels == {"sync_slopp": "error", "budget_overide": "error", "some_other_nodes_setting": "warning"}
        err = capfd.readouterr().err
        assert "unknown parameter 'sync_slopp' is ignored: did you mean 'sync_slop'?" in err
        assert "did you mean 'budget_override'?" in err
        status = inference_status(node)
        values = {kv.key: kv.value for kv in status.values}
        assert status.level == DiagnosticStatus.ERROR and "did you mean 'sync_slop'" in status.message
        assert any("some_other_nodes_setting" in v for k, v in values.items() if k.startswith("parameter_problem."))
    finally:
        node.destroy_node()


def test_startup_config_errors_exit_cleanly_with_a_reason(bundle_path, tmp_path, capsys):
    """main(): a wrongly typed value in a params file and an audio rate unlike the model's -> exit 2 with a reason."""
    from admn_ros.nodes.admn_node import main

    typed = tmp_path / "typed.yaml"
    typed.write_text("/**/admn_node:\n  ros__parameters:\n    sync_slop: 0\n")  # an int where a double is declared
    assert main(["admn_node", "--ros-args", "--params-file", str(typed), "-p", f"model:={bundle_path}"]) == 2
    err = capsys.readouterr().err
    assert "admn_node: cannot start:" in err and "sync_slop" in err
    assert main(["admn_node", "--ros-args", "-p", f"model:={bundle_path}", "-p", "audio_sample_rate:=8000"]) == 2
    assert "audio_sample_rate 8000 Hz differs from the model's 16000 Hz" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ faults


class DeviceFaults:
    """Device errors raised inside the engine's inference call, where the engine itself would raise them; `fault`:
    None (off), 'oom' (every call), 'oom_cuda' (while on a CUDA device), 'error' (a plain RuntimeError) or
    ('oom_above', budget)."""

    def __init__(self, monkeypatch, engine, fault):
        self.fault, infer = fault, engine.infer

        def faulty_infer(sample, budget):
            self.raise_for(engine, budget)
            return infer(sample, budget)

        monkeypatch.setattr(engine, "infer", faulty_infer)

    def raise_for(self, engine, budget):
        if self.fault == "error":
            raise RuntimeError("injected device error")
        above = isinstance(self.fault, tuple) and budget > self.fault[1]
        if self.fault == "oom" or (self.fault == "oom_cuda" and engine.device.type == "cuda") or above:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 20.00 MiB at budget {budget}")


def test_out_of_memory_retries_at_a_lower_budget_then_recovers(rig_factory, monkeypatch):
    rig = rig_factory()
    faults = DeviceFaults(monkeypatch, rig.node.engine, ("oom_above", 6))
    values = rig.good_set()
    assert int(values["budget_requested"]) <= 6 and values["budget_origin"] == "default+oom_cap"
    assert int(values["budget_used"]) <= int(values["budget_requested"])
    counters = rig.node.counters
    assert counters.oom_errors >= 1 and counters.oom_retries >= 1 and counters.failed == 0
    level, message, diag = rig.status(INFERENCE)
    assert level == DiagnosticStatus.ERROR and "device out of memory on cpu at budget" in message
    assert diag["oom_budget_cap"] == values["budget_requested"]
    assert rig.wait_log("device out of memory on cpu at budget 12: retried at")
    errors = counters.oom_errors
    assert rig.good_set()["budget_origin"] == "default+oom_cap" and counters.oom_errors == errors  # capped: no retry

    # Memory is back (fault cleared) and the hold time has passed: the full request runs again, diagnostics OK.
    monkeypatch.setattr(pipeline_module, "OOM_CAP_HOLD_S", 0.2)
    faults.fault = None
    time.sleep(0.3)
    values = rig.good_set()
    assert values["budget_requested"] == "12" and values["budget_origin"] == "default"
    level, _, diag = rig.wait_status(INFERENCE, lambda lv, msg, v: lv == DiagnosticStatus.OK)
    assert level == DiagnosticStatus.OK and diag["oom_budget_cap"] == "none"


@pytest.mark.parametrize("fault, text", [("oom", "OutOfMemoryError"), ("error", "injected device error")])
def test_a_persistent_device_error_keeps_the_node_alive_and_reports_it(rig_factory, monkeypatch, fault, text):
    monkeypatch.setattr(pipeline_module, "OOM_CAP_HOLD_S", 0.2)
    rig = rig_factory()
    faults = DeviceFaults(monkeypatch, rig.node.engine, fault)
    for _ in range(3):
        rig.publish_set(rig.next_stamp())
        spin_for(rig.executor, 0.1)
    assert rig.spin_until(lambda: rig.node.counters.failed >= 1)
    assert rig.node._worker.is_alive() and rig.allocations == []
    level, message, diag = rig.status(INFERENCE)
    assert level == DiagnosticStatus.ERROR and "inference failed" in message and text in message
    assert int(diag["failed"]) >= 1
    assert rig.wait_log("inference failed for the set stamped")
    faults.fault = None
    time.sleep(0.3)
    failed = rig.node.counters.failed
    assert rig.recover()["budget_requested"] == "12"
    assert rig.node.counters.failed == failed
    assert rig.wait_status(INFERENCE, lambda lv, msg, v: lv == DiagnosticStatus.OK)[0] == DiagnosticStatus.OK


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_out_of_memory_on_the_gpu_even_at_the_minimum_falls_back_to_the_cpu(rig_factory, monkeypatch):
    rig = rig_factory(device="cuda")
    DeviceFaults(monkeypatch, rig.node.engine, "oom_cuda")
    assert rig.node.device.startswith("cuda")
    values = rig.good_set()
    assert values["budget_requested"] == "12" and rig.node.device == "cpu"
    assert rig.node.counters.device_fallbacks == 1 and rig.node.counters.failed == 0
    assert rig.node.engine.fast is not None and rig.node.engine.fast.device.type == "cpu"  # CPU fast path now
    level, message, _ = rig.status(INFERENCE)
    assert level == DiagnosticStatus.ERROR and "moved the model to the CPU" in message
