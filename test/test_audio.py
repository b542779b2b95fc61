"""Audio adapters (Image carrier, AudioStamped, AudioDataStamped) and the per-view ring buffer."""

from types import SimpleNamespace

import numpy as np
import pytest
from sensor_msgs.msg import Image

from admn_ros.msgs.audio import (
    AudioRingBuffer,
    audio_message_class,
    audio_to_numpy,
    check_plausible_level,
    numpy_to_audio_image,
)
from admn_ros.msgs.conversions import ConversionError, ns_to_stamp, stamp_to_ns

RATE = 16000
CHUNK = 512
CHUNK_NS = CHUNK * 1_000_000_000 // RATE  # 32 ms


def test_image_carrier_round_trip_planar_channels():
    samples = np.stack([np.linspace(-1, 1, CHUNK), np.linspace(1, -1, CHUNK)]).astype(np.float32)
    msg = numpy_to_audio_image(samples, stamp=ns_to_stamp(5_032_000_000), frame_id="mic")
    assert (msg.encoding, msg.height, msg.width) == ("32FC1", 2, CHUNK)
    assert stamp_to_ns(msg.header.stamp) == 5_032_000_000
    back, rate = audio_to_numpy(msg, sample_rate=RATE)
    assert rate == RATE
    np.testing.assert_array_equal(back, samples)


def audio_stamped(format_code, field, values, channels=1, rate=RATE):
    data = SimpleNamespace(float32_data=[], int32_data=[], int16_data=[], int8_data=[], uint8_data=[])
    setattr(data, field, values)
    info = SimpleNamespace(format=format_code, channels=channels, rate=rate, chunk=len(values) // channels)
    return SimpleNamespace(header=SimpleNamespace(stamp=ns_to_stamp(0)), audio=SimpleNamespace(audio_data=data,
                                                                                                 info=info))


@pytest.mark.parametrize(("format_code", "field", "raw", "expected"), [
    (1, "float32_data", [0.5, -0.25], [0.5, -0.25]),
    (2, "int32_data", [2**30, -(2**31)], [0.5, -1.0]),
    (8, "int16_data", [16384, -32768], [0.5, -1.0]),
    (16, "int8_data", [64, -128], [0.5, -1.0]),
    (32, "uint8_data", [192, 0], [0.5, -1.0]),
])
def test_audio_stamped_formats_scale_to_unit_range(format_code, field, raw, expected):
    samples, rate = audio_to_numpy(audio_stamped(format_code, field, raw, rate=48000))
    assert rate == 48000 and samples.dtype == np.float32
    np.testing.assert_allclose(samples[0], expected)


def test_audio_stamped_interleaved_stereo_becomes_planar():
    samples, _ = audio_to_numpy(audio_stamped(8, "int16_data", [1, 2, 3, 4, 5, 6], channels=2))
    np.testing.assert_allclose(samples * 32768, [[1, 3, 5], [2, 4, 6]])


def test_audio_stamped_unknown_format():
    with pytest.raises(ConversionError, match=r"info\.format 4 is not one of"):
        audio_to_numpy(audio_stamped(4, "int16_data", [1]))


def test_audio_data_stamped_s16le_with_rate_from_parameters():
    pcm = np.array([16384, -16384, 32767, -32768], dtype="<i2").tobytes()
    msg = SimpleNamespace(header=SimpleNamespace(stamp=ns_to_stamp(0)), audio=SimpleNamespace(data=list(pcm)))
    samples, rate = audio_to_numpy(msg, sample_rate=22050, channels=2)
    assert rate == 22050 and samples.shape == (2, 2)
    np.testing.assert_allclose(samples, [[0.5, 32767 / 32768], [-0.5, -1.0]])
    with pytest.raises(ConversionError, match="not a multiple of 2 bytes x 2 channels"):
        audio_to_numpy(SimpleNamespace(header=None, audio=SimpleNamespace(data=b"\x00\x01\x02")), channels=2)


def test_audio_message_class():
    assert audio_message_class("Image") is Image
    with pytest.raises(ImportError, match=r"audio_msg_type 'AudioStamped' needs audio_common_msgs \(mgonzs13"):
        audio_message_class("AudioStamped")
    with pytest.raises(ImportError, match=r"needs audio_common_msgs \(ros-drivers"):
        audio_message_class("AudioDataStamped")
    with pytest.raises(ValueError, match="'Wav' is not one of"):
        audio_message_class("Wav")


def test_bad_audio_messages():
    with pytest.raises(ConversionError, match="must be 32FC1"):
        audio_to_numpy(Image(encoding="16UC1", height=1, width=2, step=4, data=bytes(4)))
    with pytest.raises(ConversionError, match="audio chunk is empty"):
        audio_to_numpy(Image(encoding="32FC1", height=1, width=0, step=0))
    with pytest.raises(ConversionError, match="1 non-finite samples of 3"):
        audio_to_numpy(numpy_to_audio_image(np.array([0.1, np.nan, 0.2], np.float32)))
    with pytest.raises(ConversionError, match="non-empty"):
        numpy_to_audio_image(np.zeros((1, 0), np.float32))


# ------------------------------------------------------------------------------------------ ring buffer


def chunk_values(index, channels=1):
    # Sample k of the stream has value k: windows can be checked exactly.
    values = np.arange(index * CHUNK, (index + 1) * CHUNK, dtype=np.float32)
    return np.repeat(values[None, :], channels, axis=0)


def end_stamp(index, start_ns=10_000_000_000):
    return start_ns + (index + 1) * CHUNK_NS


def test_window_is_the_latest_audio_ending_at_the_stamp():
    buffer = AudioRingBuffer(RATE, window_seconds=CHUNK * 4 / RATE)
    for index in range(10):
        buffer.append(end_stamp(index), chunk_values(index), RATE)
    window = buffer.window(end_stamp(7))
    assert window.end_stamp_ns == end_stamp(7) and window.missing_samples == 0
    np.testing.assert_array_equal(window.samples, np.arange(4 * CHUNK, 8 * CHUNK))


def test_window_ends_at_the_chunk_just_before_the_requested_stamp():
    buffer = AudioRingBuffer(RATE, window_seconds=CHUNK * 2 / RATE)
    for index in range(4):
        buffer.append(end_stamp(index), chunk_values(index), RATE)
    window = buffer.window(end_stamp(2) + CHUNK_NS // 2)
    assert window.end_stamp_ns == end_stamp(2)
    np.testing.assert_array_equal(window.samples, np.arange(1 * CHUNK, 3 * CHUNK))
    assert buffer.window(end_stamp(2) - 1, tolerance_ns=2).end_stamp_ns == end_stamp(2)


def test_not_enough_history_is_zero_padded_at_the_start():
    buffer = AudioRingBuffer(RATE, window_seconds=1.0)
    for index in range(3):
        buffer.append(end_stamp(index), chunk_values(index), RATE)
    window = buffer.window(end_stamp(2))
    assert window.samples.size == RATE and window.missing_samples == RATE - 3 * CHUNK
    assert not window.samples[: RATE - 3 * CHUNK].any()
    np.testing.assert_array_equal(window.samples[-3 * CHUNK:], np.arange(3 * CHUNK))


def test_gap_is_zero_and_counted():
    buffer = AudioRingBuffer(RATE, window_seconds=CHUNK * 3 / RATE)
    for index in (0, 2):  # chunk 1 lost
        buffer.append(end_stamp(index), chunk_values(index), RATE)
    window = buffer.window(end_stamp(2))
    assert window.missing_samples == CHUNK
    assert not window.samples[CHUNK: 2 * CHUNK].any()
    np.testing.assert_array_equal(window.samples[2 * CHUNK:], np.arange(2 * CHUNK, 3 * CHUNK))


def test_out_of_order_and_duplicate_chunks():
    in_order, shuffled = AudioRingBuffer(RATE, 1, 0.2), AudioRingBuffer(RATE, 1, 0.2)
    for index in range(8):
        in_order.append(end_stamp(index), chunk_values(index), RATE)
    for index in (3, 0, 7, 1, 5, 2, 6, 4, 4):
        shuffled.append(end_stamp(index), chunk_values(index), RATE)
    assert shuffled.duplicates == 1
    np.testing.assert_array_equal(shuffled.window(end_stamp(7)).samples, in_order.window(end_stamp(7)).samples)


def test_no_audio_before_the_stamp():
    buffer = AudioRingBuffer(RATE, window_seconds=0.1)
    buffer.append(end_stamp(5), chunk_values(5), RATE)
    window = buffer.window(end_stamp(1))
    assert window.missing_samples == window.samples.size == 1600 and window.end_stamp_ns == end_stamp(1)


def test_memory_is_bounded_and_time_jump_back_resets():
    buffer = AudioRingBuffer(RATE, window_seconds=0.5, capacity_seconds=1.0)
    for index in range(1000):  # 32 s of audio
        buffer.append(end_stamp(index), chunk_values(0), RATE)
    assert len(buffer) <= 1.0 / (CHUNK / RATE) + 1
    buffer.append(end_stamp(0), chunk_values(0), RATE)  # a looping bag starts again
    assert buffer.resets == 1 and len(buffer) == 1


def test_stereo_is_mixed_down_to_mono():
    buffer = AudioRingBuffer(RATE, channels=2, window_seconds=CHUNK / RATE)
    stereo = np.stack([np.full(CHUNK, 0.2), np.full(CHUNK, 0.6)]).astype(np.float32)
    buffer.append(end_stamp(0), stereo, RATE)
    np.testing.assert_allclose(buffer.window(end_stamp(0)).samples, 0.4, rtol=1e-6)


def test_bad_chunks_are_rejected_with_reasons():
    buffer = AudioRingBuffer(RATE, channels=1, window_seconds=0.1)
    with pytest.raises(ConversionError, match="sample rate 44100 Hz differs from the configured 16000 Hz"):
        buffer.append(0, np.zeros((1, 10), np.float32), 44100)
    with pytest.raises(ConversionError, match=r"shape \(2, 10\), expected 1 channel"):
        buffer.append(0, np.zeros((2, 10), np.float32), RATE)
    with pytest.raises(ConversionError, match="empty"):
        buffer.append(0, np.zeros((1, 0), np.float32), RATE)
    assert buffer.rejected == 3 and len(buffer) == 0


def test_append_message_uses_the_header_stamp():
    buffer = AudioRingBuffer(RATE, window_seconds=CHUNK / RATE)
    buffer.append_message(numpy_to_audio_image(chunk_values(0), stamp=ns_to_stamp(end_stamp(0))))
    np.testing.assert_array_equal(buffer.window(end_stamp(0)).samples, np.arange(CHUNK))


@pytest.mark.parametrize("peak", [3e38, 32767.0])
def test_implausibly_loud_chunks_are_rejected(peak):
    """Finite but beyond full scale by far (garbage, or int16 values sent as floats): a fault of the microphone."""
    samples = np.zeros((1, 160), np.float32)
    samples[0, 7] = peak
    with pytest.raises(ConversionError, match="beyond the plausible"):
        check_plausible_level(audio_to_numpy(numpy_to_audio_image(samples))[0])
    samples[0, 7] = 1.5  # a resampler's overshoot is still audio
    check_plausible_level(samples)
