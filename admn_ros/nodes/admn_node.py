"""admn_node: synchronized camera + depth + microphone in, budgeted ADMN inference, stamped pose/class + allocation out.

Run:  admn_node --ros-args --params-file config/admn_node.yaml -p model:=/path/model.safetensors
Inputs, outputs, parameters and behaviour: docs/nodes.md; message layouts: `admn_ros.nodes.outputs`.

This module is the rclpy adapter around `admn_core.stream.pipeline.FramePipeline`, the one frame pipeline the bag
evaluator runs too (synchronization, set completeness, budget rules, decoding via `admn_ros.msgs.frame_assembly`,
inference, out-of-memory fallback, output checks): subscriptions feed it, a worker thread takes the newest ready set
and publishes the outcome, and a timer publishes /diagnostics (`admn_ros.nodes.node_diagnostics`). Parameters:
`admn_ros.nodes.node_parameters`. Nothing slow runs on the executor thread (a SingleThreadedExecutor: the
MultiThreadedExecutor busy-loops under use_sim_time), so parameter services and the budget stay responsive.
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from pathlib import Path

import torch
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image

from admn_core.preprocess import synthetic_sample
from admn_core.ros_interface import ALLOCATION_TOPIC, CLASSIFICATION_TOPIC, DIAGNOSTICS_TOPIC, POSE_TOPIC
from admn_core.runtime import InferenceEngine
from admn_core.stream.pipeline import TIME_JUMP_BACK_S, FramePipeline, Outcome  # noqa: F401 - the node's rule
from admn_core.stream.throttled_log import ThrottledLog
from admn_ros.msgs.audio import audio_message_class
from admn_ros.msgs.conversions import ns_to_stamp
from admn_ros.msgs.frame_assembly import FrameAssembler, input_topics, synchronizer_factory
from admn_ros.msgs.qos import DIAGNOSTICS_QOS, overridable, sensor_qos, subscribe_budget
from admn_ros.msgs.sync import MESSAGE_FILTERS
from admn_ros.nodes.node_diagnostics import (
    DIAGNOSTICS_PERIOD_S,
    NODE_NAME,
    inference_status,
    input_problems,
    inputs_status,
)
from admn_ros.nodes.node_parameters import (
    AUDIO_MSG_TYPES,
    PARAMETERS,
    PRECISIONS,
    Settings,
    select_device,
    unknown_parameters,
    validate_parameter,
)
from admn_ros.nodes.outputs import (
    allocation_message,
    classification_message,
    classification_message_class,
    pose_message,
)
from admn_ros.nodes.ros_logging import forward_logging_to_node, stop_forwarding

LATENCY_WINDOW = 200
INPUT_QUEUE_DEPTH = {"rgb": 5, "depth": 5, "audio": 50}  # audio chunks are small and frequent: keep more
MESSAGE_TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage}


class ModelLoadError(RuntimeError):
    """The model bundle cannot be loaded; the text says which file and why."""


class StartupInterrupted(RuntimeError):
    """SIGINT/SIGTERM arrived while the node was starting: not an error, the process ends with exit code 0."""


class AdmnNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        # admn_core reports through Python's logging (bundle loading, the fast path): into this node's log and /rosout.
        self._library_log = forward_logging_to_node(self)
        try:
            self._setup()
            if not self.context.ok():
                raise StartupInterrupted("shut down while starting")
        except StartupInterrupted:
            self.destroy_node()
            raise
        except BaseException as error:
            self.destroy_node()  # a half-built node must not linger in the context
            if not self.context.ok():  # a signal shut the context down under the start-up
                raise StartupInterrupted(f"shut down while starting ({type(error).__name__})") from None
            raise

    def _setup(self) -> None:
        self.settings = Settings()
        self.throttled = ThrottledLog(self.get_logger())
        self.pipeline = None
        # Registered before declaring, so initial values from YAML / --ros-args are validated by the same rules.
        self.add_on_set_parameters_callback(self._on_set_parameters)
        for name, (default, descriptor) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        device, self._device_problem = select_device(self.param("device"))
        if self._device_problem:
            self.get_logger().error(self._device_problem)
        if self.param("torch_threads") > 0:
            torch.set_num_threads(self.param("torch_threads"))
        self.engine = self._load_engine(device)
        self.config = self.engine.config
        self._warm_up()

        self._latest_budget: int | None = None
        self._timings: collections.deque = collections.deque(maxlen=LATENCY_WINDOW)
        self._timings_lock = threading.Lock()
        self.started = self._last_diagnostics_tick = time.monotonic()
        self.last_sync_counts: dict[str, tuple[int, int]] = {}
        self.executor_late: tuple[float, float] | None = None  # (when, seconds late) of the latest late timer tick
        topics = input_topics(self.config, self.param("camera_transport"), self.param("depth_transport"))
        self.assembler = FrameAssembler(self.config, self.param("audio_sample_rate"), self.param("audio_channels"),
                                        self.param("max_image_pixels"))
        try:
            self.pipeline = FramePipeline(
                self.engine, self.assembler, self._budget_for,
                synchronizer_factory(self.param("sync_slop"), self.param("sync_queue_size"),
                                     self.param("sync_backend")),
                topics={t.key: t.topic for t in topics}, latest_only=True, audio_wait_s=self.param("audio_wait_s"),
                log=self.throttled)
        except ValueError as error:  # no camera or depth modality
            raise ModelLoadError(str(error)) from None
        self._create_publishers()
        self.subscribed = {t.key: self._subscribe(t) for t in topics}  # key -> (message type, reliability)
        self._budget_subscriptions = subscribe_budget(self, self._on_budget)
        self.parameter_problems = unknown_parameters(self)  # after the subscriptions declare qos_overrides
        for level, text in self.parameter_problems:  # one call site per severity (rclpy's logger requires it)
            if level == "error":
                self.get_logger().error(text)
            else:
                self.get_logger().warning(text)
        self._worker = threading.Thread(target=self._worker_loop, name="admn_inference", daemon=True)
        self._worker.start()
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._on_diagnostics_timer)
        synchronizer = self.pipeline.synchronizer
        self.get_logger().info(
            f"admn_node ready: model {self.config.name} on {self.device} ({self.param('precision')}), budgets "
            f"{self.engine.min_budget}..{self.engine.max_budget} (trained {self.engine.trained_budgets}), "
            f"{len(self.inputs)} inputs ({self.param('input_qos')} QoS), sync "
            f"{synchronizer.implementation if synchronizer else 'single input (no synchronizer)'}, "
            f"warm-up {self.warmup_ms:.0f} ms")

    # ------------------------------------------------------------------------------------------- setup

    def param(self, name: str):
        return self.get_parameter(name).value

    @property
    def counters(self):
        return self.pipeline.counters

    @property
    def inputs(self):
        return self.pipeline.inputs

    @property
    def last_result(self):
        return self.pipeline.last_result

    @property
    def device(self) -> str:
        return str(self.engine.device)

    @property
    def device_problem(self) -> str | None:
        return self.pipeline.device_problem if self.pipeline and self.pipeline.device_problem else self._device_problem

    def _load_engine(self, device: str) -> InferenceEngine:
        from admn_core.bundle import BundleError

        raw = self.param("model")
        if not raw:  # the package's own trained model, as the launch file and admn_bringup default to
            from admn_ros.tools.share import reference_model

            try:
                raw = str(reference_model())
            except FileNotFoundError as error:
                raise ModelLoadError(f"parameter 'model' is empty and the shipped reference model is not installed "
                                     f"({error}): pass the path of a .safetensors bundle, e.g. -p "
                                     "model:=/path/tiny.safetensors") from None
            self.get_logger().info("parameter 'model' is empty: serving the shipped reference model")
        path = Path(raw).expanduser().absolute()
        try:
            path = path.resolve()  # `..` and symlinks resolved: the log names the file actually read
        except (OSError, RuntimeError):
            pass  # a symlink loop: the bundle loader names the problem
        self.get_logger().info(f"loading model bundle {path}")
        try:
            engine = InferenceEngine.from_bundle(path, device, PRECISIONS[self.param("precision")],
                                                 expected_sha256=self.param("expected_sha256") or None,
                                                 fast=self.param("fast_path"))
        except BundleError as error:
            self.get_logger().error(f"cannot load the model bundle {path}: {error}")
            raise ModelLoadError(f"{error} (parameter model={raw!r}, relative paths are resolved against the "
                                 f"working directory {Path.cwd()})") from None
        self.model_path = path
        return engine

    def _warm_up(self) -> None:
        """One inference per trained budget and the full budget on a synthetic sample, before any input is taken:
        the first inferences pay lazy initialisation, which would otherwise make the first real sets stale. A failure
        is logged and reported; the node still starts (real sets get the pipeline's fault handling)."""
        engine = self.engine
        budgets = sorted({b for b in engine.trained_budgets if b >= engine.min_budget} | {engine.max_budget})
        self.warmup_budgets: list[int] = []
        self.warmup_problem: str | None = None
        sample = synthetic_sample(self.config)
        started = time.perf_counter()
        for budget in budgets:
            if not self.context.ok():  # SIGINT/SIGTERM during start-up: stop warming up
                break
            try:
                engine.infer(sample, budget)
            except Exception as error:
                self.warmup_problem = f"warm-up inference at budget {budget} failed: {type(error).__name__}: {error}"
                self.get_logger().warning(self.warmup_problem)
                break
            self.warmup_budgets.append(budget)
        self.warmup_ms = 1e3 * (time.perf_counter() - started)
        self.get_logger().info(f"warm-up: {len(self.warmup_budgets)} inference(s) at budgets {self.warmup_budgets} "
                               f"took {self.warmup_ms:.0f} ms")

    def _create_publishers(self) -> None:
        self.pose_publisher = self.classification_publisher = None
        if self.config.head.task == "localization":
            self.pose_publisher = self.create_publisher(PoseWithCovarianceStamped, POSE_TOPIC, 10)
        else:
            self._classification_type = classification_message_class()
            self.classification_publisher = self.create_publisher(self._classification_type, CLASSIFICATION_TOPIC, 10)
        self.allocation_publisher = self.create_publisher(DiagnosticArray, ALLOCATION_TOPIC, 10)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, DIAGNOSTICS_QOS)

    def _subscribe(self, topic):
        """One subscription feeding the pipeline -> (message type, effective reliability) for the silence hints."""
        if topic.kind == "audio":
            msg_type = audio_message_class(AUDIO_MSG_TYPES[self.param("audio_msg_type")])
            callback = lambda msg, key=topic.key: self.pipeline.add_audio(key, msg)  # noqa: E731
        else:
            msg_type = MESSAGE_TYPES[topic.type_name]
            callback = lambda msg, key=topic.key: self.pipeline.add_frame(key, msg)  # noqa: E731
        qos = sensor_qos(self.param("input_qos"), depth=INPUT_QUEUE_DEPTH[topic.kind])
        subscription = self.create_subscription(msg_type, topic.topic, callback, qos,
                                                qos_overriding_options=overridable())
        self.inputs[topic.key].resolved_topic = subscription.topic_name
        return msg_type, qos.reliability

    # ----------------------------------------------------------------------------------------- parameters

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            problem = validate_parameter(parameter.name, parameter.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        for parameter in parameters:
            if hasattr(self.settings, parameter.name):
                setattr(self.settings, parameter.name, parameter.value)
            if self.pipeline is not None and parameter.name == "sync_slop":
                self._set_slop(parameter.value)
            if self.pipeline is not None and parameter.name == "audio_wait_s":
                self.pipeline.audio_wait_s = parameter.value
        return SetParametersResult(successful=True)

    def _set_slop(self, seconds: float) -> None:
        handle = self.pipeline.synchronizer
        if handle is None:
            return
        if handle.implementation == MESSAGE_FILTERS:
            from rclpy.duration import Duration

            handle.synchronizer.slop = Duration(seconds=seconds)
        else:
            handle.synchronizer.slop = seconds

    # ------------------------------------------------------------------------------------------ callbacks

    def _on_budget(self, msg) -> None:
        value = int(msg.data)
        self.counters.budget_messages += 1
        if value != self._latest_budget:  # throttled: a budget publisher gone wild must not flood the log
            topic = self._budget_subscriptions[0].topic_name
            self.throttled("info", "budget_change", f"{topic}: {self._latest_budget} -> {value}")
        self._latest_budget = value

    def current_budget(self) -> tuple[int, str]:
        """(budget, origin): budget_override, else the latest /compute_budget, else default_budget."""
        if self.settings.budget_override >= 0:
            return self.settings.budget_override, "override"
        if self._latest_budget is not None:
            return self._latest_budget, "topic"
        return self.settings.default_budget, "default"

    def _budget_for(self, _stamp_ns: int) -> tuple[int, str]:
        return self.current_budget()

    # ---------------------------------------------------------------------------------------------- worker

    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            pending = self.pipeline.wait_ready(0.1)
            if pending is None:
                continue
            outcome = self.pipeline.process(pending)
            if not outcome.ok:
                continue
            try:
                self._publish(outcome, pending.formed)
            except Exception as error:  # the worker must survive anything
                if not self.context.ok():  # shutting down: publishers are gone, nothing failed
                    return
                self.counters.failed += 1
                self.throttled("error", "publish", f"publishing the set stamped {outcome.stamp_ns / 1e9:.3f} s "
                                                   f"failed: {type(error).__name__}: {error}")

    def _publish(self, outcome: Outcome, formed: float) -> None:
        started = time.perf_counter()
        stamp, result = ns_to_stamp(outcome.stamp_ns), outcome.result
        if self.pose_publisher is not None:
            self.pose_publisher.publish(pose_message(stamp, self.settings.frame_id, result.position_m,
                                                     result.covariance_m2))
        else:
            self.classification_publisher.publish(classification_message(
                self._classification_type, stamp, self.settings.frame_id, result.class_probabilities))
        self.allocation_publisher.publish(allocation_message(stamp, self.config.name, result, outcome.budget_origin))
        outcome.timings.publish_ms = 1e3 * (time.perf_counter() - started)
        outcome.timings.end_to_end_ms = 1e3 * (time.monotonic() - formed)
        with self._timings_lock:
            self._timings.append(outcome.timings)

    def recent_timings(self) -> list:
        with self._timings_lock:
            return list(self._timings)

    # ---------------------------------------------------------------------------------------------- health

    def _on_diagnostics_timer(self) -> None:
        now = time.monotonic()
        late = now - self._last_diagnostics_tick - DIAGNOSTICS_PERIOD_S
        self._last_diagnostics_tick = now
        if late > DIAGNOSTICS_PERIOD_S:  # the executor could not run this timer: the node itself was busy
            self.executor_late = (now, late)
        array = DiagnosticArray(status=[inference_status(self), inputs_status(self, now, input_problems(self, now))])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_publisher.publish(array)

    # -------------------------------------------------------------------------------------------- shutdown

    def destroy_node(self):
        self._stop.set()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=5.0)
        stop_forwarding(self._library_log)
        return super().destroy_node()


def main(args: list[str] | None = None) -> int:
    from rclpy.exceptions import InvalidParameterValueException, ParameterException

    from admn_ros.nodes.shutdown import spin_until_shutdown

    # A signal during start-up ends the warm-up with StartupInterrupted on a shut-down context: a clean exit there.
    return spin_until_shutdown(AdmnNode, "admn_node",
                               (ModelLoadError, ParameterException, InvalidParameterValueException, ValueError,
                                ImportError),
                               args)


if __name__ == "__main__":
    sys.exit(main())
