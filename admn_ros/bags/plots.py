"""PNG timeline of a replay: error over time with corruption episodes (and a baseline's error on the same frames),
the budget, and per-modality allocation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.patches import Patch

from admn_core.eval.plots import message_figure, new_figure, save_figure

BLOCKS = 12
EPISODE_COLOR = "#ffe9a8"


def _modalities(records) -> list[str]:
    names: list[str] = []
    for record in records:
        names.extend(name for name in record.active_blocks if name not in names)
    return names


def _episodes(records) -> list[tuple[float, float, str]]:
    """Contiguous runs of one corruption label → [(start_s, end_s, label)]; clean frames form no episode."""
    runs: list[tuple[float, float, str]] = []
    end_s = records[-1].t_s
    start, label = None, None
    for record in [*records, None]:
        current = None if record is None or record.episode in ("", "clean") else record.episode
        if current != label:
            if label is not None:
                runs.append((start, record.t_s if record is not None else end_s, label))
            start, label = (record.t_s if record is not None else None), current
    return runs


def _cell_edges(times: np.ndarray) -> np.ndarray:
    """Frame times → edges of one cell per frame (midpoints between neighbours)."""
    if len(times) == 1:
        return np.array([times[0] - 0.5, times[0] + 0.5])
    middles = (times[1:] + times[:-1]) / 2
    return np.concatenate([[2 * times[0] - middles[0]], middles, [2 * times[-1] - middles[-1]]])


def timeline_size(records, width: int = 1200) -> tuple[int, int]:
    return width, 560 + 36 * len(_modalities(records))


def timeline_figure(records, title: str = "", width: int = 1200, baseline=None,
                    baseline_label: str = "Naive Allocation"):
    """Top: ADMN's error (cm) per frame with corruption episodes shaded, and `baseline`'s (records of another
    allocation on the same frames and budgets, e.g. Naive Allocation) when given. Then the budget, then one row per
    modality whose colour is the number of active blocks (0..12) of that frame; frames without an estimate are left
    blank."""
    title = title or "ADMN replay: error, budget and allocation over time"
    size = timeline_size(records, width)
    if not records:
        return message_figure("no records", title, size)
    records = sorted(records, key=lambda r: r.t_s)
    t0 = records[0].t_s
    times = np.array([r.t_s - t0 for r in records])
    modalities = _modalities(records)
    figure = new_figure(*size)
    rows = 3 if modalities else 2
    error_axes, budget_axes, *rest = figure.subplots(rows, 1, sharex=True,
                                                     height_ratios=[3, 1, 0.5 + 0.3 * len(modalities)][:rows])
    figure.suptitle(title)

    for start, end, label in _episodes(records):
        error_axes.axvspan(start - t0, end - t0, color=EPISODE_COLOR, linewidth=0)
        error_axes.annotate(label[:40], (start - t0, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -12),
                            textcoords="offset points", fontsize=8, color="#785a00")
    estimated = [(t, r.error_cm) for t, r in zip(times, records) if r.ok and r.error_cm is not None]
    if estimated:
        error_axes.plot(*zip(*estimated), color="tab:red", linewidth=1.5, label="ADMN", zorder=3)
    compared = sorted((r.t_s - t0, r.error_cm) for r in baseline or () if r.ok and r.error_cm is not None)
    if compared:  # under ADMN's line: where both agree (the full model) ADMN's stays visible
        error_axes.plot(*zip(*compared), color="tab:grey", linewidth=1.0, label=baseline_label, zorder=2)
    skipped = [t for t, r in zip(times, records) if not r.ok]
    if skipped:
        error_axes.plot(skipped, [0] * len(skipped), "|", color="grey", markersize=10, label="no estimate (skipped)")
    error_axes.set_ylim(bottom=0)
    error_axes.set_ylabel("error (cm)")
    error_axes.grid(True, alpha=0.3)
    error_axes.legend(handles=[*error_axes.get_legend_handles_labels()[0],
                               Patch(color=EPISODE_COLOR, label="corruption episode")], loc="upper right",
                      fontsize=8)

    budgets = [(t, r.budget) for t, r in zip(times, records) if r.budget is not None]
    if budgets:
        budget_axes.step(*zip(*budgets), where="post", color="tab:blue", linewidth=1.5)
    budget_axes.set_ylim(bottom=0)
    budget_axes.set_ylabel("budget\n(blocks)")
    budget_axes.grid(True, alpha=0.3)

    last_axes = budget_axes
    if modalities:
        last_axes = rest[0]
        blocks = np.array([[len(r.active_blocks.get(name, [])) if r.ok else np.nan for r in records]
                           for name in modalities])
        mesh = last_axes.pcolormesh(_cell_edges(times), np.arange(len(modalities) + 1), np.ma.masked_invalid(blocks),
                                    cmap="viridis", vmin=0, vmax=BLOCKS)
        last_axes.set_yticks(np.arange(len(modalities)) + 0.5, labels=modalities)
        last_axes.invert_yaxis()
        figure.colorbar(mesh, ax=last_axes, location="bottom", label=f"active blocks (of {BLOCKS})", aspect=60,
                        fraction=0.5)
    last_axes.set_xlabel("time since bag start (s)")
    return figure


def plot_timeline(records, path: str | Path, title: str = "", width: int = 1200, baseline=None,
                  baseline_label: str = "Naive Allocation") -> Path:
    """`timeline_figure` as a PNG at `path` (parents created)."""
    return save_figure(timeline_figure(records, title, width, baseline, baseline_label), path)
