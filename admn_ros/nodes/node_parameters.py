"""admn_node's parameters: the schema (defaults, descriptions, ranges), validation, device choice and typo checks."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import torch
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from admn_core.ros_interface import NODE_DEFAULTS
from admn_ros.msgs.conversions import DEFAULT_MAX_IMAGE_PIXELS

DEVICE_PATTERN = re.compile(r"^(cpu|cuda|cuda:\d+)$")
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
AUDIO_MSG_TYPES = {"image_carrier": "Image", "AudioStamped": "AudioStamped", "AudioDataStamped": "AudioDataStamped"}
CHOICES = {"precision": tuple(PRECISIONS), "input_qos": ("sensor_data", "reliable"),
           "camera_transport": ("raw", "compressed"), "depth_transport": ("raw", "compressedDepth"),
           "audio_msg_type": tuple(AUDIO_MSG_TYPES), "sync_backend": ("auto", "builtin", "message_filters")}
# Parameters every rclpy node may receive besides ours (not typos).
STANDARD_PARAMETERS = {"use_sim_time", "start_type_description_service"}


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
    "model": ("", _descriptor("path of the .safetensors model bundle; empty: the shipped reference model",
                              read_only=True)),
    "expected_sha256": ("", _descriptor("if set, the bundle file's sha256 must equal this (64 hex digits)",
                                        read_only=True)),
    "device": ("cpu", _descriptor("cpu | cuda | cuda:N; CUDA unavailable -> CPU with an error", read_only=True)),
    "precision": ("fp32", _descriptor("fp32 | fp16 | bf16 (torch dtype of the model)", read_only=True)),
    "fast_path": (NODE_DEFAULTS.fast_path, _descriptor(
        "serve through admn_core.fastpath (CUDA graphs on a GPU; on a CPU a lean forward with ONNX Runtime stages), "
        "equal to the eager model within float tolerance; false = the eager reference model", read_only=True)),
    "torch_threads": (0, _descriptor("torch intra-op CPU threads; 0 = torch's default", read_only=True,
                                     int_range=(0, 256))),
    "frame_id": (NODE_DEFAULTS.frame_id, _descriptor("frame_id of the pose output (metres, REP-103; map: REP-105)")),
    # Above 0: message_filters' policy emits a set only when its stamps span strictly less than the slop.
    "sync_slop": (NODE_DEFAULTS.sync_slop, _descriptor(
        "approximate-time sync tolerance between camera and depth stamps (s)", float_range=(0.001, 5.0))),
    "sync_queue_size": (NODE_DEFAULTS.sync_queue_size, _descriptor("messages kept per synchronizer input",
                                                                   read_only=True, int_range=(1, 1000))),
    "sync_backend": ("auto", _descriptor("auto (message_filters when importable) | builtin | message_filters",
                                         read_only=True)),
    "audio_wait_s": (NODE_DEFAULTS.audio_wait_s, _descriptor(
        "a set waits at most this long (s) for every microphone's audio to reach its stamp, then runs without it "
        "and the shortfall is reported", float_range=(0.0, 10.0))),
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
    "default_budget": (NODE_DEFAULTS.default_budget, _descriptor("budget used until a /compute_budget message arrives",
                                       int_range=(0, 1_000_000))),
    "no_input_warning_s": (5.0, _descriptor("warn when a subscribed input has been silent this long (s)",
                                            float_range=(0.1, 3600.0))),
}


@dataclass
class Settings:
    """Runtime-tunable parameter values, updated by the parameter callback (read by the worker)."""

    frame_id: str = NODE_DEFAULTS.frame_id
    sync_slop: float = NODE_DEFAULTS.sync_slop
    audio_wait_s: float = NODE_DEFAULTS.audio_wait_s
    budget_override: int = -1
    default_budget: int = NODE_DEFAULTS.default_budget
    no_input_warning_s: float = 5.0


def validate_parameter(name: str, value) -> str | None:
    """A reason `value` is not acceptable for parameter `name`, or None."""
    if name in CHOICES and value not in CHOICES[name]:
        return f"{name} must be one of {' | '.join(CHOICES[name])}, got {value!r}"
    if name == "device" and not DEVICE_PATTERN.match(str(value)):
        return f"device must be cpu, cuda or cuda:N, got {value!r}"
    if name == "expected_sha256" and value and not re.fullmatch(r"[0-9a-fA-F]{64}", str(value)):
        return f"expected_sha256 must be empty or 64 hex digits, got {value!r}"
    if name == "frame_id" and not str(value).strip():
        return "frame_id must not be empty"
    return None


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


def unknown_parameters(node) -> list[tuple[str, str]]:
    """(level, text) for every override (params file, -p) that names no parameter of `node`: 'error' with the
    closest valid name (almost certainly a typo), 'warning' otherwise (e.g. a shared `/**` params file)."""
    problems = []
    for name in sorted(node._parameter_overrides):
        if name in PARAMETERS or name in STANDARD_PARAMETERS or node.has_parameter(name):
            continue
        close = difflib.get_close_matches(name, list(PARAMETERS), n=1, cutoff=0.75)
        if close:
            value = node.get_parameter(close[0]).value
            problems.append(("error", f"unknown parameter {name!r} is ignored: did you mean {close[0]!r}? (check the "
                                      f"params file and -p arguments; {close[0]!r} keeps its value {value!r})"))
        else:
            problems.append(("warning", f"unknown parameter {name!r} is ignored (admn_node does not declare it)"))
    return problems
