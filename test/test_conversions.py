"""sensor_msgs Image / CompressedImage <-> numpy: round trips, padding, byte order, compression, bad messages."""

from types import SimpleNamespace

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from admn_ros.msgs.conversions import (
    ConversionError,
    compressed_to_numpy,
    compressed_to_rgb8,
    depth_image_to_metres,
    depth_to_metres,
    image_to_numpy,
    image_to_rgb8,
    ns_to_stamp,
    numpy_to_compressed,
    numpy_to_compressed_depth,
    numpy_to_image,
    pixel_format,
    stamp_to_ns,
)

RNG = np.random.default_rng(7)

ENCODINGS = [
    ("rgb8", np.uint8, 3), ("bgr8", np.uint8, 3), ("rgba8", np.uint8, 4), ("bgra8", np.uint8, 4),
    ("mono8", np.uint8, 1), ("mono16", np.uint16, 1), ("16UC1", np.uint16, 1), ("32FC1", np.float32, 1),
    ("8UC3", np.uint8, 3), ("16SC1", np.int16, 1), ("64FC1", np.float64, 1), ("32SC1", np.int32, 1),
]


def random_pixels(dtype, channels, height=5, width=7):
    shape = (height, width) if channels == 1 else (height, width, channels)
    if np.issubdtype(dtype, np.floating):
        return RNG.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


@pytest.mark.parametrize(("encoding", "dtype", "channels"), ENCODINGS)
def test_round_trip_every_encoding(encoding, dtype, channels):
    pixels = random_pixels(dtype, channels)
    msg = numpy_to_image(pixels, encoding, stamp=ns_to_stamp(1_500_000_123), frame_id="cam")
    assert (msg.height, msg.width, msg.encoding) == (5, 7, encoding)
    assert msg.step == 7 * np.dtype(dtype).itemsize * channels
    assert len(msg.data) == msg.step * msg.height
    assert stamp_to_ns(msg.header.stamp) == 1_500_000_123 and msg.header.frame_id == "cam"
    back = image_to_numpy(msg)
    assert back.dtype == np.dtype(dtype) and back.shape == pixels.shape
    np.testing.assert_array_equal(back, pixels)


@pytest.mark.parametrize(("encoding", "dtype", "channels"), ENCODINGS)
def test_padded_rows_are_cropped(encoding, dtype, channels):
    pixels = random_pixels(dtype, channels, height=4, width=3)
    row_bytes = 3 * np.dtype(dtype).itemsize * channels
    step = row_bytes + 13  # odd padding, as some drivers align to their own boundaries
    padded = np.full((4, step), 0xAB, dtype=np.uint8)
    padded[:, :row_bytes] = pixels.reshape(4, -1).view(np.uint8).reshape(4, row_bytes)
    msg = Image(height=4, width=3, encoding=encoding, step=step, is_bigendian=0, data=padded.tobytes())
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


@pytest.mark.parametrize(("encoding", "big_endian_dtype"), [("16UC1", ">u2"), ("32FC1", ">f4"), ("mono16", ">u2"),
                                                            ("64FC1", ">f8")])
def test_big_endian_data_is_converted_to_native(encoding, big_endian_dtype):
    pixels = random_pixels(np.dtype(big_endian_dtype).newbyteorder("="), 1, height=3, width=4)
    msg = Image(height=3, width=4, encoding=encoding, step=4 * pixels.itemsize, is_bigendian=1,
                data=pixels.astype(big_endian_dtype).tobytes())
    back = image_to_numpy(msg)
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, pixels)


def test_big_endian_with_padding():
    pixels = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    rows = np.zeros((3, 10), dtype=np.uint8)
    rows[:, :8] = pixels.astype(">u2").view(np.uint8).reshape(3, 8)
    msg = Image(height=3, width=4, encoding="16UC1", step=10, is_bigendian=1, data=rows.tobytes())
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


def test_rosbags_style_message_with_ndarray_data():
    # rosbags hands out plain objects whose data is a read-only uint8 ndarray view.
    pixels = random_pixels(np.uint16, 1, height=2, width=3)
    raw = np.frombuffer(pixels.tobytes(), dtype=np.uint8)
    msg = SimpleNamespace(height=2, width=3, encoding="16UC1", step=6, is_bigendian=0, data=raw)
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


def test_view_aliases_message_unless_copied():
    msg = numpy_to_image(np.zeros((2, 2), np.uint8), "mono8")
    view = image_to_numpy(msg)
    copied = image_to_numpy(msg, copy=True)
    view[0, 0] = 9
    assert msg.data[0] == 9  # zero-copy: documented aliasing
    assert copied[0, 0] == 0


@pytest.mark.parametrize(("encoding", "to_rgb"), [
    ("rgb8", lambda a: a), ("bgr8", lambda a: a[:, :, ::-1]), ("rgba8", lambda a: a[:, :, :3]),
    ("bgra8", lambda a: a[:, :, 2::-1]),
])
def test_colour_encodings_to_rgb8(encoding, to_rgb):
    channels = 4 if "a" in encoding[3:] else 3
    pixels = random_pixels(np.uint8, channels)
    np.testing.assert_array_equal(image_to_rgb8(numpy_to_image(pixels, encoding)), to_rgb(pixels))


def test_mono8_to_rgb8_repeats_channel():
    pixels = random_pixels(np.uint8, 1)
    rgb = image_to_rgb8(numpy_to_image(pixels, "mono8"))
    assert rgb.shape == (5, 7, 3) and all(np.array_equal(rgb[:, :, c], pixels) for c in range(3))


def test_numpy_to_image_at_vga_round_trips_exactly():
    # Speed of the conversion is a benchmark figure (admn_node_benchmark), not a timed test.
    frame = RNG.integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
    msg = numpy_to_image(frame, "rgb8")
    assert (msg.height, msg.width, msg.step) == (480, 640, 640 * 3)
    np.testing.assert_array_equal(image_to_numpy(msg), frame)


# ------------------------------------------------------------------------------------------------ depth


def test_depth_16uc1_millimetres_to_metres_counts_zero_as_invalid():
    depth_mm = np.array([[0, 1000], [2500, 65535]], dtype=np.uint16)
    result = depth_image_to_metres(numpy_to_image(depth_mm, "16UC1"))
    assert result.metres.dtype == np.float32
    np.testing.assert_allclose(result.metres, [[0.0, 1.0], [2.5, 65.535]], rtol=1e-6)
    assert result.invalid_pixels == 1


def test_depth_32fc1_non_returns_become_zero():
    depth_m = np.array([[np.nan, np.inf, -np.inf], [0.0, -1.0, 1.25]], dtype=np.float32)
    result = depth_to_metres(depth_m, "32FC1")
    np.testing.assert_array_equal(result.metres, [[0, 0, 0], [0, 0, 1.25]])
    assert result.invalid_pixels == 5
    assert np.isnan(depth_m[0, 0])  # the input is not modified


def test_depth_rejects_colour_encoding():
    with pytest.raises(ConversionError, match="depth encoding 'rgb8'"):
        depth_to_metres(np.zeros((2, 2, 3), np.uint8), "rgb8")


# ------------------------------------------------------------------------------------------- compressed


def blocky_rgb(height=32, width=48):
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : width // 3] = (255, 0, 0)
    image[:, width // 3: 2 * width // 3] = (0, 255, 0)
    image[:, 2 * width // 3:] = (0, 0, 255)
    return image


def test_compressed_png_round_trip_is_exact_and_rgb_ordered():
    image = blocky_rgb()
    msg = numpy_to_compressed(image, "png")
    assert isinstance(msg, CompressedImage) and msg.format == "png"
    decoded, encoding = compressed_to_numpy(msg)
    assert encoding == "rgb8"
    np.testing.assert_array_equal(decoded, image)


def test_compressed_jpeg_keeps_colours_in_rgb_order():
    image = blocky_rgb()
    decoded = compressed_to_rgb8(numpy_to_compressed(image, "jpeg", jpeg_quality=95))
    assert decoded.shape == image.shape
    assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 6
    assert decoded[16, 2, 0] > 200 and decoded[16, 2, 2] < 60  # red stays red (cv2 decodes BGR)


def test_compressed_mono_png():
    gray = random_pixels(np.uint8, 1, height=6, width=5)
    decoded, encoding = compressed_to_numpy(numpy_to_compressed(gray, "png"))
    assert encoding == "mono8"
    np.testing.assert_array_equal(decoded, gray)


def test_compressed_depth_16uc1_is_lossless():
    depth_mm = RNG.integers(0, 10000, size=(8, 9), dtype=np.uint16)
    msg = numpy_to_compressed_depth(depth_mm, "16UC1")
    assert msg.format == "16UC1; compressedDepth png"
    decoded, encoding = compressed_to_numpy(msg)
    assert encoding == "16UC1"
    np.testing.assert_array_equal(decoded, depth_mm)


def test_compressed_depth_32fc1_quantized_inverse_depth():
    depth_m = RNG.uniform(0.5, 8.0, size=(8, 9)).astype(np.float32)
    depth_m[0, 0] = np.nan  # no return
    decoded, encoding = compressed_to_numpy(numpy_to_compressed_depth(depth_m, "32FC1", depth_max=10.0))
    assert encoding == "32FC1"
    assert np.isnan(decoded[0, 0])
    valid = ~np.isnan(depth_m)
    # Inverse-depth quantization: error grows with depth^2; ~0.6 % at 8 m with the default quantization of 100.
    np.testing.assert_allclose(decoded[valid], depth_m[valid], rtol=0.01)


# --------------------------------------------------------------------------------------------- bad input


def test_unknown_encoding():
    msg = Image(height=1, width=1, encoding="yuv999", step=1, data=b"\x00")
    with pytest.raises(ConversionError, match="unsupported image encoding 'yuv999'"):
        image_to_numpy(msg)


def test_data_length_mismatch_names_the_numbers():
    msg = Image(height=480, width=640, encoding="rgb8", step=1920, data=bytes(100))
    with pytest.raises(ConversionError, match=r"data has 100 bytes, expected step\*height = 1920\*480 = 921600"):
        image_to_numpy(msg)


def test_step_smaller_than_row():
    msg = Image(height=2, width=4, encoding="rgb8", step=8, data=bytes(16))
    with pytest.raises(ConversionError, match=r"step 8 is smaller than width\*bytes_per_pixel = 4\*3 = 12"):
        image_to_numpy(msg)


def test_empty_image():
    with pytest.raises(ConversionError, match="empty image: height=0, width=0"):
        image_to_numpy(Image(encoding="rgb8"))


def test_array_does_not_fit_encoding():
    with pytest.raises(ConversionError, match="does not fit encoding 'rgb8'"):
        numpy_to_image(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ConversionError, match="dtype float64 does not fit encoding '16UC1'"):
        numpy_to_image(np.zeros((2, 2)), "16UC1")


def test_compressed_bad_messages():
    with pytest.raises(ConversionError, match="0 bytes"):
        compressed_to_numpy(CompressedImage(format="jpeg"))
    with pytest.raises(ConversionError, match="cannot decode compressed image of 5 bytes"):
        compressed_to_numpy(CompressedImage(format="jpeg", data=b"hello"))
    with pytest.raises(ConversionError, match="not more than the 12-byte header"):
        compressed_to_numpy(CompressedImage(format="16UC1; compressedDepth png", data=bytes(8)))
    with pytest.raises(ConversionError, match=r"not PNG.*RVL"):
        compressed_to_numpy(CompressedImage(format="16UC1; compressedDepth rvl", data=bytes(40)))
    with pytest.raises(ConversionError, match="only 16UC1 and 32FC1"):
        compressed_to_numpy(CompressedImage(format="rgb8; compressedDepth png", data=bytes(40)))


def test_conversion_error_is_a_value_error():
    assert issubclass(ConversionError, ValueError)
    assert pixel_format("32FC3").channels == 3
