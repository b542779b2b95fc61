"""Per-frame CSV, summary tables (per budget, per corruption episode) and offline/live comparison of FrameRecords."""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

CSV_FIELDS = ("stamp_ns", "stamp_s", "t_s", "status", "budget", "budget_origin", "budget_used", "source",
              "pred_x_m", "pred_y_m", "gt_x_m", "gt_y_m", "error_cm", "pred_class", "true_class", "episode",
              "corruption", "inference_ms", "reason")


def modalities_of(records) -> list[str]:
    names = []
    for record in records:
        for name in record.active_blocks:
            if name not in names:
                names.append(name)
    return names


def _fmt(value, digits=4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


class FrameCsv:
    """The per-frame CSV written row by row, each row flushed, so an interrupted run leaves a valid partial file.

    `modalities` fixes the allocation columns (blocks_<m>, active_<m>) up front."""

    def __init__(self, path: str | Path, modalities):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.modalities = list(modalities)
        self._file = open(self.path, "w", newline="")
        self._writer = csv.writer(self._file)
        header = list(CSV_FIELDS[:8]) + [f"blocks_{m}" for m in self.modalities]
        header += [f"active_{m}" for m in self.modalities] + list(CSV_FIELDS[8:])
        self._writer.writerow(header)
        self._file.flush()

    def write(self, r) -> None:
        pred = r.position or (None, None)
        truth = r.ground_truth or (None, None)
        row = [r.stamp_ns, f"{r.stamp_ns / 1e9:.9f}", f"{r.t_s:.3f}", r.status, _fmt(r.budget),
               r.budget_origin, _fmt(r.budget_used), r.source]
        row += [len(r.active_blocks[m]) if m in r.active_blocks else "" for m in self.modalities]
        row += [",".join(map(str, r.active_blocks[m])) if m in r.active_blocks else "" for m in self.modalities]
        row += [_fmt(pred[0]), _fmt(pred[1]), _fmt(truth[0]), _fmt(truth[1]), _fmt(r.error_cm, 2),
                _fmt(r.predicted_class), _fmt(r.true_class), r.episode, r.corruption, _fmt(r.inference_ms, 2),
                r.reason]
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_csv(records, path: str | Path, modalities=None) -> Path:
    """One row per synchronized set: stamp, budget, allocation per modality (count + blocks), prediction, truth.
    Written next to `path` and moved over it, so an existing file is replaced whole or not at all."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    with FrameCsv(partial, modalities_of(records) if modalities is None else modalities) as frames:
        for record in records:
            frames.write(record)
    os.replace(partial, path)
    return path


def _stats(errors) -> dict:
    errors = np.asarray(errors, dtype=np.float64)
    if errors.size == 0:
        return {"n": 0, "mean": float("nan"), "median": float("nan"), "p90": float("nan")}
    return {"n": int(errors.size), "mean": float(errors.mean()), "median": float(np.median(errors)),
            "p90": float(np.percentile(errors, 90))}


def _accuracy(correct) -> dict:
    return {"n": len(correct), "accuracy": 100.0 * float(np.mean(correct)) if correct else float("nan")}


def summarize(records) -> dict:
    """{'overall': stats, 'per_budget': {budget: stats+blocks}, 'per_episode': {label: stats+blocks}, counts}.
    stats: error n / mean / median / p90 (cm), or for a classifier's records (with class labels) n / accuracy (%)."""
    modalities = modalities_of(records)
    classification = any(r.true_class is not None for r in records)
    if classification:
        scored = [r for r in records if r.ok and r.correct is not None]
    else:
        scored = [r for r in records if r.ok and r.error_cm is not None]

    def group(key):
        groups = defaultdict(list)
        for r in scored:
            groups[key(r)].append(r)
        out = {}
        for name, rows in groups.items():
            stats = _accuracy([r.correct for r in rows]) if classification else _stats([r.error_cm for r in rows])
            stats["blocks"] = {m: float(np.mean([len(r.active_blocks.get(m, [])) for r in rows])) for m in modalities}
            out[name] = stats
        return out

    status_counts = defaultdict(int)
    for r in records:
        status_counts[r.status] += 1
    overall = group(lambda r: "all").get("all", _accuracy([]) if classification else _stats([]))
    return {"overall": overall, "task": "classification" if classification else "localization",
            "per_budget": dict(sorted(group(lambda r: r.budget).items())),
            "per_episode": group(lambda r: r.episode or "unlabelled"), "modalities": modalities,
            "sets": len(records), "status": dict(status_counts)}


def format_summary(summary: dict, title: str = "") -> str:
    modalities = summary["modalities"]
    short = {m: m[:5] for m in modalities}
    lines = [title] if title else []
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary["status"].items()))
    lines.append(f"{summary['sets']} synchronized sets ({counts})")
    classification = summary.get("task") == "classification"
    columns = ("accuracy",) if classification else ("mean", "median", "p90")
    head = f"{'':28s} {'n':>5s} " + " ".join(f"{c:>8s}" for c in columns) + "  " + " ".join(
        f"{short[m]:>5s}" for m in modalities)
    lines.append(head + ("   (accuracy %" if classification else "   (error cm") + "; mean active blocks per modality)")

    def row(label, stats):
        blocks = " ".join(f"{stats.get('blocks', {}).get(m, float('nan')):5.1f}" for m in modalities)
        values = " ".join(f"{stats[c]:8.1f}" for c in columns)
        return f"{label[:28]:28s} {stats['n']:5d} {values}  {blocks}"

    overall = dict(summary["overall"])
    lines.append(row("all", overall))
    lines.append("per budget")
    for budget, stats in summary["per_budget"].items():
        lines.append(row(f"  budget {budget}", stats))
    lines.append("per corruption episode")
    for label, stats in sorted(summary["per_episode"].items(), key=lambda item: (item[0] != "clean", item[0])):
        lines.append(row(f"  {label}", stats))
    return "\n".join(lines)


def pair_with_baseline(records, baseline) -> list[tuple]:
    """[(record, baseline record)] for each scored record whose stamp and budget the baseline also answered and
    scored: both allocations on the same frame under the same budget."""
    by_key = {(b.stamp_ns, b.budget): b for b in baseline if b.ok and b.error_cm is not None}
    return [(r, by_key[(r.stamp_ns, r.budget)]) for r in records
            if r.ok and r.error_cm is not None and (r.stamp_ns, r.budget) in by_key]


def _paired_stats(pairs, modalities) -> dict:
    admn = float(np.mean([r.error_cm for r, _ in pairs]))
    baseline = float(np.mean([b.error_cm for _, b in pairs]))
    ratio = admn / baseline if baseline > 0 else (float("inf") if admn > 0 else float("nan"))
    return {"n": len(pairs), "admn": admn, "baseline": baseline, "ratio": ratio, "saved_cm": baseline - admn,
            "blocks": {m: float(np.mean([len(r.active_blocks.get(m, [])) for r, _ in pairs])) for m in modalities}}


def compare_to_baseline(records, baseline) -> dict:
    """ADMN's records against a baseline's (e.g. Naive Allocation) on the same frames and budgets, grouped per
    corruption episode × budget, per episode (budgets pooled) and overall. Episodes keep the order in which the
    bag first shows them; budgets run from the largest down. `blocks`: ADMN's mean active blocks per modality."""
    modalities = modalities_of(records)
    pairs = sorted(pair_with_baseline(records, baseline), key=lambda pair: pair[0].t_s)
    by_episode_budget, by_episode = defaultdict(list), defaultdict(list)
    for pair in pairs:
        episode = pair[0].episode or "unlabelled"
        by_episode_budget[(episode, pair[0].budget)].append(pair)
        by_episode[episode].append(pair)
    episodes = list(by_episode)
    keys = sorted(by_episode_budget, key=lambda key: (episodes.index(key[0]), -key[1]))
    return {"modalities": modalities, "paired": len(pairs),
            "scored": sum(1 for r in records if r.ok and r.error_cm is not None),
            "per_episode_budget": {key: _paired_stats(by_episode_budget[key], modalities) for key in keys},
            "per_episode": {name: _paired_stats(rows, modalities) for name, rows in by_episode.items()},
            "overall": _paired_stats(pairs, modalities) if pairs else None}


def format_baseline_comparison(comparison: dict, baseline_name: str) -> str:
    """Two tables: per corruption episode × budget, then per episode with budgets pooled (and all frames)."""
    if not comparison["paired"]:
        return (f"ADMN vs {baseline_name}: no frame was answered under a budget {baseline_name} was evaluated at "
                "(nothing to compare)")
    modalities = comparison["modalities"]
    name = baseline_name.split()[0][:7]  # "Naive Allocation" -> "Naive"
    blocks_head = " ".join(f"{m[:5]:>5s}" for m in modalities)
    columns = f"{'n':>5s} {'ADMN':>7s} {name:>7s} {'ratio':>6s} {'saved':>6s}  {blocks_head}"

    def cells(stats) -> str:
        blocks = " ".join(f"{stats['blocks'][m]:5.1f}" for m in modalities)
        return (f"{stats['n']:5d} {stats['admn']:7.1f} {stats['baseline']:7.1f} {stats['ratio']:6.2f} "
                f"{stats['saved_cm']:6.1f}  {blocks}")

    lines = [f"ADMN vs {baseline_name} on the same {comparison['paired']} of {comparison['scored']} scored frames, "
             "each under the budget ADMN answered it with",
             f"(mean error cm; ratio ADMN/{baseline_name}, < 1: ADMN better; saved: cm ADMN saves; then ADMN's mean "
             "active blocks per modality)",
             f"{'episode':28s} {'budget':>6s} {columns}"]
    for (episode, budget), stats in comparison["per_episode_budget"].items():
        lines.append(f"{episode[:28]:28s} {budget:6d} {cells(stats)}")
    lines += ["per episode, all budgets", f"{'episode':35s} {columns}"]
    for episode, stats in comparison["per_episode"].items():
        lines.append(f"{episode[:35]:35s} {cells(stats)}")
    lines.append(f"{'all':35s} {cells(comparison['overall'])}")
    return "\n".join(lines)


def format_reading(result) -> str:
    """What was read (an EvalResult): messages read vs declared per topic, header-stamp and empty-depth counts."""
    width = max((len(topic) for topic in result.read_counts), default=0)
    lines = ["messages read / declared by the bag"]
    for topic, (read, declared) in result.read_counts.items():
        flag = "" if read == declared else "   <- differs"
        lines.append(f"  {topic:{width}s} {read:7d} / {declared:d}{flag}")
    stamp_problems = [f"  {topic}: {problem}" for topic, audit in result.stamps.items()
                      if (problem := audit.problem())]
    if stamp_problems:
        lines += ["header stamps", *stamp_problems]
    if result.empty_depth:
        lines.append("depth frames without one valid pixel (all zero or NaN): " + ", ".join(
            f"{view}/{modality} {count}" for (view, modality), count in sorted(result.empty_depth.items())))
    if result.interrupted:
        lines.append("interrupted (Ctrl-C): the results cover the part read before it")
    return "\n".join(lines)


def compare(offline, live) -> dict:
    """Join offline and live records by stamp; how closely do they agree?"""
    by_stamp = {r.stamp_ns: r for r in offline if r.ok}
    joined = [(by_stamp[r.stamp_ns], r) for r in live if r.ok and r.stamp_ns in by_stamp]
    same_alloc = sum(1 for a, b in joined if a.active_blocks == b.active_blocks and a.budget == b.budget)
    position_diff = [100.0 * math.dist(a.position, b.position) for a, b in joined
                     if a.position is not None and b.position is not None]
    error_diff = [abs(a.error_cm - b.error_cm) for a, b in joined if a.error_cm is not None and b.error_cm is not None]
    live_ok = [r for r in live if r.ok]
    return {"joined": len(joined), "live_outputs": len(live_ok), "offline_sets": len(by_stamp),
            "identical_allocations": same_alloc,
            "max_position_diff_cm": max(position_diff, default=float("nan")),
            "mean_position_diff_cm": float(np.mean(position_diff)) if position_diff else float("nan"),
            "max_error_diff_cm": max(error_diff, default=float("nan")),
            "differing_stamps": [a.stamp_ns for a, b in joined if a.active_blocks != b.active_blocks][:20]}


def format_comparison(c: dict) -> str:
    if not c["joined"]:
        return "offline vs live: no common stamps"
    return (f"offline vs live on {c['joined']} common stamps: identical allocations {c['identical_allocations']}/"
            f"{c['joined']}, position difference mean {c['mean_position_diff_cm']:.4f} cm, max "
            f"{c['max_position_diff_cm']:.4f} cm; error difference max {c['max_error_diff_cm']:.4f} cm")


def find_gaps(expected_stamps, output_stamps, period_s: float, min_missing: int = 3) -> list[tuple[int, int, int]]:
    """Runs of >= min_missing consecutive expected sets without an output: [(first_ns, last_ns, count)]."""
    have = set(output_stamps)
    gaps, run = [], []
    for stamp in sorted(expected_stamps):
        if stamp in have:
            if len(run) >= min_missing:
                gaps.append((run[0], run[-1], len(run)))
            run = []
        else:
            run.append(stamp)
    if len(run) >= min_missing:
        gaps.append((run[0], run[-1], len(run)))
    return gaps
