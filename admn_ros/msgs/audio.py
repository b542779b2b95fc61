"""Microphone message adapters and a per-view audio ring buffer.

Pip-only audio carrier (tests, demo, bag replay)
------------------------------------------------
Neither ROS 2 audio stack's messages are on PyPI, so without them audio travels as a standard message:

    sensor_msgs/msg/Image
      header.stamp  capture time of the LAST sample in the chunk (so the chunk covers
                    (stamp - samples/rate, stamp]); stamped by the capturer, never on arrival
      header.frame_id  the microphone frame
      encoding      "32FC1"
      height        channels
      width         samples per chunk
      step          width * 4, is_bigendian 0
      data          float32 samples in [-1, 1], row-major: one row per channel (planar, not interleaved)

The sample rate is not in the message: the subscriber takes it from a parameter (default 16000 Hz). A stamped
standard message keeps approximate-time sync and bag replay (use_sim_time) working; headerless audio stamped on
arrival does not.

On robots, two real stacks are supported through lazy imports (they share the package name `audio_common_msgs` with
incompatible definitions, so only one can be installed):

* mgonzs13/audio_common `audio_common_msgs/msg/AudioStamped`: the filled array is picked by `audio.info.format`
  (PortAudio: 1 float32, 2 int32, 8 int16, 16 int8, 32 uint8), interleaved channels; channels/rate from `audio.info`.
* ros-drivers/audio_common `audio_common_msgs/msg/AudioDataStamped`: raw S16LE bytes in `audio.data`; channels and
  rate come from parameters.
"""

from __future__ import annotations

import bisect
import importlib
import threading
from dataclasses import dataclass

import numpy as np

from admn_ros.msgs.conversions import ConversionError, as_uint8_buffer, image_to_numpy, numpy_to_image, stamp_to_ns

DEFAULT_SAMPLE_RATE = 16000
CARRIER_ENCODING = "32FC1"
# Float audio is full scale at +-1 (every integer format here is scaled to it). Filters and resamplers overshoot by a
# few dB; a peak beyond +24 dB (16x full scale) is a fault of the source, e.g. int16 values sent as floats (32767)
# or garbage (3e38, whose power overflows float32), so the chunk is rejected like a non-finite one.
MAX_ABS_SAMPLE = 16.0

AUDIO_MESSAGE_TYPES = {
    "Image": ("sensor_msgs.msg", "Image", "sensor_msgs (ros-sensor-msgs)"),
    "AudioStamped": ("audio_common_msgs.msg", "AudioStamped", "audio_common_msgs (mgonzs13/audio_common)"),
    "AudioDataStamped": ("audio_common_msgs.msg", "AudioDataStamped", "audio_common_msgs (ros-drivers/audio_common)"),
}

# PortAudio sample formats used by mgonzs13/audio_common: format -> (field, scale to [-1, 1], offset).
_PORTAUDIO_FORMATS = {
    1: ("float32_data", 1.0, 0.0),
    2: ("int32_data", 1.0 / 2**31, 0.0),
    8: ("int16_data", 1.0 / 2**15, 0.0),
    16: ("int8_data", 1.0 / 2**7, 0.0),
    32: ("uint8_data", 1.0 / 2**7, -128.0),
}


def audio_message_class(type_name: str):
    """Message class for `audio_msg_type` ('Image' carrier, 'AudioStamped', 'AudioDataStamped')."""
    if type_name not in AUDIO_MESSAGE_TYPES:
        raise ValueError(f"audio_msg_type {type_name!r} is not one of {', '.join(AUDIO_MESSAGE_TYPES)}")
    module_name, class_name, provider = AUDIO_MESSAGE_TYPES[type_name]
    try:
        module = importlib.import_module(module_name)
        return getattr(module, class_name)
    except (ImportError, AttributeError) as error:
        raise ImportError(
            f"audio_msg_type {type_name!r} needs {provider}, which is not installed (it is not on PyPI: build it in "
            f"your ROS workspace), or use audio_msg_type 'Image' (the pip-only 32FC1 carrier)") from error


def numpy_to_audio_image(samples: np.ndarray, stamp=None, frame_id: str = ""):
    """float32 [channels, n] (or [n] for mono) -> the Image carrier; `stamp` = capture time of the last sample."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[None, :]
    if samples.ndim != 2 or samples.size == 0:
        raise ConversionError(f"audio samples must be a non-empty [channels, n] array, got shape {samples.shape}")
    return numpy_to_image(samples, CARRIER_ENCODING, stamp=stamp, frame_id=frame_id)


def audio_to_numpy(msg, sample_rate: int = DEFAULT_SAMPLE_RATE, channels: int = 1) -> tuple[np.ndarray, int]:
    """Any supported audio message -> (float32 [channels, n] in [-1, 1], sample rate).

    `sample_rate` and `channels` are used only where the message does not carry them (the Image carrier has
    channels = height; AudioDataStamped carries neither)."""
    if hasattr(msg, "encoding"):
        samples, rate = _carrier_to_numpy(msg), sample_rate
    elif hasattr(msg, "audio") and hasattr(msg.audio, "info"):
        samples, rate = _audio_stamped_to_numpy(msg.audio)
    elif hasattr(msg, "audio") and hasattr(msg.audio, "data"):
        samples, rate = _s16le_to_numpy(msg.audio.data, channels), sample_rate
    else:
        raise ConversionError(f"{type(msg).__name__} is not a supported audio message (Image carrier, AudioStamped, "
                              "AudioDataStamped)")
    if samples.size == 0:
        raise ConversionError("audio chunk is empty (0 samples)")
    if rate <= 0:
        raise ConversionError(f"audio sample rate must be positive, got {rate}")
    non_finite = int(np.count_nonzero(~np.isfinite(samples)))
    if non_finite:
        raise ConversionError(f"audio chunk has {non_finite} non-finite samples of {samples.size}")
    return samples, int(rate)


def check_plausible_level(samples: np.ndarray) -> None:
    """ConversionError when a microphone chunk peaks beyond MAX_ABS_SAMPLE (a fault of the source, see there)."""
    peak = float(np.max(np.abs(samples)))
    if peak > MAX_ABS_SAMPLE:
        raise ConversionError(f"audio chunk peaks at {peak:.3g}, beyond the plausible +-{MAX_ABS_SAMPLE:g} (full "
                              "scale is +-1; int16 values sent as floats?)")


def _carrier_to_numpy(msg) -> np.ndarray:
    if msg.encoding != CARRIER_ENCODING:
        raise ConversionError(f"audio Image carrier must be {CARRIER_ENCODING}, got encoding {msg.encoding!r}")
    if int(msg.width) == 0 or int(msg.height) == 0:
        raise ConversionError(f"audio chunk is empty: height (channels)={msg.height}, width (samples)={msg.width}")
    return image_to_numpy(msg)


def _audio_stamped_to_numpy(audio) -> tuple[np.ndarray, int]:
    info = audio.info
    if info.format not in _PORTAUDIO_FORMATS:
        raise ConversionError(f"AudioStamped info.format {info.format} is not one of {sorted(_PORTAUDIO_FORMATS)} "
                              "(1 float32, 2 int32, 8 int16, 16 int8, 32 uint8)")
    field, scale, offset = _PORTAUDIO_FORMATS[info.format]
    raw = np.asarray(getattr(audio.audio_data, field))
    channels = int(info.channels)
    if channels <= 0:
        raise ConversionError(f"AudioStamped info.channels must be positive, got {channels}")
    if raw.size % channels:
        raise ConversionError(f"AudioStamped has {raw.size} samples in {field}, not a multiple of {channels} channels")
    samples = (raw.astype(np.float32) + np.float32(offset)) * np.float32(scale)
    return samples.reshape(-1, channels).T, int(info.rate)  # interleaved -> planar


def _s16le_to_numpy(data, channels: int) -> np.ndarray:
    raw = np.ascontiguousarray(as_uint8_buffer(data))
    if raw.size % (2 * channels):
        raise ConversionError(f"AudioDataStamped has {raw.size} bytes, not a multiple of 2 bytes x {channels} channels")
    samples = raw.view("<i2").astype(np.float32) / np.float32(2**15)
    return samples.reshape(-1, channels).T


def header_stamp_ns(msg) -> int:
    return stamp_to_ns(msg.header.stamp)


# -------------------------------------------------------------------------------------------- ring buffer


@dataclass
class AudioWindow:
    samples: np.ndarray  # float32 [n], mono, oldest first
    end_stamp_ns: int  # capture time of the last sample (or the requested stamp if no audio was there)
    missing_samples: int  # zero-filled samples (gaps, or not enough history yet)


class AudioRingBuffer:
    """Recent mono audio of one microphone, indexed by chunk stamps (capture time of each chunk's last sample).

    Chunks may arrive out of order or twice (duplicates are ignored). Memory is bounded by `capacity_seconds` of
    history. A chunk older than the whole history (a looping bag jumping back) clears the buffer and starts again.
    Thread-safe: subscription callbacks append while an inference worker reads windows.
    """

    def __init__(self, sample_rate: int = DEFAULT_SAMPLE_RATE, channels: int = 1, window_seconds: float = 1.0,
                 capacity_seconds: float | None = None):
        if sample_rate <= 0 or channels <= 0 or window_seconds <= 0:
            raise ValueError(f"sample_rate ({sample_rate}), channels ({channels}) and window_seconds "
                             f"({window_seconds}) must be positive")
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.window_seconds = float(window_seconds)
        self.window_samples = round(self.window_seconds * self.sample_rate)
        self.capacity_ns = int(1e9 * (capacity_seconds if capacity_seconds is not None else 2 * window_seconds))
        if self.capacity_ns < int(1e9 * window_seconds):
            raise ValueError(f"capacity_seconds ({capacity_seconds}) must cover window_seconds ({window_seconds})")
        self._end_stamps: list[int] = []
        self._chunks: list[np.ndarray] = []
        self._lock = threading.Lock()
        self.duplicates = 0
        self.resets = 0
        self.rejected = 0

    def __len__(self) -> int:
        return len(self._chunks)

    def append_message(self, msg, channels: int | None = None) -> None:
        samples, rate = audio_to_numpy(msg, sample_rate=self.sample_rate, channels=channels or self.channels)
        self.append(header_stamp_ns(msg), samples, rate)

    def append(self, end_stamp_ns: int, samples: np.ndarray, sample_rate: int) -> None:
        """Add a chunk [channels, n]; raises ConversionError for wrong rate, channel count or empty chunks."""
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim == 1:
            samples = samples[None, :]
        problem = None
        if sample_rate != self.sample_rate:
            problem = f"audio chunk sample rate {sample_rate} Hz differs from the configured {self.sample_rate} Hz"
        elif samples.ndim != 2 or samples.shape[0] != self.channels:
            problem = f"audio chunk has shape {samples.shape}, expected {self.channels} channel row(s)"
        elif samples.shape[1] == 0:
            problem = "audio chunk is empty (0 samples)"
        if problem:
            self.rejected += 1
            raise ConversionError(problem)
        mono = samples.mean(axis=0) if self.channels > 1 else samples[0].copy()
        with self._lock:
            newest = self._end_stamps[-1] if self._end_stamps else None
            if newest is not None and end_stamp_ns < newest - self.capacity_ns:
                self._clear_locked()
                self.resets += 1
            index = bisect.bisect_left(self._end_stamps, end_stamp_ns)
            if index < len(self._end_stamps) and self._end_stamps[index] == end_stamp_ns:
                self.duplicates += 1
                return
            self._end_stamps.insert(index, end_stamp_ns)
            self._chunks.insert(index, mono)
            self._evict_locked()

    def clear(self) -> None:
        with self._lock:
            self._clear_locked()

    def _clear_locked(self) -> None:
        self._end_stamps.clear()
        self._chunks.clear()

    def _evict_locked(self) -> None:
        oldest_kept = self._end_stamps[-1] - self.capacity_ns
        drop = bisect.bisect_left(self._end_stamps, oldest_kept)
        if drop:
            del self._end_stamps[:drop]
            del self._chunks[:drop]

    def window(self, end_stamp_ns: int, tolerance_ns: int = 0) -> AudioWindow:
        """The last `window_seconds` of audio ending at the newest chunk stamped <= end_stamp_ns + tolerance_ns.

        Chunks are placed on the sample grid by their stamps, so gaps stay zero and are counted as missing;
        where chunks overlap (jittery stamps) the newer chunk wins."""
        n_out = self.window_samples
        output = np.zeros(n_out, dtype=np.float32)
        filled = np.zeros(n_out, dtype=bool)
        with self._lock:
            last = bisect.bisect_right(self._end_stamps, end_stamp_ns + tolerance_ns) - 1
            if last < 0:
                return AudioWindow(output, end_stamp_ns, n_out)
            window_end = self._end_stamps[last]
            for index in range(last, -1, -1):
                chunk = self._chunks[index]
                samples_after_chunk = round((window_end - self._end_stamps[index]) * self.sample_rate / 1e9)
                stop = n_out - samples_after_chunk
                start = stop - chunk.size
                if stop <= 0:
                    break
                lo = max(start, 0)
                free = ~filled[lo:stop]
                output[lo:stop][free] = chunk[lo - start:][free]
                filled[lo:stop] = True
        return AudioWindow(output, window_end, int(n_out - np.count_nonzero(filled)))
