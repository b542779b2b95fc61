"""File decoding shared by the readers (JPEG/PNG via Pillow, WAV via the standard library), with errors that
name the file instead of a decoder traceback."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np

from admn_core.data.errors import DatasetFileError


def decode_image_bytes(data: bytes, where: str | Path, mode: str = "RGB") -> np.ndarray:
    """JPEG/PNG bytes → uint8 [H, W, 3] (mode RGB) or the native array for other modes."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.array(image.convert(mode) if mode else image)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetFileError(where, f"cannot decode image bytes: {exc}") from None


def read_image(path: Path, mode: str | None = "RGB") -> np.ndarray:
    """An image file → uint8 [H, W, 3] (mode RGB) or its native array (mode None: 16-bit PNG → uint16 [H, W])."""
    if not path.is_file():
        raise DatasetFileError(path, "missing image file")
    array = decode_image_bytes(path.read_bytes(), path, mode)
    if mode is None and array.dtype == np.int32:  # Pillow "I" mode for some 16-bit PNGs
        array = array.astype(np.uint16)
    return array


def read_wav(path: Path, sample_rate: int | None = None) -> np.ndarray:
    """PCM WAV → float32 mono in [−1, 1] (channels averaged), resampled (FFT) to `sample_rate` if given."""
    if not path.is_file():
        raise DatasetFileError(path, "missing audio file")
    try:
        with wave.open(str(path), "rb") as handle:
            channels, width, rate = handle.getnchannels(), handle.getsampwidth(), handle.getframerate()
            raw = handle.readframes(handle.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise DatasetFileError(path, f"not a readable PCM WAV file: {exc}") from None
    if width == 2:
        samples = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 4:
        samples = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    elif width == 1:
        samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        raise DatasetFileError(path, f"unsupported WAV sample width {width} bytes")
    mono = samples.reshape(-1, channels).mean(axis=1)
    if sample_rate and rate != sample_rate and mono.size:
        target = int(round(mono.size * sample_rate / rate))
        mono = np.fft.irfft(np.fft.rfft(mono), target) * (target / mono.size)
    return mono.astype(np.float32)
