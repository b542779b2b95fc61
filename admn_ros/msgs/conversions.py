"""ROS image messages <-> numpy, without cv_bridge.

cv_bridge is not installable from PyPI (and the PyPI `cv-bridge` repackage is broken), so this converter is
the primary path; it works with rclpy messages and with
rosbags messages alike (anything with the sensor_msgs/Image or CompressedImage fields).

* `image_to_numpy(msg)` -> native-endian array, (H, W) for one channel, (H, W, C) otherwise. Row padding
  (step > width * bytes-per-pixel) and `is_bigendian` are handled. Without padding or byte swapping the result is a
  zero-copy view of `msg.data` (pass `copy=True` before caching or modifying it).
* `numpy_to_image(arr, encoding)` -> sensor_msgs/Image built with `arr.tobytes()` (assigning an ndarray to
  `msg.data` costs ~43 ms at VGA because rclpy copies element-wise).
* `compressed_to_numpy(msg, max_pixels)` decodes `CompressedImage` (jpeg/png -> RGB order, and image_transport's
  `compressedDepth`); needs OpenCV (`opencv-python-headless`), imported lazily. The size declared in the PNG IHDR or
  JPEG SOF header is checked against `max_pixels` BEFORE OpenCV allocates anything: an 875 KB PNG may declare
  30000x30000 pixels (a decompression bomb, 2.7 GB once decoded); it raises `ImageTooLarge` instead.
* `depth_to_metres(arr, encoding)` -> float32 metres with every non-return (0, NaN, +-Inf, negative) set to 0.

Every malformed message raises `ConversionError` (a ValueError) that states the problem with the numbers.
"""

from __future__ import annotations

import re
import struct
import sys
from dataclasses import dataclass

import numpy as np


class ConversionError(ValueError):
    """A message cannot be converted; the text says why, with the offending numbers."""


class ImageTooLarge(ConversionError):
    """An image declares more pixels than allowed; rejected before anything is decoded or allocated."""


# 4096x4096: a 4K frame (3840x2160 = 8.3 Mpx) with a 2x margin. Decoded RGB at the limit is 50 MB.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096


def check_pixel_limit(width: int, height: int, max_pixels: int, what: str) -> None:
    """Raise ImageTooLarge when a `what` of width x height exceeds `max_pixels`."""
    if width * height > max_pixels:
        raise ImageTooLarge(f"{what} declares {width}x{height} = {width * height} pixels, more than "
                            f"max_image_pixels={max_pixels}: rejected before decoding")


@dataclass(frozen=True)
class PixelFormat:
    dtype: np.dtype
    channels: int

    @property
    def bytes_per_pixel(self) -> int:
        return self.dtype.itemsize * self.channels


_NAMED_ENCODINGS = {
    "rgb8": PixelFormat(np.dtype(np.uint8), 3),
    "bgr8": PixelFormat(np.dtype(np.uint8), 3),
    "rgba8": PixelFormat(np.dtype(np.uint8), 4),
    "bgra8": PixelFormat(np.dtype(np.uint8), 4),
    "mono8": PixelFormat(np.dtype(np.uint8), 1),
    "mono16": PixelFormat(np.dtype(np.uint16), 1),
    "rgb16": PixelFormat(np.dtype(np.uint16), 3),
    "bgr16": PixelFormat(np.dtype(np.uint16), 3),
}
_GENERIC_ENCODING = re.compile(r"^(8|16|32|64)(U|S|F)C([1-4])$")
_GENERIC_DTYPES = {
    ("8", "U"): np.uint8, ("8", "S"): np.int8, ("16", "U"): np.uint16, ("16", "S"): np.int16,
    ("32", "S"): np.int32, ("32", "F"): np.float32, ("64", "F"): np.float64,
}
SUPPORTED_ENCODINGS = (*_NAMED_ENCODINGS, "8UC1..4", "8SC1..4", "16UC1..4", "16SC1..4", "32SC1..4", "32FC1..4",
                       "64FC1..4")

_HOST_IS_BIGENDIAN = sys.byteorder == "big"


def pixel_format(encoding: str) -> PixelFormat:
    """dtype and channel count of a sensor_msgs/image_encodings name."""
    known = _NAMED_ENCODINGS.get(encoding)
    if known is not None:
        return known
    match = _GENERIC_ENCODING.match(encoding or "")
    if match:
        bits, kind, channels = match.groups()
        dtype = _GENERIC_DTYPES.get((bits, kind))
        if dtype is not None:
            return PixelFormat(np.dtype(dtype), int(channels))
    raise ConversionError(f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}")


def as_uint8_buffer(data) -> np.ndarray:
    # rclpy gives array.array('B'), rosbags a uint8 ndarray, hand-made messages bytes or a list.
    if isinstance(data, np.ndarray):
        return data.view(np.uint8).reshape(-1) if data.dtype != np.uint8 else data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8)


def image_to_numpy(msg, copy: bool = False) -> np.ndarray:
    """sensor_msgs/Image -> array in native byte order; see the module docstring for shapes and aliasing."""
    fmt = pixel_format(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ConversionError(f"empty image: height={height}, width={width}")
    row_bytes = width * fmt.bytes_per_pixel
    if step < row_bytes:
        raise ConversionError(
            f"step {step} is smaller than width*bytes_per_pixel = {width}*{fmt.bytes_per_pixel} = {row_bytes}"
            f" for encoding {msg.encoding!r}")
    buffer = as_uint8_buffer(msg.data)
    if buffer.size != step * height:
        raise ConversionError(f"data has {buffer.size} bytes, expected step*height = {step}*{height} = {step * height}")

    rows = buffer.reshape(height, step)
    if step != row_bytes:
        # Padded rows: drop the tail of each row, then copy so the dtype view below is legal.
        rows = np.ascontiguousarray(rows[:, :row_bytes])
    if fmt.dtype.itemsize > 1 and bool(msg.is_bigendian) != _HOST_IS_BIGENDIAN:
        # Read with the sender's byte order, then convert: torch and cv2 want native byte order.
        pixels = rows.view(fmt.dtype.newbyteorder("S")).astype(fmt.dtype)
    else:
        pixels = rows.view(fmt.dtype)
    shape = (height, width) if fmt.channels == 1 else (height, width, fmt.channels)
    pixels = pixels.reshape(shape)
    return pixels.copy() if copy and np.shares_memory(pixels, buffer) else pixels


def numpy_to_image(array: np.ndarray, encoding: str, stamp=None, frame_id: str = ""):
    """Array -> sensor_msgs/Image (little/native endian, unpadded). `stamp` is a builtin_interfaces/Time."""
    from sensor_msgs.msg import Image

    fmt = pixel_format(encoding)
    array = np.asarray(array)
    if array.ndim == 3 and fmt.channels == 1 and array.shape[2] == 1:
        array = array[:, :, 0]
    expected_ndim = 2 if fmt.channels == 1 else 3
    if array.ndim != expected_ndim or (fmt.channels > 1 and array.shape[2] != fmt.channels):
        raise ConversionError(f"array of shape {array.shape} does not fit encoding {encoding!r} "
                              f"({fmt.channels} channel(s))")
    if array.dtype.newbyteorder("=") != fmt.dtype:
        raise ConversionError(f"array dtype {array.dtype} does not fit encoding {encoding!r} (needs {fmt.dtype})")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ConversionError(f"empty image: shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=fmt.dtype.newbyteorder("="))

    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(_HOST_IS_BIGENDIAN)
    msg.step = msg.width * fmt.bytes_per_pixel
    msg.data = array.tobytes()
    return msg


def to_rgb8(array: np.ndarray, encoding: str) -> np.ndarray:
    """Colour/mono 8-bit image in any of rgb8, bgr8, rgba8, bgra8, mono8, 8UC3 (BGR, as cv_bridge) -> HxWx3 RGB."""
    if encoding == "rgb8":
        return array
    if encoding in ("bgr8", "8UC3"):
        return array[:, :, ::-1]
    if encoding == "rgba8":
        return array[:, :, :3]
    if encoding == "bgra8":
        return array[:, :, 2::-1]
    if encoding in ("mono8", "8UC1"):
        return np.repeat(array[:, :, None], 3, axis=2)
    raise ConversionError(f"encoding {encoding!r} is not an 8-bit colour or mono image; cannot convert to rgb8")


def image_to_rgb8(msg) -> np.ndarray:
    return to_rgb8(image_to_numpy(msg), msg.encoding)


# --------------------------------------------------------------------------------------------- depth

DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


@dataclass
class DepthMetres:
    metres: np.ndarray  # float32 HxW, 0 = no return
    invalid_pixels: int


def depth_to_metres(array: np.ndarray, encoding: str) -> DepthMetres:
    """16UC1/mono16 millimetres or 32FC1 metres -> float32 metres; 0, NaN, +-Inf and negatives become 0."""
    if encoding in ("16UC1", "mono16"):
        metres = array.astype(np.float32) * np.float32(0.001)
        invalid = metres == 0
    elif encoding == "32FC1":
        metres = np.array(array, dtype=np.float32, copy=True)
        invalid = ~np.isfinite(metres) | (metres <= 0)
        metres[invalid] = 0.0
    else:
        raise ConversionError(f"depth encoding {encoding!r} is not one of {', '.join(DEPTH_ENCODINGS)}")
    if metres.ndim != 2:
        raise ConversionError(f"depth image must be single-channel HxW, got shape {metres.shape}")
    return DepthMetres(metres, int(np.count_nonzero(invalid)))


def depth_image_to_metres(msg) -> DepthMetres:
    return depth_to_metres(image_to_numpy(msg), msg.encoding)


# ---------------------------------------------------------------------------------------- compressed

_COMPRESSED_DEPTH_HEADER = struct.Struct("<iff")  # image_transport ConfigHeader: format, depthQuantA, depthQuantB
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cv2():
    try:
        import cv2
    except ImportError as error:
        raise ConversionError("decoding CompressedImage needs OpenCV: pip install opencv-python-headless") from error
    return cv2


_JPEG_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])  # no length field follows these
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOFn (C4 DHT, C8 JPG, CC DAC are not)
_JPEG_START_OF_SCAN = 0xDA


def _png_dimensions(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from the IHDR chunk, which PNG requires first; None when this is not a PNG."""
    if data[:8].tobytes() != _PNG_MAGIC:
        return None
    if data.size < 24 or data[12:16].tobytes() != b"IHDR":
        raise ConversionError(f"PNG of {data.size} bytes has no IHDR header chunk")
    return int.from_bytes(data[16:20].tobytes(), "big"), int.from_bytes(data[20:24].tobytes(), "big")


def _jpeg_dimensions(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from the first SOFn segment, walking the segments after SOI; None when this is not a JPEG."""
    if data[:2].tobytes() != b"\xff\xd8":
        return None
    position = 2
    while position + 4 <= data.size:
        if data[position] != 0xFF:
            raise ConversionError(f"JPEG of {data.size} bytes is corrupt: no segment marker at byte {position}")
        marker = int(data[position + 1])
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            position += 2
            continue
        if marker == _JPEG_START_OF_SCAN:
            break
        if marker in _JPEG_FRAME_MARKERS and position + 9 <= data.size:
            height = int(data[position + 5]) << 8 | int(data[position + 6])
            width = int(data[position + 7]) << 8 | int(data[position + 8])
            if height == 0:  # the height would come in a DNL marker after the scan: unknown until decoded
                raise ConversionError("JPEG declares height 0 (defined later by a DNL marker); not supported")
            return width, height
        position += 2 + (int(data[position + 2]) << 8 | int(data[position + 3]))
    raise ConversionError(f"JPEG of {data.size} bytes declares no frame size (no SOF segment before the image data)")


def compressed_dimensions(data: np.ndarray) -> tuple[int, int]:
    """(width, height) declared by a PNG or JPEG header, read without decoding; ConversionError for other data."""
    dimensions = _png_dimensions(data) or _jpeg_dimensions(data)
    if dimensions is None:
        raise ConversionError(f"neither a PNG nor a JPEG header (first bytes {data[:8].tobytes()!r}); only the "
                              "image_transport formats jpeg and png are decoded")
    return dimensions


def _decode_bounded(data: np.ndarray, max_pixels: int, what: str) -> np.ndarray | None:
    """cv2.imdecode after the header's declared size passed the pixel limit; None when OpenCV cannot decode."""
    width, height = compressed_dimensions(data)
    check_pixel_limit(width, height, max_pixels, what)
    cv2 = _cv2()
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def compressed_to_numpy(msg, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[np.ndarray, str]:
    """CompressedImage -> (array, encoding). Colour comes back as rgb8/rgba8 (cv2 decodes BGR; we reorder).

    Raises ImageTooLarge, before decoding, when the header declares more than `max_pixels` pixels."""
    data = as_uint8_buffer(msg.data)
    if data.size == 0:
        raise ConversionError("compressed image has 0 bytes of data")
    if "compresseddepth" in (msg.format or "").lower():
        return _decode_compressed_depth(data, msg.format, max_pixels)
    try:
        decoded = _decode_bounded(data, max_pixels, f"compressed image ({msg.format!r}, {data.size} bytes)")
    except ImageTooLarge:
        raise
    except ConversionError as error:
        raise ConversionError(f"cannot decode compressed image of {data.size} bytes with format {msg.format!r}: "
                              f"{error}") from None
    if decoded is None:
        raise ConversionError(f"cannot decode compressed image of {data.size} bytes with format {msg.format!r}")
    cv2 = _cv2()
    if decoded.ndim == 2:
        return decoded, ("mono8" if decoded.dtype == np.uint8 else "mono16")
    if decoded.shape[2] == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA), "rgba8"
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), "rgb8"


def compressed_to_rgb8(msg, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    array, encoding = compressed_to_numpy(msg, max_pixels)
    if array.dtype != np.uint8:
        raise ConversionError(f"compressed image decoded to {encoding} ({array.dtype}), not an 8-bit colour image")
    return to_rgb8(array, encoding)


def _decode_compressed_depth(data: np.ndarray, format_field: str, max_pixels: int) -> tuple[np.ndarray, str]:
    # format looks like "16UC1; compressedDepth png" (or without the trailing codec on older publishers).
    encoding = format_field.split(";")[0].strip()
    if encoding not in ("16UC1", "32FC1"):
        raise ConversionError(f"compressedDepth carries encoding {encoding!r}; only 16UC1 and 32FC1 are defined")
    if data.size <= _COMPRESSED_DEPTH_HEADER.size:
        raise ConversionError(f"compressedDepth data has {data.size} bytes, not more than the "
                              f"{_COMPRESSED_DEPTH_HEADER.size}-byte header")
    _format, quant_a, quant_b = _COMPRESSED_DEPTH_HEADER.unpack(data[:_COMPRESSED_DEPTH_HEADER.size].tobytes())
    payload = data[_COMPRESSED_DEPTH_HEADER.size:]
    if payload[:8].tobytes() != _PNG_MAGIC:
        raise ConversionError(f"compressedDepth payload is not PNG (format {format_field!r}); RVL is not supported")
    decoded = _decode_bounded(payload, max_pixels, f"compressedDepth PNG ({payload.size} bytes)")
    if decoded is None or decoded.dtype != np.uint16 or decoded.ndim != 2:
        raise ConversionError(f"compressedDepth PNG did not decode to a 16-bit single-channel image "
                              f"({payload.size} bytes)")
    if encoding == "16UC1":
        return decoded, "16UC1"
    # 32FC1 is stored as quantized inverse depth: q = A / depth + B, with q = 0 meaning "no return".
    quantized = decoded.astype(np.float32)
    depth = np.full(decoded.shape, np.nan, dtype=np.float32)
    valid = decoded != 0
    depth[valid] = np.float32(quant_a) / (quantized[valid] - np.float32(quant_b))
    return depth, "32FC1"


def numpy_to_compressed(array: np.ndarray, image_format: str = "jpeg", stamp=None, frame_id: str = "",
                        jpeg_quality: int = 95):
    """RGB uint8 HxWx3 (or mono HxW) -> CompressedImage, as image_transport's `compressed` plugin would send it."""
    cv2 = _cv2()
    if image_format not in ("jpeg", "png"):
        raise ConversionError(f"compressed format must be 'jpeg' or 'png', got {image_format!r}")
    bgr = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if image_format == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if image_format == "jpeg" else ".png", bgr, params)
    if not ok:
        raise ConversionError(f"OpenCV could not encode an array of shape {array.shape} as {image_format}")
    return _compressed_image(image_format, encoded.tobytes(), stamp, frame_id)


def numpy_to_compressed_depth(depth: np.ndarray, encoding: str, depth_max: float = 10.0,
                              depth_quantization: float = 100.0, stamp=None, frame_id: str = ""):
    """Depth -> image_transport `compressedDepth` CompressedImage (PNG); used to build test data and bags."""
    cv2 = _cv2()
    if encoding == "16UC1":
        png_input = np.ascontiguousarray(depth, dtype=np.uint16)
        quant_a = quant_b = 0.0
        header_format = 1  # PNG
    elif encoding == "32FC1":
        quant_a = depth_quantization * (depth_quantization + 1.0)
        quant_b = 1.0 - quant_a / depth_max
        depth = np.asarray(depth, dtype=np.float32)
        valid = np.isfinite(depth) & (depth > 0) & (depth < depth_max)
        png_input = np.zeros(depth.shape, dtype=np.uint16)
        png_input[valid] = (quant_a / depth[valid] + quant_b).astype(np.uint16)
        header_format = 0  # INV_DEPTH
    else:
        raise ConversionError(f"compressedDepth supports 16UC1 and 32FC1, got {encoding!r}")
    ok, encoded = cv2.imencode(".png", png_input)
    if not ok:
        raise ConversionError(f"OpenCV could not PNG-encode depth of shape {depth.shape}")
    return _compressed_image(f"{encoding}; compressedDepth png",
                             _COMPRESSED_DEPTH_HEADER.pack(header_format, quant_a, quant_b) + encoded.tobytes(),
                             stamp, frame_id)


def _compressed_image(image_format: str, data: bytes, stamp, frame_id: str):
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = image_format
    msg.data = data
    return msg


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (or anything with sec/nanosec) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(nanoseconds: int):
    from builtin_interfaces.msg import Time

    return Time(sec=int(nanoseconds // 1_000_000_000), nanosec=int(nanoseconds % 1_000_000_000))
