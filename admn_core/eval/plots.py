"""Figures with Pillow only (no matplotlib): error-vs-budget lines and allocation examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (0, 0, 0), (90, 90, 200)]


def _font():
    return ImageFont.load_default()


def line_plot(series: dict[str, dict[int, float]], path: str | Path, title: str = "",
              xlabel: str = "layer budget L", ylabel: str = "mean localization error (cm)",
              size: tuple[int, int] = (900, 560)) -> Path:
    """series {name: {x: y}} → PNG with axes, ticks, markers and a legend."""
    width, height = size
    left, right, top, bottom = 70, 220, 40, 60
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = _font()
    xs = sorted({x for s in series.values() for x in s})
    ys = [y for s in series.values() for y in s.values() if y == y]
    if not xs or not ys:
        image.save(path)
        return Path(path)
    x0, x1 = min(xs), max(xs)
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = 0.0, max(ys) * 1.08

    def px(x, y):
        return (left + (x - x0) / (x1 - x0) * (width - left - right),
                height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom))

    draw.rectangle([left, top, width - right, height - bottom], outline=(0, 0, 0))
    for i in range(6):
        y = y0 + (y1 - y0) * i / 5
        _, py = px(x0, y)
        draw.line([left - 4, py, left, py], fill=(0, 0, 0))
        draw.line([left, py, width - right, py], fill=(235, 235, 235))
        draw.text((8, py - 6), f"{y:.1f}", fill=(0, 0, 0), font=font)
    for x in xs:
        qx, _ = px(x, y0)
        draw.line([qx, height - bottom, qx, height - bottom + 4], fill=(0, 0, 0))
        draw.text((qx - 6, height - bottom + 8), str(x), fill=(0, 0, 0), font=font)
    draw.text(((width - right) // 2 - 40, height - 24), xlabel, fill=(0, 0, 0), font=font)
    draw.text((left, 8), ylabel + ("  —  " + title if title else ""), fill=(0, 0, 0), font=font)
    for index, (name, points) in enumerate(series.items()):
        color = PALETTE[index % len(PALETTE)]
        pts = [px(x, points[x]) for x in sorted(points) if points[x] == points[x]]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        for qx, qy in pts:
            draw.ellipse([qx - 3, qy - 3, qx + 3, qy + 3], fill=color)
        ly = top + 10 + 18 * index
        draw.line([width - right + 12, ly + 6, width - right + 36, ly + 6], fill=color, width=3)
        draw.text((width - right + 42, ly), name, fill=(0, 0, 0), font=font)
    image.save(path)
    return Path(path)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    lo, hi = float(np.min(array)), float(np.max(array))
    return ((array - lo) / (hi - lo + 1e-8) * 255).astype(np.uint8)


def allocation_examples(rows: list[dict], path: str | Path, modality_names: tuple[str, ...], depth: int,
                        tile: int = 96) -> Path:
    """rows: [{"images": [(title, HxW or HxWx3 array)], "mask": bool [M, depth], "caption": str}] → PNG.

    Each row shows the inputs (one view per modality) and the chosen blocks per modality as a grid
    (filled = executed)."""
    font = _font()
    cell = 14
    grid_w = 70 + depth * cell
    images_per_row = max(len(r["images"]) for r in rows)
    width = images_per_row * (tile + 8) + grid_w + 20
    row_h = tile + 34
    image = Image.new("RGB", (width, row_h * len(rows) + 10), "white")
    draw = ImageDraw.Draw(image)
    for r, row in enumerate(rows):
        y = 5 + r * row_h
        draw.text((5, y), row.get("caption", ""), fill=(0, 0, 0), font=font)
        for i, (title, array) in enumerate(row["images"]):
            array = np.asarray(array)
            if array.dtype != np.uint8:
                array = _to_uint8(array)
            pic = Image.fromarray(array).convert("RGB").resize((tile, tile))
            x = 5 + i * (tile + 8)
            image.paste(pic, (x, y + 14))
            draw.text((x, y + 16 + tile), title, fill=(0, 0, 0), font=font)
        gx = 5 + images_per_row * (tile + 8) + 10
        mask = np.asarray(row["mask"], dtype=bool)
        for m, name in enumerate(modality_names):
            gy = y + 20 + m * (cell + 4)
            draw.text((gx, gy), name, fill=(0, 0, 0), font=font)
            for d in range(depth):
                bx = gx + 60 + d * cell
                fill = PALETTE[m % len(PALETTE)] if mask[m, d] else (240, 240, 240)
                draw.rectangle([bx, gy, bx + cell - 2, gy + cell - 2], fill=fill, outline=(150, 150, 150))
        draw.text((gx + 60, y + 20 + len(modality_names) * (cell + 4)), f"blocks 0..{depth - 1}",
                  fill=(90, 90, 90), font=font)
    image.save(path)
    return Path(path)
