"""Synchronized camera/depth messages + audio ring buffers -> the engine's Sample, shared by admn_node and bag replay.

This is admn_node's decode/assemble step as plain functions on plain message objects, so that rclpy messages (the
node, live replay) and rosbags-deserialized messages (offline bag evaluation) go through exactly the same code:

* `decode_rgb(msg)` / `decode_depth(msg)`: sensor_msgs/Image or CompressedImage (detected by fields, not by class,
  so both message families work) -> numpy in sensor units; `ConversionError` on bad input, `ImageTooLarge` (checked
  from the header, before decoding) for a frame above `max_pixels`.
* A frame above the pixel limit is hostile or misconfigured, not a glitch: `assemble` treats that modality as missing
  for that view (`missing_input`: a black frame, depth without returns — what a blind sensor sends, so ADMN spends
  its budget elsewhere) and names it in `Assembled.rejected`; the other modalities still make the set.
* `FrameAssembler`: one AudioRingBuffer and one AudioRateCheck per audio input (window + 2 s history), and
  `assemble(stamp_ns, messages)` -> `Assembled(sample, ...)`: decoded frames plus, per microphone, the window ending
  at the newest chunk stamped at or before the set's stamp, with what went wrong on the way (depth frames without a
  valid pixel, missing or mostly zero-filled audio windows) and the decode/window timings. `add_audio(key, msg)`
  appends a chunk and returns the microphone's sample-rate problem, if any. `audio_shortfall(stamp_ns)` names the
  microphones whose audio has not reached the stamp yet: once it is empty the windows are final (a microphone's
  chunks arrive in stamp order), so a set assembled then gets the same audio live and offline.
* `input_topics(config, ...)`: the node's input topic names and kinds per (view, modality).

Errors name the input: `FrameError(key, reason)`. This is admn_node's only implementation of decoding and audio
windowing; the node adds what is node-only (counters, throttled logs, diagnostics) on top of the results.
"""

from __future__ import annotations

import collections
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from admn_core.preprocess import missing_input
from admn_core.ros_interface import sensor_topic
from admn_core.stream.pipeline import TIME_JUMP_BACK_S
from admn_ros.msgs.audio import AudioRingBuffer, audio_to_numpy, check_plausible_level, header_stamp_ns
from admn_ros.msgs.conversions import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEPTH_ENCODINGS,
    ConversionError,
    ImageTooLarge,
    check_pixel_limit,
    compressed_to_numpy,
    compressed_to_rgb8,
    image_to_numpy,
    image_to_rgb8,
)
from admn_ros.msgs.sync import make_synchronizer

AUDIO_HISTORY_S = 2.0  # ring capacity beyond the window (covers the worker's lag behind the newest chunk)
AUDIO_RATE_TOLERANCE = 0.2  # a microphone whose stamps imply a rate off by more than this fraction is reported
AUDIO_RATE_MIN_CHUNKS = 10


class FrameError(ValueError):
    """A message of one input cannot be used; `key` is its (view, modality)."""

    def __init__(self, key, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


class AudioRateCheck:
    """Flags a microphone whose chunk stamps advance unlike its sample count at the configured rate.

    The Image carrier and AudioDataStamped do not carry a rate, so a driver left at 44.1/48 kHz would be windowed as
    16 kHz silently (chunks overlap or leave gaps on the sample grid). The median over recent chunk pairs of
    (stamp step) / (samples / rate) is ~1 for a correct rate; an occasional lost chunk (ratio 2) does not move it."""

    def __init__(self, sample_rate: int, window: int = 2 * AUDIO_RATE_MIN_CHUNKS):
        self.sample_rate = sample_rate
        self._ratios: collections.deque[float] = collections.deque(maxlen=window)
        self._last_stamp_ns: int | None = None
        self.problem: str | None = None

    def update(self, stamp_ns: int, samples: int) -> str | None:
        last, self._last_stamp_ns = self._last_stamp_ns, stamp_ns
        if last is not None and samples > 0:
            step_ns = stamp_ns - last
            if step_ns > 0:
                self._ratios.append(step_ns * self.sample_rate / (1e9 * samples))
            elif step_ns < -TIME_JUMP_BACK_S * 1e9:  # a looping bag: measure afresh
                self._ratios.clear()
        if len(self._ratios) < AUDIO_RATE_MIN_CHUNKS:
            return self.problem
        ratio = statistics.median(self._ratios)
        if abs(ratio - 1.0) <= AUDIO_RATE_TOLERANCE:
            self.problem = None
        else:
            rate = self.sample_rate
            self.problem = (f"chunk stamps advance {ratio:.2f} x the duration of their samples at {rate} Hz: the "
                            f"microphone runs at about {rate / ratio:.0f} Hz (or loses chunks); set the driver to "
                            f"{rate} Hz (the model's rate)")
        return self.problem


def synchronizer_factory(slop: float, queue_size: int, backend: str = "auto"):
    """-> filters -> the node's camera/depth synchronizer (admn_ros.msgs.sync.make_synchronizer; backend auto |
    builtin | message_filters), for FramePipeline."""
    return lambda filters: make_synchronizer(filters, queue_size, slop, backend=backend,
                                             time_jump_threshold=TIME_JUMP_BACK_S)


def is_compressed(msg) -> bool:
    """sensor_msgs/CompressedImage (rclpy or rosbags): has `format`, no `encoding`."""
    return hasattr(msg, "format") and not hasattr(msg, "encoding")


def _writable(array: np.ndarray) -> np.ndarray:
    # rosbags messages are zero-copy views of read-only bag bytes; torch warns on those. Copy (same values).
    return array if array.flags.writeable else array.copy()


def _check_raw_size(msg, max_pixels: int) -> None:
    # The data already arrived, but the float copies of preprocessing would multiply it.
    check_pixel_limit(int(msg.width), int(msg.height), max_pixels, f"image ({msg.encoding!r})")


def decode_rgb(msg, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    if is_compressed(msg):
        return _writable(compressed_to_rgb8(msg, max_pixels))
    _check_raw_size(msg, max_pixels)
    return _writable(image_to_rgb8(msg))


def decode_depth(msg, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[np.ndarray, bool]:
    """-> (depth array, has at least one valid return). Raises ConversionError for wrong encodings or shapes."""
    if is_compressed(msg):
        array, encoding = compressed_to_numpy(msg, max_pixels)
    else:
        _check_raw_size(msg, max_pixels)
        array, encoding = image_to_numpy(msg), msg.encoding
    if encoding not in DEPTH_ENCODINGS:
        raise ConversionError(f"depth encoding {encoding!r} is not one of {', '.join(DEPTH_ENCODINGS)}")
    if array.ndim != 2:
        raise ConversionError(f"depth image must be single-channel, got shape {array.shape}")
    # The engine treats 0 / NaN / Inf / negative as "no return"; a frame without a single return is suspicious.
    has_return = array.any() if array.dtype == np.uint16 else bool(np.any(np.isfinite(array) & (array > 0)))
    return _writable(array), bool(has_return)


@dataclass(frozen=True)
class InputTopic:
    key: tuple[str, str]  # (view, modality)
    kind: str  # rgb | depth | audio
    topic: str  # relative name, as admn_node subscribes
    type_name: str  # ROS type name, e.g. sensor_msgs/msg/Image


def input_topics(config, camera_transport: str = "raw", depth_transport: str = "raw") -> list[InputTopic]:
    """The node's inputs in its order (modalities, then views), with admn_node's topic naming."""
    topics = []
    for spec in config.modalities:
        for view in spec.views:
            transport = {"rgb": camera_transport, "depth": depth_transport}.get(spec.kind, "raw")
            topic = sensor_topic(spec.kind, view, transport)
            type_name = "sensor_msgs/msg/Image" if transport == "raw" else "sensor_msgs/msg/CompressedImage"
            topics.append(InputTopic((view, spec.name), spec.kind, topic, type_name))
    return topics


@dataclass
class Assembled:
    sample: dict  # (view, modality) -> numpy, the engine's Sample
    depth_all_invalid: list = field(default_factory=list)  # keys whose depth frame had no valid pixel
    audio_missing: list = field(default_factory=list)  # keys whose audio window was entirely empty
    audio_partial: list = field(default_factory=list)  # (key, percent zero-filled) for windows at least half gaps
    audio_zero_filled: int = 0  # samples zero-filled over all audio windows
    rejected: dict = field(default_factory=dict)  # key -> why its frame was replaced by `missing_input`
    decode_ms: float = 0.0  # decoding the camera/depth messages
    audio_ms: float = 0.0  # cutting the audio windows


class FrameAssembler:
    """Decode a synchronized set and add the audio windows (admn_node's and the bag evaluator's one implementation)."""

    def __init__(self, config, audio_sample_rate: int | None = None, audio_channels: int = 1,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
        self.config = config
        self.max_image_pixels = int(max_image_pixels)
        self.specs = {(view, spec.name): spec for spec in config.modalities for view in spec.views}
        self.rings: dict[tuple[str, str], AudioRingBuffer] = {}
        self.rate_checks: dict[tuple[str, str], AudioRateCheck] = {}
        self.newest_chunk_ns: dict[tuple[str, str], int] = {}  # end stamp of each microphone's newest chunk
        for spec in config.modalities:
            if spec.kind != "audio":
                continue
            rate = audio_sample_rate or spec.audio.sample_rate
            if rate != spec.audio.sample_rate:
                raise ValueError(f"audio_sample_rate {rate} Hz differs from the model's {spec.audio.sample_rate} Hz "
                                 f"(modality {spec.name!r}); resample at the microphone driver")
            window = spec.audio_window_seconds
            for view in spec.views:
                self.rings[(view, spec.name)] = AudioRingBuffer(rate, audio_channels, window,
                                                                capacity_seconds=window + AUDIO_HISTORY_S)
                self.rate_checks[(view, spec.name)] = AudioRateCheck(rate)

    def add_audio(self, key, msg) -> str | None:
        """Append one audio chunk message -> the microphone's sample-rate problem (None when its stamps fit the
        configured rate, or too few chunks yet). Raises FrameError for a bad chunk (which is not appended)."""
        ring = self.rings[key]
        try:
            samples, rate = audio_to_numpy(msg, sample_rate=ring.sample_rate, channels=ring.channels)
            check_plausible_level(samples)
            stamp_ns = header_stamp_ns(msg)
            ring.append(stamp_ns, samples, rate)
        except ConversionError as error:
            raise FrameError(key, str(error)) from None
        newest = self.newest_chunk_ns.get(key)
        if newest is None or stamp_ns > newest or stamp_ns < newest - ring.capacity_ns:  # the ring's reset rule
            self.newest_chunk_ns[key] = stamp_ns
        return self.rate_checks[key].update(stamp_ns, samples.shape[-1])

    def decode(self, messages: dict) -> Assembled:
        """{key: camera/depth message} -> Assembled with the decoded frames (no audio yet)."""
        assembled = Assembled({})
        for key, msg in messages.items():
            try:
                if self.specs[key].kind == "rgb":
                    assembled.sample[key] = decode_rgb(msg, self.max_image_pixels)
                else:
                    assembled.sample[key], has_return = decode_depth(msg, self.max_image_pixels)
                    if not has_return:
                        assembled.depth_all_invalid.append(key)
            except ImageTooLarge as error:
                assembled.sample[key] = missing_input(self.specs[key])
                assembled.rejected[key] = str(error)
            except ConversionError as error:
                raise FrameError(key, str(error)) from None
        return assembled

    def audio_shortfall(self, stamp_ns: int) -> dict:
        """{key: end stamp of its newest chunk, or None} for every microphone whose audio does not reach the stamp."""
        newest = {key: self.newest_chunk_ns.get(key) for key in self.rings}
        return {key: end for key, end in newest.items() if end is None or end < stamp_ns}

    def add_audio_windows(self, assembled: Assembled, stamp_ns: int) -> None:
        for key, ring in self.rings.items():
            window = ring.window(stamp_ns)
            assembled.sample[key] = window.samples
            assembled.audio_zero_filled += window.missing_samples
            if window.missing_samples >= ring.window_samples:
                assembled.audio_missing.append(key)
            elif window.missing_samples * 2 >= ring.window_samples:  # mostly gaps: short or lost chunks
                assembled.audio_partial.append((key, 100 * window.missing_samples // ring.window_samples))

    def assemble(self, stamp_ns: int, messages: dict) -> Assembled:
        """Raises FrameError (naming the input) for a message that cannot be decoded."""
        started = time.perf_counter()
        assembled = self.decode(messages)
        decoded = time.perf_counter()
        self.add_audio_windows(assembled, stamp_ns)
        assembled.decode_ms, assembled.audio_ms = 1e3 * (decoded - started), 1e3 * (time.perf_counter() - decoded)
        return assembled

    def reset_audio(self) -> None:
        for ring in self.rings.values():
            ring.clear()
        self.newest_chunk_ns.clear()
        for key, check in self.rate_checks.items():
            self.rate_checks[key] = AudioRateCheck(check.sample_rate)
