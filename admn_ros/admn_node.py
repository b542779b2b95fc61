"""admn_node: synchronized camera + depth + microphone in, budgeted ADMN inference, stamped pose/class + allocation out.

Run:  admn_node --ros-args --params-file config/admn_node.yaml -p model:=/path/model.safetensors
Output message layouts: see `admn_ros.outputs` (also in the README).

Inputs (relative names, so a namespace or remapping moves them), one set per view of the bundle's config:
    <view>/camera/image_raw             sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8)   camera_transport raw
    <view>/camera/image_raw/compressed  sensor_msgs/CompressedImage (jpeg/png)              camera_transport compressed
    <view>/depth/image_raw              sensor_msgs/Image 16UC1/mono16 (mm) or 32FC1 (m)
    <view>/mic/audio                    audio_msg_type: image_carrier (sensor_msgs/Image 32FC1, see admn_ros.audio),
                                        AudioStamped or AudioDataStamped (audio_common_msgs, imported lazily)
    compute_budget                      std_msgs/Int32, latest-value state (admn_ros.qos.subscribe_budget); relative,
                                        so /robot1/compute_budget under the namespace robot1
Every subscription accepts rclpy's QoS override parameters, e.g. -p
`qos_overrides./robot1/node_1/camera/image_raw.subscription.reliability:=reliable` (history, depth, reliability; the
budget's two subscriptions: `qos_overrides.<budget topic>.subscription[_latched].*`).

Design choices (the why):
* Camera and depth of every view go through one approximate-time synchronizer (message_filters when importable,
  else admn_ros.sync). Audio does NOT: microphones publish chunks (e.g. 512 samples = 32 ms) at a rate unrelated to
  the frames, and the model needs a window (tiny: 0.655 s) far longer than one chunk, so a chunk-level match would be
  meaningless. Each view's chunks go into an AudioRingBuffer; at inference the window ending at the newest chunk
  stamped <= the set's stamp + sync_slop is taken. Gaps are zero-filled; no audio at all gives a silent window and a
  diagnostics warning (inference still runs: ADMN is built to spend its budget away from a dead modality).
* The output stamp is the stamp of the first synchronized input (the first view's camera), i.e. exactly the stamp of
  a real input message, so bag evaluation can join on it.
* Decoding and audio windows are `admn_ros.frame_assembly.FrameAssembler` (also used by the bag evaluator, so
  offline evaluation decodes exactly as the node does); the node adds counters, throttled logs and diagnostics.
* Warm-up: after loading the bundle and before subscribing, one inference per trained budget and the full budget runs
  on a synthetic sample (the first inferences pay 2-4 s of lazy initialisation, which would otherwise make the first
  real sets stale); its duration is logged and reported in diagnostics (warmup_ms, warmup_budgets, warmup_problem).
* Inference runs on a worker thread fed through a latest-only slot: the synchronizer callback only stores the newest
  set; a set not yet taken when a newer one arrives is dropped and counted (dropped_stale). Raw messages are decoded on
  the worker, so dropped sets cost nothing. Executor: SingleThreadedExecutor, because the MultiThreadedExecutor
  busy-loops under use_sim_time (erratic delivery, and it keeps a core busy while waiting).
  Parameter services, the budget callback and the subscriptions stay responsive because nothing slow runs on the
  executor thread.
* Budget: budget_override (>= 0) wins, else the latest /compute_budget, else default_budget. The engine selects the
  controller (largest trained budget <= request, or naive split, or full); below the model's minimum nothing runs,
  nothing is published and diagnostics WARN with the reason (never rounded up).
* Depth: NaN/Inf/<=0 pixels are "no return" (REP-117) and go to the engine as such. A frame with no valid pixel at
  all is counted and warned about but still used: a blind depth camera is exactly the degraded input ADMN is for.
* Bad input (undecodable or wrongly encoded images, wrong sizes, empty or malformed audio, out-of-order stamps) is
  logged (throttled, with the topic and the reason), counted in diagnostics, and skipped; the next good set is
  processed. A topic that has produced nothing for no_input_warning_s gets a warning naming the topic, what
  publishes there (type, reliability) and the likely fix (QoS, transport, Fast DDS profile).
* No LifecycleNode. What lifecycle buys is freeing the model on deactivate (yolo_ros: 628 -> 338 MB VRAM) and
  ordered bring-up by a lifecycle manager. Here a budget below the minimum already idles the compute, the tiny model
  is a few MB, the pip-only install has no lifecycle manager or `ros2 lifecycle` CLI, and self-triggered
  configure/activate (as yolo_ros does) would add states without adding behaviour. Revisit for large models sharing a
  Jetson's memory.

* Faults (robustness): a device error during inference never kills the worker. Out of memory (torch.OutOfMemoryError
  or a RuntimeError saying "out of memory") is retried at once at a lower budget (halfway to the minimum, repeatedly)
  and the budget stays capped there for OOM_CAP_HOLD_S before the full request is tried again; when even the minimum
  does not fit on a GPU the engine moves to the CPU for good. Each step is logged and shown as a diagnostics ERROR;
  any other exception counts as `failed`, is logged, and shows as ERROR until the next good inference. A model output
  that is not finite is never published (`dropped_non_finite_output`).
* Configuration mistakes: parameters given in a params file or with -p that the node does not declare (a typo such
  as `sync_slopp`) would be ignored silently by rclpy; the node logs them with the closest valid name and reports
  them in diagnostics (ERROR when a close match exists, i.e. almost certainly a typo; WARN otherwise, e.g. a shared
  `/**` params file). A microphone whose chunk stamps advance at a different rate than audio_sample_rate (a driver
  set to 44.1 or 48 kHz) is reported on the inputs status and in the log.
* Budget floods (compute_budget at kHz rates) cost one integer store per callback, and the budget subscriptions'
  CoalescingCallbackGroup caps the callbacks (admn_ros.qos); the change log is throttled. A silence warning while the
  executor itself was late (its diagnostics timer fired more than a period late) says so instead of blaming the
  transport.
* Hostile frames: a compressed frame whose header declares more than max_image_pixels is rejected before decoding
  (no allocation) and that view's modality is treated as missing for the set (admn_ros.frame_assembly); counted in
  frames_rejected_oversize and named on the inputs status. Audio chunks that are non-finite or beyond the plausible
  range (admn_ros.audio.MAX_ABS_SAMPLE) are rejected, so that microphone's window is silent (missing) there.
* SIGINT/SIGTERM: rclpy's handlers shut the context down; the node exits 0 without a traceback, also during start-up
  (the warm-up stops early and the half-built node is destroyed).

Test-only: `debug_inference_delay_s` sleeps on the worker before each inference, to emulate a slow model (the
"parameters stay responsive during inference" test). `debug_fault_injection` raises device errors inside the
inference call, exactly where the engine would raise them: '' (off), 'oom' (every inference, any device),
'oom_cuda' (only while the engine is on a CUDA device), 'oom_above:<budget>' (any budget above this), 'error' (a
plain RuntimeError). Keep both off in production.
"""

from __future__ import annotations

import collections
import difflib
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from admn_core.preprocess import InputError, synthetic_sample
from admn_core.runtime import InferenceEngine
from admn_ros.audio import audio_message_class
from admn_ros.conversions import DEFAULT_MAX_IMAGE_PIXELS, ns_to_stamp, stamp_to_ns
from admn_ros.frame_assembly import TIME_JUMP_BACK_S, FrameAssembler, FrameError
from admn_ros.outputs import allocation_message, classification_message, classification_message_class, pose_message
from admn_ros.qos import DIAGNOSTICS_QOS, overridable, sensor_qos, subscribe_budget
from admn_ros.sync import MESSAGE_FILTERS, InputStats, Subscriber, SyncStats, make_synchronizer

NODE_NAME = "admn_node"
DEVICE_PATTERN = re.compile(r"^(cpu|cuda|cuda:\d+)$")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
INPUT_QOS_CHOICES = ("sensor_data", "reliable")
CAMERA_TRANSPORTS = ("raw", "compressed")
DEPTH_TRANSPORTS = ("raw", "compressedDepth")
AUDIO_MSG_TYPES = {"image_carrier": "Image", "AudioStamped": "AudioStamped", "AudioDataStamped": "AudioDataStamped"}
DIAGNOSTICS_PERIOD_S = 1.0
LOG_THROTTLE_S = 5.0
LATENCY_WINDOW = 200
INPUT_QUEUE_DEPTH = {"rgb": 5, "depth": 5, "audio": 50}  # audio chunks are small and frequent: keep more
OOM_CAP_HOLD_S = 30.0  # after an out-of-memory error the budget stays capped this long, then the request is retried
FAULT_PATTERN = re.compile(r"^(|oom|oom_cuda|error|oom_above:\d+)$")
# Parameters every rclpy node may receive besides ours (not typos).
STANDARD_PARAMETERS = {"use_sim_time", "start_type_description_service"}


class ModelLoadError(RuntimeError):
    """The model bundle cannot be loaded; the text says which file and why."""


class StartupInterrupted(RuntimeError):
    """SIGINT/SIGTERM arrived while the node was starting: not an error, the process ends with exit code 0."""


@dataclass
class InputSpec:
    key: tuple[str, str]  # (view, modality)
    kind: str  # rgb | depth | audio
    msg_type: type
    topic: str  # relative name as subscribed
    resolved_topic: str = ""
    reliability: ReliabilityPolicy = ReliabilityPolicy.BEST_EFFORT  # effective, after qos_overrides
    received: int = 0
    last_arrival: float | None = None
    errors: int = 0
    last_error: str = ""


class BadInput(ValueError):
    def __init__(self, entry: InputSpec, reason: str):
        super().__init__(f"{entry.resolved_topic}: {reason}")
        self.entry, self.reason = entry, reason



@dataclass
class SyncedSet:
    stamp_ns: int
    messages: dict  # (view, modality) -> raw message
    arrived: float  # time.monotonic() when the set completed


@dataclass
class Timings:
    decode_ms: float = 0.0
    audio_ms: float = 0.0
    preprocess_ms: float = 0.0  # engine preprocessing (resize, normalise, spectrogram)
    model_ms: float = 0.0  # controller + backbones + fusion + head
    publish_ms: float = 0.0
    end_to_end_ms: float = 0.0  # set completed -> outputs published (includes waiting for the worker)


@dataclass
class Counters:
    sets_received: int = 0
    sets_processed: int = 0
    dropped_stale: int = 0
    dropped_out_of_order: int = 0
    dropped_bad_input: int = 0
    skipped_budget: int = 0
    failed: int = 0
    time_jumps: int = 0
    audio_windows_missing: int = 0
    audio_samples_zero_filled: int = 0
    depth_frames_all_invalid: int = 0
    frames_rejected_oversize: int = 0
    dropped_non_finite_output: int = 0
    budget_messages: int = 0
    oom_errors: int = 0
    oom_retries: int = 0
    device_fallbacks: int = 0


@dataclass
class Settings:
    """Runtime-tunable parameter values, updated by the parameter callback (read by the worker)."""

    frame_id: str = "world"
    sync_slop: float = 0.05
    budget_override: int = -1
    default_budget: int = 12
    no_input_warning_s: float = 5.0
    debug_inference_delay_s: float = 0.0
    debug_fault_injection: str = ""


class LatestSlot:
    """A one-item mailbox: put() replaces an untaken item (returns True when it did), take() waits for one."""

    def __init__(self):
        self._item = None
        self._condition = threading.Condition()

    def put(self, item) -> bool:
        with self._condition:
            replaced = self._item is not None
            self._item = item
            self._condition.notify()
            return replaced

    def take(self, timeout: float | None = None):
        with self._condition:
            if self._item is None:
                self._condition.wait(timeout)
            item, self._item = self._item, None
            return item

    def __len__(self) -> int:
        return 0 if self._item is None else 1


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


class ThrottledLog:
    """Logs each key at most once per period and reports how many were suppressed; thread-safe."""

    def __init__(self, logger, period_s: float = LOG_THROTTLE_S):
        self._logger, self._period = logger, period_s
        self._last: dict[str, float] = {}
        self._suppressed: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def __call__(self, level: str, key: str, text: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._period:
                self._suppressed[key] += 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        text += f" ({suppressed} similar message(s) suppressed)" if suppressed else ""
        # One call site per severity: rclpy's logger refuses a severity change at the same call site.
        if level == "error":
            self._logger.error(text)
        elif level == "warning":
            self._logger.warning(text)
        else:
            self._logger.info(text)


def select_device(requested: str) -> tuple[str, str | None]:
    """-> (device to use, problem or None). CUDA requested but unusable falls back to the CPU with a problem."""
    if requested == "cpu":
        return "cpu", None
    if not torch.cuda.is_available():
        return "cpu", (f"device {requested!r} requested but CUDA is not available (torch {torch.__version__}, "
                       f"CUDA build {torch.version.cuda or 'none'}); running on the CPU")
    index = int(requested.split(":")[1]) if ":" in requested else 0
    if index >= torch.cuda.device_count():
        return "cpu", (f"device {requested!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist; "
                       "running on the CPU")
    return f"cuda:{index}", None


def percentiles(values, quantiles=(50, 90)) -> list[float]:
    if not values:
        return [float("nan")] * len(quantiles)
    return [float(v) for v in np.percentile(np.asarray(values, dtype=np.float64), quantiles)]


def _finite_result(result) -> bool:
    arrays = (result.position_m, result.covariance_m2, result.class_probabilities)
    return all(bool(np.all(np.isfinite(a))) for a in arrays if a is not None)


def _descriptor(description: str, read_only: bool = False, float_range=None, int_range=None) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if float_range:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(float_range[0]),
                                                              to_value=float(float_range[1]))]
    if int_range:
        descriptor.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    return descriptor


# name -> (default, descriptor). Ranges are checked by rclpy before the validation callback runs.
PARAMETERS = {
    "model": ("", _descriptor("path of the .safetensors model bundle", read_only=True)),
    "expected_sha256": ("", _descriptor("if set, the bundle file's sha256 must equal this (64 hex digits)",
                                        read_only=True)),
    "device": ("cpu", _descriptor("cpu | cuda | cuda:N; CUDA unavailable -> CPU with an error", read_only=True)),
    "precision": ("fp32", _descriptor("fp32 | fp16 | bf16 (torch dtype of the model)", read_only=True)),
    "fast_path": (True, _descriptor("serve through admn_core.fastpath (CUDA graphs on a GPU; on a CPU a lean forward "
                                    "with ONNX Runtime stages where timed faster), equal to the eager model within "
                                    "float tolerance; false = the eager reference model", read_only=True)),
    "torch_threads": (0, _descriptor("torch intra-op CPU threads; 0 = torch's default", read_only=True,
                                     int_range=(0, 256))),
    "frame_id": ("world", _descriptor("frame_id of the pose output (metres, REP-103)")),
    "sync_slop": (0.05, _descriptor("approximate-time sync tolerance between camera and depth stamps (s); also the "
                                    "tolerance for the audio window end", float_range=(0.0, 5.0))),
    "sync_queue_size": (10, _descriptor("messages kept per synchronizer input", read_only=True,
                                        int_range=(1, 1000))),
    "input_qos": ("sensor_data", _descriptor("sensor_data (best effort) | reliable; must be compatible with the "
                                             "publishers", read_only=True)),
    "camera_transport": ("raw", _descriptor("raw (Image on <view>/camera/image_raw) | compressed (CompressedImage "
                                            "on <view>/camera/image_raw/compressed)", read_only=True)),
    "depth_transport": ("raw", _descriptor("raw (Image on <view>/depth/image_raw) | compressedDepth "
                                           "(CompressedImage on <view>/depth/image_raw/compressedDepth)",
                                           read_only=True)),
    "audio_msg_type": ("image_carrier", _descriptor("image_carrier (sensor_msgs/Image 32FC1) | AudioStamped | "
                                                    "AudioDataStamped", read_only=True)),
    "max_image_pixels": (DEFAULT_MAX_IMAGE_PIXELS, _descriptor(
        "frames whose (compressed header's) width x height exceeds this are rejected before decoding; that view's "
        "modality is treated as missing. Default 4096x4096 (4K with margin)", read_only=True,
        int_range=(1, 2**31 - 1))),
    "audio_sample_rate": (16000, _descriptor("sample rate of the microphone topics (Hz); must equal the model's",
                                             read_only=True, int_range=(1, 384000))),
    "audio_channels": (1, _descriptor("channels of AudioDataStamped audio (the others carry it); mixed to mono",
                                      read_only=True, int_range=(1, 64))),
    "budget_override": (-1, _descriptor("use this budget regardless of /compute_budget; -1 = off",
                                        int_range=(-1, 1_000_000))),
    "default_budget": (12, _descriptor("budget used until a /compute_budget message arrives",
                                       int_range=(0, 1_000_000))),
    "no_input_warning_s": (5.0, _descriptor("warn when a subscribed input has been silent this long (s)",
                                            float_range=(0.1, 3600.0))),
    "debug_inference_delay_s": (0.0, _descriptor("TEST ONLY: extra sleep before each inference to emulate a slow "
                                                 "model; keep 0", float_range=(0.0, 60.0))),
    "debug_fault_injection": ("", _descriptor("TEST ONLY: raise device errors inside inference: '' off | oom | "
                                              "oom_cuda | oom_above:<budget> | error; keep empty")),
}


def validate_parameter(name: str, value) -> str | None:
    """A reason `value` is not acceptable for parameter `name`, or None."""
    choices = {"precision": tuple(PRECISIONS), "input_qos": INPUT_QOS_CHOICES, "camera_transport": CAMERA_TRANSPORTS,
               "depth_transport": DEPTH_TRANSPORTS, "audio_msg_type": tuple(AUDIO_MSG_TYPES)}
    if name in choices and value not in choices[name]:
        return f"{name} must be one of {' | '.join(choices[name])}, got {value!r}"
    if name == "device" and not DEVICE_PATTERN.match(str(value)):
        return f"device must be cpu, cuda or cuda:N, got {value!r}"
    if name == "expected_sha256" and value and not re.fullmatch(r"[0-9a-fA-F]{64}", str(value)):
        return f"expected_sha256 must be empty or 64 hex digits, got {value!r}"
    if name == "frame_id" and not str(value).strip():
        return "frame_id must not be empty"
    if name == "debug_fault_injection" and not FAULT_PATTERN.match(str(value)):
        return f"debug_fault_injection must be '', oom, oom_cuda, oom_above:<budget> or error, got {value!r}"
    return None


class AdmnNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
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
        self.counters = Counters()
        self._throttled = ThrottledLog(self.get_logger())
        self._synchronizer = None
        # Registered before declaring, so initial values from YAML / --ros-args are validated by the same rules.
        self.add_on_set_parameters_callback(self._on_set_parameters)
        for name, (default, descriptor) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)

        self.device, self.device_problem = select_device(self._param("device"))
        if self.device_problem:
            self.get_logger().error(self.device_problem)
        if self._param("torch_threads") > 0:
            torch.set_num_threads(self._param("torch_threads"))
        self.engine = self._load_engine()
        self.config = self.engine.config
        # Decoding and audio windows: the one implementation, shared with the bag evaluator (admn_ros.replay_eval).
        self.assembler = FrameAssembler(self.config, self._param("sync_slop"), self._param("audio_sample_rate"),
                                        self._param("audio_channels"), self._param("max_image_pixels"))
        self._warm_up()

        self.inputs: dict[tuple[str, str], InputSpec] = {}
        self._latest_budget: int | None = None
        self._budget_problem: str | None = None
        self._last_processed_stamp_ns: int | None = None
        self._audio_problem: str | None = None
        self._timings: collections.deque[Timings] = collections.deque(maxlen=LATENCY_WINDOW)
        self._timings_lock = threading.Lock()
        self.last_result = None
        self._started = time.monotonic()
        self._last_set_monotonic: float | None = None
        self._last_sync_counts: dict[str, tuple[int, int]] = {}
        self._inference_problem: str | None = None  # the last failure; cleared by the next good inference
        self._oom_cap: int | None = None
        self._oom_cap_since = 0.0
        self._rejected_problem: str | None = None
        self._last_diagnostics_tick = time.monotonic()
        self._executor_late: tuple[float, float] | None = None  # (when, seconds late) of the latest late timer tick

        self._create_publishers()
        self._create_inputs()
        self._budget_subscriptions = subscribe_budget(self, self._on_budget)
        self.parameter_problems = self._check_unknown_parameters()  # after the subscriptions declare qos_overrides
        self._slot = LatestSlot()
        self._worker = threading.Thread(target=self._worker_loop, name="admn_inference", daemon=True)
        self._worker.start()
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._on_diagnostics_timer)
        self.get_logger().info(
            f"admn_node ready: model {self.config.name} on {self.device} ({self._param('precision')}), budgets "
            f"{self.engine.min_budget}..{self.engine.max_budget} (trained {self.engine.trained_budgets}), "
            f"{len(self.inputs)} inputs ({self._param('input_qos')} QoS), sync {self._sync_implementation}, "
            f"warm-up {self.warmup_ms:.0f} ms")

    # ------------------------------------------------------------------------------------------- setup

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _check_unknown_parameters(self) -> list[tuple[str, str]]:
        """(level, text) for every override (params file, -p) that names no parameter of this node."""
        problems = []
        for name in sorted(self._parameter_overrides):
            if name in PARAMETERS or name in STANDARD_PARAMETERS or self.has_parameter(name):
                continue
            close = difflib.get_close_matches(name, list(PARAMETERS), n=1, cutoff=0.75)
            if close:
                text = (f"unknown parameter {name!r} is ignored: did you mean {close[0]!r}? (check the params file "
                        f"and -p arguments; {close[0]!r} keeps its value {self._param(close[0])!r})")
                problems.append(("error", text))
                self.get_logger().error(text)
            else:
                text = f"unknown parameter {name!r} is ignored (admn_node does not declare it)"
                problems.append(("warning", text))
                self.get_logger().warning(text)
        return problems

    def _load_engine(self) -> InferenceEngine:
        from admn_core.bundle import BundleError

        raw = self._param("model")
        if not raw:
            raise ModelLoadError("parameter 'model' is required: the path of a .safetensors bundle, e.g. "
                                 "-p model:=/path/tiny.safetensors (make a random one with "
                                 "`admn make-bundle --preset tiny --out tiny.safetensors`)")
        path = Path(raw).expanduser().absolute()
        try:
            path = path.resolve()  # `..` and symlinks resolved: the log names the file actually read
        except (OSError, RuntimeError):
            pass  # a symlink loop: the bundle loader names the problem
        self.get_logger().info(f"loading model bundle {path}")
        try:
            engine = InferenceEngine.from_bundle(path, self.device, PRECISIONS[self._param("precision")],
                                                 expected_sha256=self._param("expected_sha256") or None,
                                                 fast=self._param("fast_path"))
        except BundleError as error:
            self.get_logger().error(f"cannot load the model bundle {path}: {error}")
            raise ModelLoadError(f"{error} (parameter model={raw!r}, relative paths are resolved against the "
                                 f"working directory {Path.cwd()})") from None
        self.model_path = path
        return engine

    def _warm_up(self) -> None:
        """One inference per trained budget and the full budget on a synthetic sample, before any input is taken.

        The first inferences pay lazy initialisation (2-4 s on a CPU: allocator, kernels, controller paths); without a
        warm-up the first real sets wait behind them and are dropped as stale. A failure here is logged and reported
        in diagnostics but does not stop the node: the worker's fault handling (OOM fallback) applies to real sets."""
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
            except Exception as error:  # the node still starts; real sets get the worker's handling
                self.warmup_problem = f"warm-up inference at budget {budget} failed: {type(error).__name__}: {error}"
                self.get_logger().warning(self.warmup_problem)
                break
            self.warmup_budgets.append(budget)
        self.warmup_ms = 1e3 * (time.perf_counter() - started)
        self.get_logger().info(f"warm-up: {len(self.warmup_budgets)} inference(s) at budgets {self.warmup_budgets} "
                               f"took {self.warmup_ms:.0f} ms")

    def _create_publishers(self) -> None:
        task = self.config.head.task
        self.pose_publisher = self.classification_publisher = None
        if task == "localization":
            self.pose_publisher = self.create_publisher(PoseWithCovarianceStamped, "~/pose", 10)
        else:
            self._classification_type = classification_message_class()
            self.classification_publisher = self.create_publisher(self._classification_type, "~/classification", 10)
        self.allocation_publisher = self.create_publisher(DiagnosticArray, "~/allocation", 10)
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)

    def _input_topic(self, kind: str, view: str) -> tuple[type, str]:
        if kind == "rgb":
            if self._param("camera_transport") == "compressed":
                return CompressedImage, f"{view}/camera/image_raw/compressed"
            return Image, f"{view}/camera/image_raw"
        if kind == "depth":
            if self._param("depth_transport") == "compressedDepth":
                return CompressedImage, f"{view}/depth/image_raw/compressedDepth"
            return Image, f"{view}/depth/image_raw"
        return audio_message_class(AUDIO_MSG_TYPES[self._param("audio_msg_type")]), f"{view}/mic/audio"

    def _create_inputs(self) -> None:
        qos_name = self._param("input_qos")
        sync_filters, self._sync_keys = [], []
        for spec in self.config.modalities:
            for view in spec.views:
                key = (view, spec.name)
                msg_type, topic = self._input_topic(spec.kind, view)
                entry = InputSpec(key, spec.kind, msg_type, topic)
                self.inputs[key] = entry
                qos = sensor_qos(qos_name, depth=INPUT_QUEUE_DEPTH[spec.kind])
                if spec.kind == "audio":
                    subscription = self.create_subscription(
                        msg_type, topic, lambda msg, entry=entry: self._on_audio(msg, entry), qos,
                        qos_overriding_options=overridable())
                    entry.resolved_topic, entry.reliability = subscription.topic_name, qos.reliability
                    continue
                subscriber = Subscriber(self, msg_type, topic, qos_profile=qos, qos_overriding_options=overridable())
                subscriber.registerCallback(self._on_arrival, entry)
                entry.resolved_topic, entry.reliability = subscriber.sub.topic_name, qos.reliability
                sync_filters.append(subscriber)
                self._sync_keys.append(key)
        self.sync_filters = sync_filters  # kept: the benchmark feeds them real messages
        if not sync_filters:
            raise ModelLoadError(f"model {self.config.name} has no camera or depth modality; admn_node triggers "
                                 "inference on synchronized camera/depth sets")
        if len(sync_filters) == 1:
            sync_filters[0].registerCallback(self._on_synchronized)
            self._sync_implementation = "single input (no synchronizer)"
            return
        self._synchronizer = make_synchronizer(sync_filters, self._param("sync_queue_size"),
                                               self._param("sync_slop"), time_jump_threshold=TIME_JUMP_BACK_S)
        self._synchronizer.registerCallback(self._on_synchronized)
        self._sync_implementation = self._synchronizer.implementation

    # ----------------------------------------------------------------------------------------- parameters

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            problem = validate_parameter(parameter.name, parameter.value)
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        for parameter in parameters:
            if hasattr(self.settings, parameter.name):
                setattr(self.settings, parameter.name, parameter.value)
            if parameter.name == "sync_slop" and getattr(self, "assembler", None) is not None:
                self.assembler.sync_slop = float(parameter.value)  # the audio window end tolerance
            if parameter.name == "sync_slop" and self._synchronizer is not None:
                self._set_slop(parameter.value)
        return SetParametersResult(successful=True)

    def _set_slop(self, seconds: float) -> None:
        synchronizer = self._synchronizer.synchronizer
        if self._synchronizer.implementation == MESSAGE_FILTERS:
            from rclpy.duration import Duration

            synchronizer.slop = Duration(seconds=seconds)
        else:
            synchronizer.slop = seconds

    # ------------------------------------------------------------------------------------------ callbacks

    def _on_arrival(self, msg, entry: InputSpec) -> None:
        entry.received += 1
        entry.last_arrival = time.monotonic()

    def _on_audio(self, msg, entry: InputSpec) -> None:
        self._on_arrival(msg, entry)
        before = self.assembler.rate_checks[entry.key].problem
        try:
            problem = self.assembler.add_audio(entry.key, msg)
        except FrameError as error:
            self._bad_input(entry, error.reason)
            return
        except Exception as error:  # never let one malformed chunk take the executor down
            self._bad_input(entry, f"{type(error).__name__}: {error}")
            return
        if problem and problem != before:
            entry.errors += 1
            entry.last_error = problem
        if problem:
            self._throttled("warning", f"audio_rate:{entry.resolved_topic}", f"{entry.resolved_topic}: {problem}")

    def _on_budget(self, msg) -> None:
        value = int(msg.data)
        self.counters.budget_messages += 1
        if value != self._latest_budget:  # throttled: a budget publisher gone wild must not flood the log
            topic = self._budget_subscriptions[0].topic_name
            self._throttled("info", "budget_change", f"{topic}: {self._latest_budget} -> {value}")
        self._latest_budget = value

    def _on_synchronized(self, *messages) -> None:
        self.counters.sets_received += 1
        self._last_set_monotonic = time.monotonic()
        synced = SyncedSet(stamp_to_ns(messages[0].header.stamp), dict(zip(self._sync_keys, messages, strict=True)),
                           self._last_set_monotonic)
        if self._slot.put(synced):
            self.counters.dropped_stale += 1

    def current_budget(self) -> tuple[int, str]:
        """(budget, origin): budget_override, else the latest /compute_budget, else default_budget."""
        if self.settings.budget_override >= 0:
            return self.settings.budget_override, "override"
        if self._latest_budget is not None:
            return self._latest_budget, "topic"
        return self.settings.default_budget, "default"

    def _bad_input(self, entry: InputSpec, reason: str) -> None:
        entry.errors += 1
        entry.last_error = reason
        self._throttled("error", f"input:{entry.resolved_topic}",
                        f"bad input on {entry.resolved_topic}: {reason}; skipped")

    # ---------------------------------------------------------------------------------------------- worker

    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            synced = self._slot.take(timeout=0.1)
            if synced is None:
                continue
            try:
                self.process(synced)
            except Exception as error:  # the worker must survive anything; the traceback goes to the log once
                if not self.context.ok():  # shutting down: publishers are gone, nothing failed
                    return
                self.counters.failed += 1
                self._inference_problem = (f"inference failed for the set stamped {synced.stamp_ns / 1e9:.3f} s on "
                                           f"{self.device}: {type(error).__name__}: {error}")
                self._throttled("error", "worker", self._inference_problem)

    def process(self, synced: SyncedSet) -> Timings | None:
        """Decode, window the audio, infer and publish one synchronized set; None when it was skipped."""
        budget, origin = self.current_budget()
        if budget < self.engine.min_budget:
            self.counters.skipped_budget += 1
            self._budget_problem = (f"budget {budget} ({origin}) is below the model's minimum "
                                    f"{self.engine.min_budget}: no inference")
            self._throttled("warning", "budget", self._budget_problem)
            return None
        self._budget_problem = None
        if not self._accept_stamp(synced.stamp_ns):
            return None
        timings = Timings()
        try:
            try:
                assembled = self.assembler.assemble(synced.stamp_ns, synced.messages)
            except FrameError as error:
                raise BadInput(self.inputs[error.key], error.reason) from None
            self._report_assembly(assembled)
            if self.settings.debug_inference_delay_s > 0:
                self._stop.wait(self.settings.debug_inference_delay_s)
            result, budget, capped = self._infer_with_fallback(assembled.sample, budget)
            if capped:
                origin += "+oom_cap"
        except BadInput as error:
            self.counters.dropped_bad_input += 1
            self._bad_input(error.entry, error.reason)
            return None
        except InputError as error:
            self.counters.dropped_bad_input += 1
            self._bad_input(self._entry_named_in(str(error)), str(error))
            return None
        if not result.ran:  # the engine's own refusal (e.g. a non-integer budget): say so, never publish
            self.counters.skipped_budget += 1
            self._budget_problem = result.skipped_reason
            self._throttled("warning", "budget", result.skipped_reason)
            return None
        if not _finite_result(result):
            self.counters.dropped_non_finite_output += 1
            self._inference_problem = (f"model output is not finite (NaN/Inf) for the set stamped "
                                       f"{synced.stamp_ns / 1e9:.3f} s at budget {budget}: not published")
            self._throttled("error", "non_finite", self._inference_problem)
            return None
        if self._oom_cap is None:
            self._inference_problem = None
        inferred = time.perf_counter()
        self._publish(result, synced.stamp_ns, origin)
        published = time.perf_counter()
        timings.decode_ms, timings.audio_ms = assembled.decode_ms, assembled.audio_ms
        timings.preprocess_ms = result.timings_ms.get("preprocess", 0.0)
        timings.model_ms = result.timings_ms.get("controller", 0.0) + result.timings_ms.get("model", 0.0)
        timings.publish_ms = 1e3 * (published - inferred)
        timings.end_to_end_ms = 1e3 * (time.monotonic() - synced.arrived)
        with self._timings_lock:
            self._timings.append(timings)
        self.last_result = result
        self.counters.sets_processed += 1
        return timings

    # ---------------------------------------------------------------------------------- device faults

    def _infer_with_fallback(self, sample: dict, budget: int):
        """-> (result, budget actually run, capped?). Out of memory: lower budget, then the CPU; see the docstring."""
        capped, requested = False, budget
        if self._oom_cap is not None:
            if time.monotonic() - self._oom_cap_since >= OOM_CAP_HOLD_S:
                self.get_logger().info(f"no out-of-memory error for {OOM_CAP_HOLD_S:.0f} s: lifting the budget cap "
                                       f"{self._oom_cap}")
                self._oom_cap = None
                self._inference_problem = None
            elif budget > self._oom_cap:
                budget, capped = self._oom_cap, True
        while True:
            try:
                self._inject_fault(budget)
                return self.engine.infer(sample, budget), budget, capped
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                self.counters.oom_errors += 1
                if self.engine.device.type == "cuda":
                    torch.cuda.empty_cache()
                lower = self._lower_budget(budget)
                if lower is not None:
                    self.counters.oom_retries += 1
                    self._oom_cap, self._oom_cap_since = lower, time.monotonic()
                    self._inference_problem = (f"device out of memory on {self.device} at budget {budget}: retried "
                                               f"at {lower}; budget capped at {lower} for {OOM_CAP_HOLD_S:.0f} s "
                                               f"({type(error).__name__}: {str(error)[:200]})")
                    self._throttled("error", "oom", self._inference_problem)
                    budget, capped = lower, True
                    continue
                if self.engine.device.type != "cpu":
                    self._fall_back_to_cpu(error)
                    budget, capped = requested, False  # the CPU has its own memory: try the full request again
                    continue
                raise

    def _lower_budget(self, budget: int) -> int | None:
        """A budget about halfway down to the minimum (so a few retries reach it), or None at the minimum."""
        budget = min(budget, self.engine.max_budget)
        low = self.engine.min_budget
        if budget <= low:
            return None
        return max(low, min(budget - 1, (budget + low) // 2))

    def _fall_back_to_cpu(self, error: BaseException) -> None:
        failed_on = self.device
        self.engine.model.to("cpu")
        for controller in self.engine.controllers.values():
            controller.to("cpu")
        self.engine.device = torch.device("cpu")
        if self.engine.fast is not None:  # its CUDA graphs are bound to the GPU: a CPU fast path replaces it
            from admn_core.fastpath import FastPath

            self.engine.fast = FastPath(self.engine.model, self.engine.controllers)
        self.device = "cpu"
        self._oom_cap = None
        self.counters.device_fallbacks += 1
        self.device_problem = (f"out of memory on {failed_on} even at the minimum budget {self.engine.min_budget}: "
                               f"moved the model to the CPU for the rest of this run ({type(error).__name__}: "
                               f"{str(error)[:200]})")
        self.get_logger().error(self.device_problem)

    def _inject_fault(self, budget: int) -> None:
        """Test hook (parameter debug_fault_injection): raise where the engine would raise a device error."""
        fault = self.settings.debug_fault_injection
        if not fault:
            return
        if fault == "error":
            raise RuntimeError("injected device error (debug_fault_injection=error)")
        oom = (fault == "oom" or (fault == "oom_cuda" and self.engine.device.type == "cuda")
               or (fault.startswith("oom_above:") and budget > int(fault.split(":", 1)[1])))
        if oom:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 20.00 MiB at budget {budget} "
                                         f"(injected by debug_fault_injection={fault!r})")

    def _accept_stamp(self, stamp_ns: int) -> bool:
        last = self._last_processed_stamp_ns
        if last is not None and stamp_ns <= last:
            if last - stamp_ns <= TIME_JUMP_BACK_S * 1e9:
                self.counters.dropped_out_of_order += 1
                self._throttled("warning", "out_of_order",
                                f"synchronized set stamped {stamp_ns / 1e9:.3f} s is not newer than the last processed "
                                f"{last / 1e9:.3f} s: dropped as out of order")
                return False
            self.counters.time_jumps += 1
            self.get_logger().info(f"input time jumped back {(last - stamp_ns) / 1e9:.3f} s (bag loop or simulator "
                                   "restart): starting over")
        self._last_processed_stamp_ns = stamp_ns
        return True

    def _entry_named_in(self, text: str) -> InputSpec:
        for key, entry in self.inputs.items():
            if str(key) in text:
                return entry
        return next(iter(self.inputs.values()))

    def _report_assembly(self, assembled) -> None:
        """Counters, input errors, throttled warnings and the audio diagnostics for one assembled set."""
        for key in assembled.depth_all_invalid:  # used anyway: "no return" everywhere is what ADMN is built for
            entry = self.inputs[key]
            self.counters.depth_frames_all_invalid += 1
            entry.errors += 1
            entry.last_error = "depth frame has no valid pixel (all 0/NaN/Inf/negative)"
            self._throttled("warning", f"depth_invalid:{entry.resolved_topic}",
                            f"{entry.resolved_topic}: depth frame has no valid pixel (all 0/NaN/Inf/negative); "
                            "used as 'no return' everywhere")
        for key, reason in assembled.rejected.items():
            entry = self.inputs[key]
            self.counters.frames_rejected_oversize += 1
            entry.errors += 1
            entry.last_error = reason
            self._throttled("error", f"input:{entry.resolved_topic}",
                            f"bad input on {entry.resolved_topic} (view {key[0]}, modality {key[1]}): {reason}; "
                            "this modality is treated as missing for the set")
        self._rejected_problem = "; ".join(
            f"{self.inputs[key].resolved_topic}: frame rejected, modality {key[1]} of view {key[0]} treated as "
            f"missing ({reason})" for key, reason in assembled.rejected.items()) or None
        self.counters.audio_samples_zero_filled += assembled.audio_zero_filled
        self.counters.audio_windows_missing += len(assembled.audio_missing)
        texts = []
        if assembled.audio_missing:
            topics = ", ".join(self.inputs[key].resolved_topic for key in assembled.audio_missing)
            texts.append(f"no audio at or before the frame stamp on {topics}: silent window used")
        if assembled.audio_partial:
            topics = ", ".join(f"{self.inputs[key].resolved_topic} ({percent}%)"
                               for key, percent in assembled.audio_partial)
            texts.append(f"audio window mostly zero-filled (chunks missing or too short) on {topics}")
        self._audio_problem = "; ".join(texts) or None
        if texts:
            self._throttled("warning", "audio_missing", self._audio_problem)

    def _publish(self, result, stamp_ns: int, origin: str) -> None:
        stamp = ns_to_stamp(stamp_ns)
        if self.pose_publisher is not None:
            self.pose_publisher.publish(pose_message(stamp, self.settings.frame_id, result.position_m,
                                                     result.covariance_m2))
        else:
            self.classification_publisher.publish(classification_message(
                self._classification_type, stamp, self.settings.frame_id, result.class_probabilities))
        self.allocation_publisher.publish(allocation_message(stamp, self.config.name, result, origin))

    # ---------------------------------------------------------------------------------------------- health

    def sync_stats(self) -> SyncStats:
        if self._synchronizer is not None:
            return self._synchronizer.stats()
        entry = self.inputs[self._sync_keys[0]]
        return SyncStats("single input", sets_emitted=self.counters.sets_received,
                         inputs=[InputStats(entry.resolved_topic, received=entry.received,
                                            last_arrival_monotonic=entry.last_arrival)])

    def _on_diagnostics_timer(self) -> None:
        now = time.monotonic()
        late = now - self._last_diagnostics_tick - DIAGNOSTICS_PERIOD_S
        self._last_diagnostics_tick = now
        if late > DIAGNOSTICS_PERIOD_S:  # the executor could not run this timer: the node itself was busy
            self._executor_late = (now, late)
        input_problems = self._check_silent_inputs(now) + self._check_sync_drops()
        array = DiagnosticArray(status=[self._inference_status(), self._inputs_status(now, input_problems)])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_publisher.publish(array)

    def _check_silent_inputs(self, now: float) -> list[str]:
        problems = []
        limit = self.settings.no_input_warning_s
        for entry in self.inputs.values():
            since = entry.last_arrival if entry.last_arrival is not None else self._started
            if now - since < limit:
                continue
            problem = (f"no message on {entry.resolved_topic} for {now - since:.1f} s: "
                       f"{self._silence_hint(entry, now)}")
            problems.append(problem)
            self._throttled("warning", f"silent:{entry.resolved_topic}", problem)
        if not problems and self._synchronizer is not None:
            last_set = self._last_set_monotonic if self._last_set_monotonic is not None else self._started
            if now - last_set >= limit:
                stamps = ", ".join(f"{s.topic}={s.last_stamp_ns / 1e9:.3f}" for s in self.sync_stats().inputs
                                   if s.last_stamp_ns is not None)
                problem = (f"inputs arrive but no synchronized set for {now - last_set:.1f} s: camera/depth stamps "
                           f"differ by more than sync_slop={self.settings.sync_slop} s (last stamps: {stamps})")
                problems.append(problem)
                self._throttled("warning", "sync_silent", problem)
        return problems

    def _silence_hint(self, entry: InputSpec, now: float) -> str:
        expected = f"{entry.msg_type.__module__.split('.')[0]}/msg/{entry.msg_type.__name__}"
        try:
            publishers = self.get_publishers_info_by_topic(entry.resolved_topic)
        except Exception:  # graph queries can fail during shutdown; the hint is best-effort
            publishers = []
        if not publishers:
            return ("no publisher on this topic; check the name, namespace and remapping "
                    "(camera_transport/depth_transport/audio_msg_type select the topic and type)")
        types = sorted({p.topic_type for p in publishers})
        if expected not in types:
            return (f"publishers offer {', '.join(types)} but the node subscribes {expected}; "
                    "set camera_transport / depth_transport / audio_msg_type to match")
        reliable_wanted = entry.reliability == ReliabilityPolicy.RELIABLE
        best_effort_publishers = [p for p in publishers if p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT]
        if reliable_wanted and best_effort_publishers:
            return ("QoS mismatch: the publisher is BEST_EFFORT but the subscription is RELIABLE (incompatible: "
                    "nothing is delivered); set input_qos:=sensor_data (or fix the qos_overrides parameter)")
        if self._executor_late is not None and now - self._executor_late[0] < self.settings.no_input_warning_s:
            return (f"the node itself was busy: its {DIAGNOSTICS_PERIOD_S:.0f} s diagnostics timer ran "
                    f"{self._executor_late[1]:.1f} s late, so arrived messages waited in its queues "
                    f"({self.counters.budget_messages} compute_budget callbacks so far; a budget publisher flooding?)")
        return ("a compatible publisher exists but nothing arrives: large images over best-effort need the Fast DDS "
                "profile in EVERY process (FASTDDS_DEFAULT_PROFILES_FILE=<share>/admn_ros/config/"
                "fastdds_large_data.xml, set by the launch file and admn_bringup) or input_qos:=reliable")

    def _check_sync_drops(self) -> list[str]:
        """Warn (throttled, per topic) when the synchronizer dropped out-of-order or duplicate stamps."""
        problems = []
        for stats in self.sync_stats().inputs:
            disorder = (stats.out_of_order or 0, stats.duplicates or 0)
            previous = self._last_sync_counts.get(stats.topic, (0, 0))
            self._last_sync_counts[stats.topic] = disorder
            if disorder[0] > previous[0] or disorder[1] > previous[1]:
                entry = next((e for e in self.inputs.values() if e.topic == stats.topic), None)
                topic = entry.resolved_topic if entry else stats.topic
                reason = (f"{disorder[0] - previous[0]} out-of-order and {disorder[1] - previous[1]} duplicate "
                          "stamp(s) dropped by the synchronizer")
                if entry is not None:
                    entry.errors += disorder[0] - previous[0] + disorder[1] - previous[1]
                    entry.last_error = reason
                problems.append(f"{topic}: {reason}")
                self._throttled("warning", f"disorder:{topic}", f"{topic}: {reason}")
        return problems

    def latency_summary(self) -> dict[str, list[float]]:
        with self._timings_lock:
            timings = list(self._timings)
        fields = ("decode_ms", "audio_ms", "preprocess_ms", "model_ms", "publish_ms", "end_to_end_ms")
        return {name: percentiles([getattr(t, name) for t in timings], (50, 90, 99)) for name in fields}

    def _inference_status(self) -> DiagnosticStatus:
        budget, origin = self.current_budget()
        status = DiagnosticStatus(name=f"{NODE_NAME}: inference", hardware_id=str(self.model_path))
        typos = [text for level, text in self.parameter_problems if level == "error"]
        if self.device_problem:
            status.level, status.message = DiagnosticStatus.ERROR, self.device_problem
        elif self._inference_problem:
            status.level, status.message = DiagnosticStatus.ERROR, self._inference_problem
        elif typos:
            status.level, status.message = DiagnosticStatus.ERROR, "; ".join(typos)
        elif self._budget_problem:
            status.level, status.message = DiagnosticStatus.WARN, self._budget_problem
        else:
            status.level, status.message = DiagnosticStatus.OK, f"budget {budget} ({origin})"
        latency = self.latency_summary()
        pairs = [("model", self.config.name), ("device", self.device), ("precision", self._param("precision")),
                 ("inference_path", "eager" if self.engine.fast is None else "fast"),
                 ("budget", str(budget)), ("budget_origin", origin),
                 ("budget_min", str(self.engine.min_budget)), ("budget_max", str(self.engine.max_budget)),
                 ("trained_budgets", ",".join(map(str, self.engine.trained_budgets)))]
        if self.last_result is not None:
            allocation = self.last_result.allocation
            pairs += [("allocation_source", allocation.source), ("budget_used", str(allocation.budget_used))]
            pairs += [(f"active_blocks.{name}", ",".join(map(str, blocks)))
                      for name, blocks in allocation.active_blocks().items()]
        for name in ("model_ms", "preprocess_ms", "end_to_end_ms"):
            p50, p90, p99 = latency[name]
            pairs += [(f"{name}_p50", f"{p50:.2f}"), (f"{name}_p90", f"{p90:.2f}"), (f"{name}_p99", f"{p99:.2f}")]
        pairs += [(name, str(value)) for name, value in self.counters.__dict__.items()]
        pairs += [("oom_budget_cap", "none" if self._oom_cap is None else str(self._oom_cap)),
                  ("pending_sets", str(len(self._slot))),
                  ("warmup_ms", f"{self.warmup_ms:.1f}"), ("warmup_budgets", ",".join(map(str, self.warmup_budgets))),
                  ("warmup_problem", self.warmup_problem or "")]
        pairs += [(f"parameter_problem.{index}", text) for index, (_, text) in enumerate(self.parameter_problems)]
        pairs.append(("qoi_estimate", "unavailable (the engine does not expose controller QoI)"))
        status.values = [KeyValue(key=k, value=v) for k, v in pairs]
        return status

    def _inputs_status(self, now: float, problems: list[str]) -> DiagnosticStatus:
        status = DiagnosticStatus(name=f"{NODE_NAME}: inputs", hardware_id=self._param("input_qos"))
        problems = [*problems, *(text for text in (self._audio_problem, self._rejected_problem) if text)]
        problems = [*problems, *(f"{self.inputs[key].resolved_topic}: {check.problem}"
                                 for key, check in self.assembler.rate_checks.items() if check.problem)]
        status.level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        status.message = "; ".join(problems) if problems else "inputs arriving"
        sync_stats = self.sync_stats()
        pairs = sync_stats.as_key_values(now)
        pairs += [(f"{s.topic}.queued", str(s.queued)) for s in sync_stats.inputs]
        for entry in self.inputs.values():
            age = "never" if entry.last_arrival is None else f"{now - entry.last_arrival:.3f}"
            pairs += [(f"{entry.resolved_topic}.messages", str(entry.received)),
                      (f"{entry.resolved_topic}.last_arrival_s_ago", age),
                      (f"{entry.resolved_topic}.errors", str(entry.errors)),
                      (f"{entry.resolved_topic}.last_error", entry.last_error)]
        for key, ring in self.assembler.rings.items():
            topic = self.inputs[key].resolved_topic
            pairs += [(f"{topic}.chunks_buffered", str(len(ring))), (f"{topic}.chunks_rejected", str(ring.rejected))]
        status.values = [KeyValue(key=k, value=v) for k, v in pairs]
        return status

    # -------------------------------------------------------------------------------------------- shutdown

    def destroy_node(self):
        self._stop.set()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=5.0)
        return super().destroy_node()


def main(args: list[str] | None = None) -> int:
    from rclpy.exceptions import InvalidParameterValueException, ParameterException

    from admn_ros.shutdown import spin_until_shutdown

    # A signal during start-up ends the warm-up with StartupInterrupted on a shut-down context: a clean exit there.
    return spin_until_shutdown(AdmnNode, "admn_node",
                               (ModelLoadError, ParameterException, InvalidParameterValueException, ValueError,
                                ImportError),
                               args)


if __name__ == "__main__":
    sys.exit(main())
