"""Figures: real PNGs of the promised size with drawn content, readable labels, and a message instead of a crash
when there is nothing to plot."""

import math

import numpy as np
from PIL import Image

from admn_core.eval.plots import allocation_examples, allocation_size, line_figure, line_plot
from admn_ros.bags.plots import plot_timeline, timeline_figure, timeline_size
from admn_ros.bags.replay_eval import FrameRecord


def records(count=40):
    return [FrameRecord(stamp_ns=i, status="ok" if i % 9 else "skipped_budget", budget=6 if i < count // 2 else 8,
                        active_blocks={"rgb": list(range(i % 7)), "depth": list(range(12 - i % 7))},
                        error_cm=20 + 10 * math.sin(i / 4), episode="gaussian" if 10 <= i < 20 else "clean",
                        t_s=50.0 + 0.1 * i)
            for i in range(count)]


def drawn_fraction(path) -> float:
    """Share of pixels that are not the white background."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    return float(np.mean(np.any(pixels < 245, axis=-1)))


def texts(figure) -> str:
    """Every label, title, tick label and legend entry of a figure, newline-joined."""
    from matplotlib.text import Text
    return "\n".join(t.get_text() for t in figure.findobj(Text))


def test_timeline_png_is_an_image_of_the_promised_size_with_labelled_axes(tmp_path):
    path = plot_timeline(records(), tmp_path / "plots" / "timeline.png", title="bag A")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == timeline_size(records())
    assert drawn_fraction(path) > 0.05
    labels = texts(timeline_figure(records(), title="bag A"))
    for expected in ("bag A", "error (cm)", "time since bag start (s)", "active blocks", "corruption episode",
                     "gaussian", "rgb", "depth"):
        assert expected in labels


def test_timeline_draws_the_baselines_error_beside_admns_on_the_same_time_axis(tmp_path):
    admn = records()
    naive = [FrameRecord(stamp_ns=r.stamp_ns, budget=r.budget, error_cm=r.error_cm + 15, t_s=r.t_s)
             for r in admn if r.ok and r.stamp_ns % 2]
    figure = timeline_figure(admn, title="bag A", baseline=naive, baseline_label="Naive Allocation")
    error_axes = figure.axes[0]
    lines = {line.get_label(): line for line in error_axes.get_lines()}
    assert {"ADMN", "Naive Allocation"} <= set(lines)
    assert list(lines["Naive Allocation"].get_xdata()) == [r.t_s - admn[0].t_s for r in naive]
    assert list(lines["Naive Allocation"].get_ydata()) == [r.error_cm for r in naive]
    assert {"ADMN", "Naive Allocation"} <= {t.get_text() for t in error_axes.get_legend().get_texts()}
    path = plot_timeline(admn, tmp_path / "timeline.png", baseline=naive)
    with Image.open(path) as image:
        assert image.size == timeline_size(admn)


def test_timeline_without_records_writes_a_figure_that_says_so(tmp_path):
    path = plot_timeline([], tmp_path / "empty.png")
    with Image.open(path) as image:
        assert image.size == timeline_size([])
    assert drawn_fraction(path) > 0.001
    assert "no records" in texts(timeline_figure([]))


def test_line_plot_names_every_series_and_skips_missing_values(tmp_path):
    series = {"ADMN": {6: 30.0, 8: 25.0, 12: 20.0}, "MNS": {6: 35.0, 8: float("nan"), 12: 22.0}}
    path = line_plot(series, tmp_path / "error_vs_budget.png", title="tiny / gaussian", size=(700, 400))
    with Image.open(path) as image:
        assert image.size == (700, 400)
    assert drawn_fraction(path) > 0.02
    figure = line_figure(series, title="tiny / gaussian")
    (axes,) = figure.axes
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["ADMN", "MNS"]
    assert [len(line.get_xdata()) for line in axes.get_lines()] == [3, 2]
    assert axes.get_xlabel() == "layer budget L" and "(cm)" in axes.get_ylabel()


def test_line_plot_without_values_writes_a_figure_that_says_so(tmp_path):
    path = line_plot({"ADMN": {6: float("nan")}}, tmp_path / "none.png")
    with Image.open(path) as image:
        assert image.size == (900, 560)
    assert "no results to plot" in texts(line_figure({}))


def test_allocation_examples_png_has_the_promised_size_and_content(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"images": [("rgb node_1", rng.random((16, 16, 3))), ("depth node_1", rng.random((16, 16))),
                        ("mic (log-mel)", rng.random((32, 10)))],
             "mask": rng.random((3, 12)) > 0.5, "caption": f"ADMN 12 | sample {k}"} for k in range(2)]
    path = allocation_examples(rows, tmp_path / "allocations.png", ("rgb", "depth", "mic"), 12)
    with Image.open(path) as image:
        assert image.size == allocation_size(rows, ("rgb", "depth", "mic"), 12)
    assert drawn_fraction(path) > 0.1


def test_allocation_examples_without_rows_writes_a_figure_instead_of_failing(tmp_path):
    path = allocation_examples([], tmp_path / "allocations.png", ("rgb", "depth"), 12)
    with Image.open(path) as image:
        assert image.format == "PNG"
    assert drawn_fraction(path) > 0.001
