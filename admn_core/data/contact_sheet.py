"""PNG contact sheets of samples: every view's RGB and depth, each microphone's log-mel, and the labels (Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from admn_core.data.audio import log_mel_spectrogram

TILE = 128  # pixels per tile side on the sheet
LABEL_HEIGHT = 16


def _colormap(values: np.ndarray) -> np.ndarray:
    """[H, W] values in [0, 1] → [H, W, 3] uint8, a blue→green→yellow ramp (perceptually ordered, no matplotlib)."""
    stops = np.array([[0.27, 0.0, 0.33], [0.23, 0.32, 0.55], [0.13, 0.57, 0.55], [0.37, 0.79, 0.38],
                      [0.99, 0.91, 0.14]])
    position = np.clip(values, 0, 1) * (len(stops) - 1)
    low = np.floor(position).astype(int).clip(0, len(stops) - 2)
    frac = (position - low)[..., None]
    return ((stops[low] * (1 - frac) + stops[low + 1] * frac) * 255).astype(np.uint8)


def depth_to_rgb(depth_mm: np.ndarray, max_range_mm: float = 8000.0) -> np.ndarray:
    """Depth tile: near = bright; no return (0) = black."""
    depth = depth_mm.astype(np.float32)
    tile = _colormap(1.0 - depth / max_range_mm)
    tile[depth_mm == 0] = 0
    return tile


def spectrogram_to_rgb(wave: np.ndarray, sample_rate: int, n_mels: int = 64) -> np.ndarray:
    if not np.any(wave):
        return np.zeros((n_mels, 8, 3), dtype=np.uint8)
    mel = log_mel_spectrogram(wave, sample_rate, n_mels=n_mels)[::-1]  # low frequencies at the bottom
    low, high = -18.0, 4.0  # fixed scale so sheets are comparable: log power of −18 (silence) … +4 (loud)
    return _colormap((mel - low) / (high - low))


def _resize(tile: np.ndarray, size: int):
    from PIL import Image

    return Image.fromarray(tile).resize((size, size), Image.NEAREST)


def _label_text(target: dict) -> str:
    parts = []
    for modality, label in target.get("corruption", {}).items():
        category = label["category"]
        parts.append(f"{modality}: {category}" + (f" {float(label['value']):g}" if category != "clean" else ""))
    if "position" in target:
        x, y = (float(v) for v in target["position"])
        parts.append(f"car ({x:+.2f}, {y:+.2f}) m")
    return " | ".join(parts)


def contact_sheet(rows: list[tuple[dict, dict]], path: str | Path, sample_rate: int = 16000,
                  title: str = "", tile: int = TILE, palette_colors: int | None = None) -> Path:
    """Write a PNG: per sample, one row of tiles per view (RGB, depth, log-mel) under a label line.

    `palette_colors` (e.g. 96) stores an indexed-colour PNG: several times smaller, for committed docs.
    """
    from PIL import Image, ImageDraw

    blocks = []
    for sample, target in rows:
        views = list(dict.fromkeys(view for view, _ in sample))
        tiles_per_view = []
        for view in views:
            tiles = []
            for (v, _modality), array in sample.items():
                if v != view:
                    continue
                if array.ndim == 3:
                    tiles.append(array)
                elif array.ndim == 2 and array.dtype == np.uint16:
                    tiles.append(depth_to_rgb(array))
                elif array.ndim == 1:
                    tiles.append(spectrogram_to_rgb(array, sample_rate))
            tiles_per_view.append((view, tiles))
        blocks.append((_label_text(target), tiles_per_view))

    columns = max(len(tiles) for _, block in blocks for _, tiles in block)
    width = 70 + columns * (tile + 4)
    height = LABEL_HEIGHT * (2 if title else 1) + sum(
        LABEL_HEIGHT + len(block) * (tile + 4) for _, block in blocks)
    sheet = Image.new("RGB", (max(width, 560), height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = 2
    if title:
        draw.text((4, y), title, fill=(0, 0, 0))
        y += LABEL_HEIGHT
    for text, block in blocks:
        draw.text((4, y + 2), text, fill=(150, 0, 0))
        y += LABEL_HEIGHT
        for view, tiles in block:
            draw.text((4, y + tile // 2 - 6), view, fill=(0, 0, 0))
            for column, image in enumerate(tiles):
                sheet.paste(_resize(image, tile), (70 + column * (tile + 4), y))
            y += tile + 4
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if palette_colors:
        sheet = sheet.quantize(colors=palette_colors, dither=Image.Dither.NONE)
    sheet.save(path, optimize=True)
    return path
