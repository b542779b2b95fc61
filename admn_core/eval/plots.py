"""PNG figures with matplotlib's object-oriented API (Agg canvas, no pyplot state): error-vs-budget lines and
allocation examples, plus the figure helpers `admn_ros.bags.plots` shares."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100


def new_figure(width_px: int, height_px: int) -> Figure:
    """A figure of exactly width_px × height_px pixels when saved, laid out without overlapping labels."""
    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def message_figure(message: str, title: str, size: tuple[int, int]) -> Figure:
    """A figure that says why there is nothing to plot (written instead of failing on empty data)."""
    figure = new_figure(*size)
    axes = figure.add_subplot()
    axes.set_axis_off()
    if title:
        axes.set_title(title)
    axes.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, transform=axes.transAxes)
    return figure


def save_figure(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def line_figure(series: dict[str, dict[int, float]], title: str = "", xlabel: str = "layer budget L",
                ylabel: str = "mean localization error (cm)", size: tuple[int, int] = (900, 560)) -> Figure:
    """series {name: {x: y}} → one marked line per series; non-finite y values are left out."""
    cleaned = {name: sorted((x, y) for x, y in points.items() if _finite(y)) for name, points in series.items()}
    cleaned = {name: points for name, points in cleaned.items() if points}
    if not cleaned:
        return message_figure("no results to plot", title, size)
    figure = new_figure(*size)
    axes = figure.add_subplot()
    for name, points in cleaned.items():
        xs, ys = zip(*points)
        axes.plot(xs, ys, marker="o", linewidth=2, label=name)
    axes.set_xticks(sorted({x for points in cleaned.values() for x, _ in points}))
    axes.set_ylim(bottom=0)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return figure


def line_plot(series: dict[str, dict[int, float]], path: str | Path, title: str = "",
              xlabel: str = "layer budget L", ylabel: str = "mean localization error (cm)",
              size: tuple[int, int] = (900, 560)) -> Path:
    """series {name: {x: y}} → PNG with axes, ticks, markers and a legend."""
    return save_figure(line_figure(series, title, xlabel, ylabel, size), path)


def _displayable(array) -> tuple[np.ndarray, str | None]:
    """An image array → (array imshow draws as is, colormap): RGB scaled to [0, 1], single channels in grey."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 3:
        if array.dtype != np.uint8:
            array = array.astype(np.float32)
            low, high = float(array.min()), float(array.max())
            array = (array - low) / (high - low + 1e-8)
        return array, None
    return np.asarray(array, dtype=np.float32).squeeze(), "gray"


def allocation_size(rows: list[dict], modality_names: tuple[str, ...], depth: int, tile: int = 96) -> tuple[int, int]:
    """Pixel size of `allocation_examples`' figure: one row per example, an image tile per input, then the grid."""
    images_per_row = max((len(row["images"]) for row in rows), default=0)
    width = images_per_row * (tile + 40) + 140 + depth * 22
    height = max(tile, 22 * len(modality_names)) * max(len(rows), 1) + 70 * max(len(rows), 1) + 20
    return width, height


def allocation_figure(rows: list[dict], modality_names: tuple[str, ...], depth: int, tile: int = 96) -> Figure:
    """rows: [{"images": [(title, HxW or HxWx3 array)], "mask": bool [M, depth], "caption": str}] → one figure row
    per example: the inputs (one view per modality), then the executed blocks per modality (filled = executed)."""
    size = allocation_size(rows, modality_names, depth, tile)
    if not rows:
        return message_figure("no allocation examples", "", size)
    images_per_row = max(len(row["images"]) for row in rows)
    figure = new_figure(*size)
    grid_width = (140 + depth * 22) / (tile + 40)
    subfigures = figure.subfigures(len(rows), 1, squeeze=False)[:, 0]
    for subfigure, row in zip(subfigures, rows):
        subfigure.suptitle(row.get("caption", ""), fontsize=9)
        axes = subfigure.subplots(1, images_per_row + 1, width_ratios=[1] * images_per_row + [grid_width],
                                  squeeze=False)[0]
        for image_axes in axes[:-1]:
            image_axes.set_axis_off()
        for image_axes, (title, array) in zip(axes, row["images"]):
            pixels, colormap = _displayable(array)
            image_axes.imshow(pixels, cmap=colormap, aspect="auto", interpolation="nearest")
            image_axes.set_title(title, fontsize=8)
        _draw_mask(axes[-1], np.asarray(row["mask"], dtype=bool), modality_names, depth)
    return figure


def _draw_mask(axes, mask: np.ndarray, modality_names: tuple[str, ...], depth: int) -> None:
    """mask bool [M, depth] as a grid of cells, filled where the block runs."""
    axes.imshow(mask[:, :depth].astype(np.float32), cmap="Blues", vmin=0, vmax=1.25, aspect="auto",
                interpolation="nearest")
    axes.set_yticks(range(len(modality_names)), labels=modality_names, fontsize=8)
    axes.set_xticks(range(depth), labels=[str(d) for d in range(depth)], fontsize=7)
    axes.set_xticks(np.arange(-0.5, depth), minor=True)
    axes.set_yticks(np.arange(-0.5, len(modality_names)), minor=True)
    axes.grid(which="minor", color="white", linewidth=1.5)
    axes.tick_params(which="minor", length=0)
    axes.set_xlabel("block (filled = executed)", fontsize=8)


def allocation_examples(rows: list[dict], path: str | Path, modality_names: tuple[str, ...], depth: int,
                        tile: int = 96) -> Path:
    """rows: [{"images": [(title, HxW or HxWx3 array)], "mask": bool [M, depth], "caption": str}] → PNG.

    Each row shows the inputs (one view per modality) and the chosen blocks per modality as a grid
    (filled = executed)."""
    return save_figure(allocation_figure(rows, modality_names, depth, tile), path)
