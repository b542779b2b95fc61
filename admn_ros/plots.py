"""PNG plots with Pillow only (no matplotlib): error over time with budget and per-modality allocation strips."""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

BLOCKS = 12
COLORS = {"error": (200, 40, 40), "budget": (30, 90, 200), "grid": (225, 225, 225), "text": (20, 20, 20),
          "episode": (255, 236, 179), "skipped": (160, 160, 160)}
MODALITY_COLORS = [(46, 125, 50), (106, 27, 154), (239, 108, 0), (0, 131, 143), (121, 85, 72)]


def _font():
    try:
        return ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def plot_timeline(records, path: str | Path, title: str = "", width: int = 1200) -> Path:
    """Top: error (cm) per frame, corruption episodes shaded. Then the budget, then one strip per modality whose
    cell colour intensity is the number of active blocks (0..12) of that frame."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    font = _font()
    modalities = []
    for record in records:
        for name in record.active_blocks:
            if name not in modalities:
                modalities.append(name)
    left, right, top = 90, 20, 34
    error_h, budget_h, strip_h, gap = 260, 90, 26, 14
    height = top + error_h + gap + budget_h + gap + len(modalities) * (strip_h + 4) + 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 8), title or "ADMN replay: error, budget and allocation over time", fill=COLORS["text"],
              font=font)
    if not records:
        draw.text((left, top + 20), "no records", fill=COLORS["text"], font=font)
        image.save(path)
        return path
    t0 = min(r.t_s for r in records)
    t1 = max(max(r.t_s for r in records), t0 + 1e-3)
    plot_w = width - left - right

    def x_of(t):
        return left + (t - t0) / (t1 - t0) * plot_w

    # Episode shading (contiguous runs of the same non-clean label).
    run_start, run_label = None, None
    for record in [*records, None]:
        label = None if record is None else (record.episode if record.episode not in ("", "clean") else None)
        if label != run_label:
            if run_label is not None:
                end_t = record.t_s if record is not None else t1
                draw.rectangle([x_of(run_start), top, x_of(end_t), top + error_h], fill=COLORS["episode"])
                draw.text((x_of(run_start) + 2, top + 2), run_label[:40], fill=(120, 90, 0), font=font)
            run_start, run_label = (record.t_s if record is not None else None), label

    errors = [r.error_cm for r in records if r.error_cm is not None and r.ok]
    e_max = max(10.0, math.ceil(max(errors, default=10.0) / 10.0) * 10.0)
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + error_h - fraction * error_h
        draw.line([left, y, width - right, y], fill=COLORS["grid"])
        draw.text((8, y - 7), f"{fraction * e_max:6.0f} cm", fill=COLORS["text"], font=font)
    points = [(x_of(r.t_s), top + error_h - min(r.error_cm, e_max) / e_max * error_h)
              for r in records if r.ok and r.error_cm is not None]
    if len(points) > 1:
        draw.line(points, fill=COLORS["error"], width=2)
    for r in records:
        if not r.ok:
            draw.line([x_of(r.t_s), top + error_h - 6, x_of(r.t_s), top + error_h], fill=COLORS["skipped"])
    draw.text((left + plot_w - 150, top + 2), "error (cm), red", fill=COLORS["error"], font=font)

    # Budget strip.
    y0 = top + error_h + gap
    budgets = [r.budget for r in records if r.budget is not None]
    b_max = max(budgets, default=1) or 1
    draw.rectangle([left, y0, width - right, y0 + budget_h], outline=COLORS["grid"])
    draw.text((8, y0 + budget_h / 2 - 7), "budget", fill=COLORS["budget"], font=font)
    draw.text((8, y0), f"{b_max:6d}", fill=COLORS["text"], font=font)
    steps = []
    for r in records:
        if r.budget is None:
            continue
        y = y0 + budget_h - r.budget / b_max * (budget_h - 4)
        steps.append((x_of(r.t_s), y))
    if len(steps) > 1:
        draw.line(steps, fill=COLORS["budget"], width=2)

    # Allocation strips.
    y = y0 + budget_h + gap
    cell_w = max(1.0, plot_w / max(1, len(records)))
    for index, name in enumerate(modalities):
        color = MODALITY_COLORS[index % len(MODALITY_COLORS)]
        draw.text((8, y + 6), f"{name[:8]} blocks", fill=color, font=font)
        for r in records:
            if not r.ok:
                continue
            n = len(r.active_blocks.get(name, []))
            shade = tuple(int(255 - (255 - c) * n / BLOCKS) for c in color)
            x = x_of(r.t_s)
            draw.rectangle([x, y, x + cell_w, y + strip_h], fill=shade)
        y += strip_h + 4
    draw.text((left, y + 6), f"time since bag start (s): 0 .. {t1 - t0:.1f}; strip shade = active blocks of 12; "
                             "yellow = corruption episode", fill=COLORS["text"], font=font)
    image.save(path)
    return path
