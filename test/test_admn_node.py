"""admn_node over real rclpy loopback (Fast DDS): a random-weights micro bundle, a publisher node, the real node.

Both nodes share one SingleThreadedExecutor spun by the test; the node's inference runs on its own worker thread,
exactly as in production. Messages travel through DDS (rclpy has no intra-process shortcut).
"""

import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Int32

from admn_core.bench import random_bundle
from admn_core.bundle import save_bundle
from admn_ros.msgs.audio import numpy_to_audio_image
from admn_ros.msgs.conversions import ns_to_stamp, numpy_to_compressed, numpy_to_image
from admn_ros.msgs.qos import BUDGET_PUBLISHER_QOS, BUDGET_TOPIC
from admn_ros.nodes.admn_node import AdmnNode, ModelLoadError
from admn_ros.nodes.node_diagnostics import inference_status
from admn_ros.nodes.outputs import UNOBSERVED_VARIANCE, parse_allocation

from model_fixtures import micro_config
from ros_fixtures import ros_context, spin_for, spin_until, unique_name  # noqa: F401 - pytest fixtures

VIEWS = ("node_1", "node_2")
HEIGHT, WIDTH = 48, 64
AUDIO_CHUNK = 1600  # 0.1 s at 16 kHz: longer than the micro model's 1088-sample window


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "micro.safetensors"
    return str(save_bundle(path, random_bundle(micro_config(views=VIEWS), budgets=[6, 8], seed=1)))


class Rig:
    """The node under test plus a test node that publishes its inputs and records its outputs."""

    def __init__(self, context, bundle_path, **parameters):
        from rclpy.executors import SingleThreadedExecutor

        self.namespace = "/" + unique_name("rig")
        overrides = [Parameter("model", value=bundle_path)] + [Parameter(k, value=v) for k, v in parameters.items()]
        self.node = AdmnNode(context=context, namespace=self.namespace, parameter_overrides=overrides)
        self.peer = Node("rig_peer", context=context, namespace=self.namespace)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.compressed = parameters.get("camera_transport") == "compressed"
        camera_type, suffix = (CompressedImage, "/compressed") if self.compressed else (Image, "")
        self.cameras = {v: self.peer.create_publisher(camera_type, f"{v}/camera/image_raw{suffix}", 10) for v in VIEWS}
        self.depths = {v: self.peer.create_publisher(Image, f"{v}/depth/image_raw", 10) for v in VIEWS}
        self.mics = {v: self.peer.create_publisher(Image, f"{v}/mic/audio", 10) for v in VIEWS}
        self.budget = self.peer.create_publisher(Int32, BUDGET_TOPIC, 10)  # like `ros2 topic pub` (volatile)
        self.poses, self.allocations, self.diagnostics = [], [], []
        self.peer.create_subscription(PoseWithCovarianceStamped, "admn_node/pose", self.poses.append, 10)
        self.peer.create_subscription(DiagnosticArray, "admn_node/allocation", self.allocations.append, 10)
        self.peer.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.rng = np.random.default_rng(0)
        publishers = [*self.cameras.values(), *self.depths.values(), *self.mics.values(), self.budget]
        assert spin_until(self.executor, lambda: all(p.get_subscription_count() >= 1 for p in publishers), 10.0), \
            "the node's subscriptions were not discovered"
        assert spin_until(self.executor, lambda: self.peer.count_publishers(f"{self.namespace}/admn_node/pose") >= 1)

    def spin_until(self, predicate, timeout_s=10.0):
        return spin_until(self.executor, predicate, timeout_s)

    def camera(self, stamp_s):
        pixels = self.rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        if self.compressed:
            return numpy_to_compressed(pixels, "jpeg", stamp=ns_to_stamp(round(stamp_s * 1e9)))
        return numpy_to_image(pixels, "rgb8", stamp=ns_to_stamp(round(stamp_s * 1e9)))

    def depth(self, stamp_s):
        return numpy_to_image(self.rng.integers(500, 6000, (HEIGHT, WIDTH), dtype=np.uint16), "16UC1",
                              stamp=ns_to_stamp(round(stamp_s * 1e9)))

    def publish_set(self, stamp_s, camera=None, depth=None, audio=True):
        """Audio ending at the frame stamp, then camera and depth of every view, all stamped `stamp_s`."""
        stamp = ns_to_stamp(round(stamp_s * 1e9))
        if audio:  # a microphone streams continuously: its chunks are in the buffer before the frame arrives
            counts = [self.node.inputs[(view, "mic")].received for view in VIEWS]
            for view in VIEWS:
                chunk = (0.1 * self.rng.standard_normal(AUDIO_CHUNK)).astype(np.float32)
                self.mics[view].publish(numpy_to_audio_image(chunk, stamp=stamp))
            assert self.spin_until(lambda: all(self.node.inputs[(view, "mic")].received > count
                                               for view, count in zip(VIEWS, counts)), 5.0)
        for view in VIEWS:
            self.cameras[view].publish(camera(stamp_s) if camera and view == VIEWS[0] else self.camera(stamp_s))
            self.depths[view].publish(depth(stamp_s) if depth and view == VIEWS[0] else self.depth(stamp_s))

    def next_allocation(self, stamp_s, timeout_s=10.0):
        wanted = ns_to_stamp(round(stamp_s * 1e9))
        found = self.spin_until(lambda: any(a.header.stamp == wanted for a in self.allocations), timeout_s)
        assert found, f"no allocation stamped {stamp_s}; counters {self.node.counters}"
        return next(a for a in self.allocations if a.header.stamp == wanted)

    def latest_status(self, name):
        self.diagnostics.clear()
        assert self.spin_until(lambda: any(s.name == name for d in self.diagnostics for s in d.status), 5.0)
        return next(s for d in self.diagnostics for s in d.status if s.name == name)

    def close(self):
        self.node.destroy_node()
        self.peer.destroy_node()
        self.executor.shutdown()


@pytest.fixture
def rig_factory(ros_context, bundle_path):  # noqa: F811 - fixture
    rigs = []

    def make(**parameters):
        rigs.append(Rig(ros_context, bundle_path, **parameters))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


def test_synchronized_frames_give_a_stamped_pose_and_allocation(rig_factory):
    rig = rig_factory(frame_id="map")
    rig.publish_set(100.25)
    allocation = rig.next_allocation(100.25)
    assert rig.spin_until(lambda: rig.poses)
    pose = rig.poses[-1]
    assert pose.header.stamp == ns_to_stamp(100_250_000_000) and pose.header.frame_id == "map"
    covariance = np.array(pose.pose.covariance).reshape(6, 6)
    np.testing.assert_allclose(covariance[:2, :2], rig.node.last_result.covariance_m2, rtol=1e-6)
    assert covariance[2, 2] == covariance[5, 5] == UNOBSERVED_VARIANCE and covariance[0, 2] == 0
    assert (pose.pose.pose.position.x, pose.pose.pose.position.y) == pytest.approx(
        tuple(rig.node.last_result.position_m))

    values = parse_allocation(allocation)
    assert list(values)[:6] == ["budget_requested", "budget_used", "budget_origin", "source", "flops",
                                "inference_ms"]
    assert values["budget_requested"] == "12" and values["budget_origin"] == "default"
    assert int(values["budget_used"]) <= 12 and values["source"] == "controller:budget_8"
    blocks = {k.removeprefix("active_blocks."): v for k, v in values.items() if k.startswith("active_blocks.")}
    assert list(blocks) == ["rgb", "depth", "mic"]
    assert all(v.split(",")[0] == "0" for v in blocks.values())
    assert sum(len(v.split(",")) for v in blocks.values()) == int(values["budget_used"])
    assert rig.node.counters.sets_processed == 1


def test_warm_up_runs_every_trained_budget_before_inputs_and_is_reported(rig_factory):
    rig = rig_factory()
    node = rig.node
    # Every trained budget and the full budget ran once on a synthetic sample while the node was built.
    assert node.warmup_budgets == sorted({6, 8, node.engine.max_budget}) and node.warmup_problem is None
    assert node.warmup_ms > 0 and node.last_result is None and node.counters.sets_processed == 0
    values = {kv.key: kv.value for kv in rig.latest_status("admn_node: inference").values}
    assert values["warmup_budgets"] == ",".join(map(str, node.warmup_budgets))
    assert float(values["warmup_ms"]) == pytest.approx(node.warmup_ms, abs=0.1) and values["warmup_problem"] == ""
    rig.publish_set(7.5)  # the first real set is answered
    rig.next_allocation(7.5)
    assert node.counters.sets_processed == 1


@pytest.mark.parametrize("onnx", ["0", "1"], ids=["pytorch_stages", "shipped_onnx_stages"])
def test_the_fast_path_is_the_default_and_answers_as_the_eager_model(rig_factory, monkeypatch, onnx):
    # The suite runs the CPU fast path's stages in PyTorch (test/conftest.py); "1" is what a robot runs by default.
    monkeypatch.setenv("ADMN_FASTPATH_ONNX", onnx)
    fast, eager = rig_factory(), rig_factory(fast_path=False)
    assert (fast.node.engine.fast.counters["onnx_runs"] > 0) == (onnx == "1")  # the warm-up ran its stages
    for rig in (fast, eager):  # each rig's generator is seeded alike: both nodes get the same set
        rig.publish_set(3.0)
        rig.next_allocation(3.0)
    assert fast.node.engine.fast is not None and eager.node.engine.fast is None
    assert fast.node.engine.fast.counters["block_runs"] > 0  # the fast path served (warm-up and the set)
    for rig, path in ((fast, "fast"), (eager, "eager")):  # both publish on /diagnostics: ask each node
        values = {kv.key: kv.value for kv in inference_status(rig.node).values}
        assert values["inference_path"] == path
    fast_result, eager_result = fast.node.last_result, eager.node.last_result
    assert fast_result.allocation.active_blocks() == eager_result.allocation.active_blocks()
    np.testing.assert_allclose(fast_result.position_m, eager_result.position_m, atol=1e-4)
    np.testing.assert_allclose(fast_result.covariance_m2, eager_result.covariance_m2, rtol=1e-4, atol=1e-8)


def test_compressed_camera_transport(rig_factory):
    rig = rig_factory(camera_transport="compressed")
    assert rig.node.inputs[("node_1", "rgb")].resolved_topic.endswith("/node_1/camera/image_raw/compressed")
    rig.publish_set(20.0)
    assert parse_allocation(rig.next_allocation(20.0))["budget_requested"] == "12"


def test_a_budget_message_changes_the_allocation_on_the_very_next_inference(rig_factory):
    rig = rig_factory()
    rig.publish_set(10.0)
    assert parse_allocation(rig.next_allocation(10.0))["budget_requested"] == "12"
    rig.budget.publish(Int32(data=6))
    assert rig.spin_until(lambda: rig.node.current_budget() == (6, "topic"))
    rig.publish_set(10.1)
    values = parse_allocation(rig.next_allocation(10.1))
    assert (values["budget_requested"], values["budget_origin"], values["source"]) == ("6", "topic",
                                                                                      "controller:budget_6")
    assert int(values["budget_used"]) <= 6
    rig.node.set_parameters([Parameter("budget_override", value=36)])  # override beats the topic
    rig.publish_set(10.2)
    values = parse_allocation(rig.next_allocation(10.2))
    assert (values["budget_requested"], values["budget_origin"], values["source"]) == ("36", "override", "full")


def test_parameter_services_answer_promptly_during_a_slow_inference(rig_factory):
    from rclpy.parameter_client import AsyncParameterClient

    rig = rig_factory()
    infer = rig.node.engine.infer

    def slow_infer(sample, budget):  # a slow model: the worker is busy for 3 s
        time.sleep(3.0)
        return infer(sample, budget)

    rig.node.engine.infer = slow_infer
    client = AsyncParameterClient(rig.peer, f"{rig.namespace}/admn_node")
    assert client.wait_for_services(timeout_sec=10.0)
    rig.publish_set(5.0)
    assert rig.spin_until(lambda: rig.node.counters.sets_received == 1)
    spin_for(rig.executor, 0.2)  # the worker is now inside the 3 s inference
    assert rig.node.counters.sets_processed == 0

    started = time.monotonic()
    future = client.set_parameters([Parameter("budget_override", value=8), Parameter("frame_id", value="")])
    assert rig.spin_until(future.done, 2.0)
    results = future.result().results
    answered = time.monotonic() - started
    assert answered < 1.0, f"parameter service took {answered:.2f} s during inference"
    assert results[0].successful and rig.node.current_budget() == (8, "override")
    assert not results[1].successful and "frame_id must not be empty" in results[1].reason
    rejected = client.set_parameters([Parameter("sync_slop", value=9.0), Parameter("device", value="cuda")])
    assert rig.spin_until(rejected.done, 2.0)
    assert [r.successful for r in rejected.result().results] == [False, False]
    assert rig.node.counters.sets_processed == 0, "the slow inference should still be running"


def _image(encoding, array, stamp_s):
    return numpy_to_image(array, encoding, stamp=ns_to_stamp(round(stamp_s * 1e9)))


def test_bad_messages_are_counted_and_the_node_recovers(rig_factory):
    rig = rig_factory()
    node = rig.node
    camera_1 = node.inputs[("node_1", "rgb")]
    depth_1 = node.inputs[("node_1", "depth")]
    mic_1 = node.inputs[("node_1", "mic")]

    # Wrong encoding: a depth image on the camera topic.
    rig.publish_set(1.0, camera=lambda s: _image("16UC1", np.ones((HEIGHT, WIDTH), np.uint16), s))
    assert rig.spin_until(lambda: camera_1.errors == 1)
    assert "not an 8-bit colour" in camera_1.last_error

    # Size mismatch: data shorter than step * height.
    def truncated(stamp_s):
        msg = rig.depth(stamp_s)
        msg.data = bytes(msg.data)[:-100]
        return msg

    rig.publish_set(2.0, depth=truncated)
    assert rig.spin_until(lambda: depth_1.errors == 1)
    assert "expected step*height" in depth_1.last_error
    assert node.counters.dropped_bad_input == 2 and node.counters.sets_processed == 0

    # All-NaN depth: warned and counted, still inferred (no return everywhere).
    rig.publish_set(3.0, depth=lambda s: _image("32FC1", np.full((HEIGHT, WIDTH), np.nan, np.float32), s))
    rig.next_allocation(3.0)
    assert node.counters.depth_frames_all_invalid == 1 and "no valid pixel" in depth_1.last_error

    # Empty audio chunk: rejected on arrival with the topic named.
    empty = Image(encoding="32FC1", height=1, width=0, step=0)
    empty.header.stamp = ns_to_stamp(3_500_000_000)
    rig.mics["node_1"].publish(empty)
    assert rig.spin_until(lambda: mic_1.errors == 1)
    assert "empty" in mic_1.last_error

    # Out-of-order stamps: a camera and depth frame older than the last processed set.
    rig.cameras["node_1"].publish(rig.camera(2.9))
    rig.depths["node_1"].publish(rig.depth(2.9))
    assert rig.spin_until(lambda: "out-of-order" in camera_1.last_error and camera_1.errors == 2, 5.0)

    status = rig.latest_status("admn_node: inputs")
    values = {kv.key: kv.value for kv in status.values}
    assert values[f"{camera_1.resolved_topic}.errors"] == "2" and values[f"{mic_1.resolved_topic}.errors"] == "1"
    assert values[f"{depth_1.resolved_topic}.errors"] == "3"  # truncated, all-NaN, out-of-order

    # Good input again: processed.
    rig.publish_set(4.0)
    values = parse_allocation(rig.next_allocation(4.0))
    assert values["budget_requested"] == "12"
    assert node.counters.sets_processed == 2 and node.counters.failed == 0


def test_a_budget_below_the_minimum_runs_nothing_and_warns(rig_factory):
    rig = rig_factory(budget_override=2)
    rig.publish_set(7.0)
    assert rig.spin_until(lambda: rig.node.counters.skipped_budget == 1)
    spin_for(rig.executor, 0.3)
    assert rig.poses == [] and rig.allocations == []
    status = rig.latest_status("admn_node: inference")
    assert status.level == DiagnosticStatus.WARN and "below the model's minimum 3" in status.message


def test_a_late_node_learns_the_current_budget_from_a_transient_local_publisher(ros_context, bundle_path):  # noqa: F811
    from rclpy.executors import SingleThreadedExecutor

    namespace = "/" + unique_name("late")  # the budget topic is relative: the monitor of the same robot
    thermal = Node("fake_thermal_monitor", context=ros_context, namespace=namespace)
    publisher = thermal.create_publisher(Int32, BUDGET_TOPIC, BUDGET_PUBLISHER_QOS)
    publisher.publish(Int32(data=8))
    node = AdmnNode(context=ros_context, namespace=namespace,
                    parameter_overrides=[Parameter("model", value=bundle_path)])
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(thermal)
    executor.add_node(node)
    try:
        assert spin_until(executor, lambda: node.current_budget() == (8, "topic"), 10.0)
    finally:
        node.destroy_node()
        thermal.destroy_node()
        executor.shutdown()


def test_silent_inputs_are_reported_with_the_likely_qos_fix(rig_factory, ros_context):  # noqa: F811
    rig = rig_factory(input_qos="reliable", no_input_warning_s=0.5)
    # The peer's reliable publishers exist, so replace one camera with a best-effort publisher (a camera driver).
    rig.peer.destroy_publisher(rig.cameras["node_2"])
    best_effort = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    rig.peer.create_publisher(Image, "node_2/camera/image_raw", best_effort)
    spin_for(rig.executor, 1.0)
    status = rig.latest_status("admn_node: inputs")
    assert status.level == DiagnosticStatus.WARN
    camera_2 = rig.node.inputs[("node_2", "rgb")].resolved_topic
    assert f"no message on {camera_2}" in status.message and "QoS mismatch" in status.message


def test_missing_model_and_bad_parameters_fail_with_a_clear_reason(ros_context, tmp_path, bundle_path,  # noqa: F811
                                                                    monkeypatch):
    from rclpy.exceptions import InvalidParameterValueException

    from admn_ros.tools import share

    missing = str(tmp_path / "missing.safetensors")
    with pytest.raises(ModelLoadError, match=r"bundle not found: .*missing\.safetensors"):
        AdmnNode(context=ros_context, parameter_overrides=[Parameter("model", value=missing)])
    monkeypatch.setattr(share, "share_roots", lambda: [tmp_path])  # an install without the reference model
    with pytest.raises(ModelLoadError, match="parameter 'model' is empty and the shipped reference model is not "
                                             "installed"):
        AdmnNode(context=ros_context)
    with pytest.raises(InvalidParameterValueException, match="precision must be one of"):
        AdmnNode(context=ros_context, parameter_overrides=[Parameter("model", value=bundle_path),
                                                           Parameter("precision", value="fp8")])


def test_an_empty_model_parameter_serves_the_installed_reference_model(ros_context, tmp_path, bundle_path,  # noqa: F811
                                                                       monkeypatch):
    import shutil

    from admn_ros.tools import share

    installed = tmp_path / "share" / "models" / share.REFERENCE_MODEL
    installed.parent.mkdir(parents=True)
    shutil.copy(bundle_path, installed)
    monkeypatch.setattr(share, "share_roots", lambda: [tmp_path / "share"])
    node = AdmnNode(context=ros_context)
    try:
        assert node.model_path == installed.resolve() and node.config.name == "micro"
    finally:
        node.destroy_node()


def test_cuda_requested_without_cuda_falls_back_to_the_cpu_with_an_error(ros_context, bundle_path):  # noqa: F811
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    node = AdmnNode(context=ros_context, parameter_overrides=[Parameter("model", value=bundle_path),
                                                              Parameter("device", value="cuda:0")])
    try:
        assert node.device == "cpu" and "CUDA is not available" in node.device_problem
        assert inference_status(node).level == DiagnosticStatus.ERROR
    finally:
        node.destroy_node()


def test_library_log_records_reach_the_node_log_while_it_lives(ros_context, bundle_path, capfd):  # noqa: F811
    import logging

    library = logging.getLogger("admn_core.probe")
    node = AdmnNode(context=ros_context, parameter_overrides=[Parameter("model", value=bundle_path)])
    try:
        library.info("probe while the node lives")
        assert rclpy_log_line(capfd, "probe while the node lives")
    finally:
        node.destroy_node()
    library.info("probe after the node is gone")
    assert not rclpy_log_line(capfd, "probe after the node is gone")


def rclpy_log_line(capfd, text: str) -> bool:
    """rcutils writes the node's log to fd 2 as `[INFO] [<time>] [admn_node]: <message>`."""
    deadline = time.monotonic() + 2.0
    err = ""
    while time.monotonic() < deadline:
        err += capfd.readouterr().err
        if any(text in line and "[admn_node]" in line for line in err.splitlines()):
            return True
        time.sleep(0.05)
    return False
