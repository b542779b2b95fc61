"""Decompression bombs: compressed frames whose header declares a huge size are rejected from the header alone.

Real PNG/JPEG bytes (made by OpenCV) with the declared size patched to 30000x30000 (PNG: IHDR, CRC fixed; JPEG: SOF0)
go through the real conversion code. Rejection must happen before OpenCV allocates: tracemalloc does not see
OpenCV's C++ allocations, so the bound is checked on the process's peak RSS, which a 30000x30000 decode (2.7 GB RGB,
1.8 GB 16-bit) would raise by gigabytes.
"""

from __future__ import annotations

import resource
import struct
import zlib

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage

from admn_ros.msgs.conversions import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ConversionError,
    ImageTooLarge,
    compressed_dimensions,
    compressed_to_numpy,
    numpy_to_compressed,
    numpy_to_compressed_depth,
)
from admn_ros.msgs.frame_assembly import FrameAssembler

from model_fixtures import micro_config

HUGE = 30000
RSS_GROWTH_LIMIT_KB = 200 * 1024  # far below the 1.8-2.7 GB a decode of the declared size allocates


def png_declaring(data: bytes, width: int, height: int) -> bytes:
    """A real PNG with its IHDR width/height replaced (CRC recomputed, so decoders accept the header)."""
    ihdr = bytearray(data[12:29])  # type + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", width, height)
    return data[:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(bytes(ihdr))) + data[33:]


def jpeg_declaring(data: bytes, width: int, height: int) -> bytes:
    position = data.index(b"\xff\xc0")  # baseline SOF0 as OpenCV writes it
    return data[:position + 5] + struct.pack(">HH", height, width) + data[position + 9:]


def small_rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_a_compressed_bomb_is_rejected_before_decoding(image_format):
    good = numpy_to_compressed(small_rgb(), image_format)
    patch = png_declaring if image_format == "png" else jpeg_declaring
    bomb = CompressedImage(format=image_format, data=patch(bytes(good.data), HUGE, HUGE))
    assert compressed_dimensions(np.frombuffer(bytes(bomb.data), np.uint8)) == (HUGE, HUGE)
    before = peak_rss_kb()
    with pytest.raises(ImageTooLarge, match=f"declares {HUGE}x{HUGE} = {HUGE * HUGE} pixels, more than "
                                            f"max_image_pixels={DEFAULT_MAX_IMAGE_PIXELS}"):
        compressed_to_numpy(bomb)
    assert peak_rss_kb() - before < RSS_GROWTH_LIMIT_KB
    decoded, encoding = compressed_to_numpy(good)  # a normal frame still decodes
    assert encoding == "rgb8" and decoded.shape == (24, 32, 3)


def test_a_compressed_depth_bomb_is_rejected_before_decoding():
    good = numpy_to_compressed_depth(np.full((24, 32), 1500, np.uint16), "16UC1")
    data = bytes(good.data)
    bomb = CompressedImage(format=good.format, data=data[:12] + png_declaring(data[12:], HUGE, HUGE))
    before = peak_rss_kb()
    with pytest.raises(ImageTooLarge, match=f"compressedDepth PNG .* declares {HUGE}x{HUGE}"):
        compressed_to_numpy(bomb)
    assert peak_rss_kb() - before < RSS_GROWTH_LIMIT_KB
    assert compressed_to_numpy(good)[0].shape == (24, 32)


def test_the_limit_is_a_parameter_and_exact():
    good = numpy_to_compressed(small_rgb(), "png")
    assert compressed_to_numpy(good, max_pixels=24 * 32)[0].shape == (24, 32, 3)
    with pytest.raises(ImageTooLarge, match="declares 32x24 = 768 pixels, more than max_image_pixels=767"):
        compressed_to_numpy(good, max_pixels=24 * 32 - 1)


def test_unknown_or_headerless_data_is_refused_without_decoding():
    with pytest.raises(ConversionError, match="neither a PNG nor a JPEG header"):
        compressed_to_numpy(CompressedImage(format="bmp", data=b"BM" + bytes(60)))
    with pytest.raises(ConversionError, match="declares no frame size"):
        compressed_to_numpy(CompressedImage(format="jpeg", data=b"\xff\xd8\xff\xda\x00\x02" + bytes(20)))


def test_the_assembler_treats_a_bomb_as_that_modality_missing():
    """The set survives: the bombed camera becomes a black frame (no signal), named in `rejected`."""
    config = micro_config()
    assembler = FrameAssembler(config)
    good = numpy_to_compressed(small_rgb(), "png")
    bomb = CompressedImage(format="png", data=png_declaring(bytes(good.data), HUGE, HUGE))
    depth = numpy_to_compressed_depth(np.full((24, 32), 1500, np.uint16), "16UC1")
    messages = {("node_1", "rgb"): bomb, ("node_2", "rgb"): good, ("node_1", "depth"): depth,
                ("node_2", "depth"): depth}
    assembled = assembler.assemble(0, messages)
    assert list(assembled.rejected) == [("node_1", "rgb")] and "30000x30000" in assembled.rejected[("node_1", "rgb")]
    assert not assembled.sample[("node_1", "rgb")].any()
    assert assembled.sample[("node_2", "rgb")].shape == (24, 32, 3)
