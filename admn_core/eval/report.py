"""Markdown tables from evaluation results (paper Table 1 / Table 8 shapes)."""

from __future__ import annotations

METHOD_ORDER = ("Upper Bound", "Naive Scratch", "MNS", "Naive Alloc.", "rgb only", "depth only", "mic only",
                "ADMN_AE", "ADMN plain ST", "ADMN universal", "ADMN")


def _fmt(value) -> str:
    return "—" if value is None or value != value else f"{value:.1f}"


def results_markdown(results: dict) -> str:
    budgets = [str(b) for b in results["budgets"]]
    table = results["table_cm"]
    methods = [m for m in METHOD_ORDER if m in table] + [m for m in table if m not in METHOD_ORDER]
    lines = [f"### {results['preset']} / {results['corruption']} — mean localization error (cm), seed "
             f"{results['seed']}, {results['test_samples']} test samples",
             "", "| Method | " + " | ".join(f"L={b}" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(_fmt(table[method].get(b)) for b in budgets) + " |")
    extra = {b: v for b, v in table.get("ADMN universal", {}).items() if b not in budgets}
    if extra:
        lines += ["", "ADMN universal at other budgets: " + ", ".join(f"L={b}: {_fmt(v)} cm" for b, v in
                                                                      sorted(extra.items(), key=lambda x: int(x[0])))]
    costs = results.get("costs", {})
    if costs:
        with_mns = any("mns_gflops" in costs.get(b, {}) for b in budgets)  # runs without the MNS baseline lack it
        mns_head, mns_rule = (" MNS GFLOPs |", "---|") if with_mns else ("", "")
        lines += ["", f"| Budget | Naive GFLOPs | ADMN GFLOPs (incl. controller) |{mns_head} Naive ms | ADMN ms |",
                  f"|---|---|---|{mns_rule}---|---|"]
        for b in budgets:
            row = costs.get(b, {})
            mns = f" {row.get('mns_gflops', float('nan')):.3f} |" if with_mns else ""
            lines.append(f"| {b} | {row.get('naive_gflops', float('nan')):.3f} | "
                         f"{row.get('admn_gflops', float('nan')):.3f} |{mns} "
                         f"{row.get('naive_latency_ms', float('nan')):.1f} | "
                         f"{row.get('admn_latency_ms', float('nan')):.1f} |")
        upper = results.get("upper_bound", {})
        lines.append(f"| all ({upper.get('gflops', 0):.3f} GFLOPs) | | |{' |' if with_mns else ''} "
                     f"{upper.get('latency_ms', 0):.1f} | |")
        lines += ["", f"Latency: batch 1, median, CPU — {results.get('machine', '?')}"]
    return "\n".join(lines) + "\n"


def layerdrop_markdown(results: dict) -> str:
    ablation = results.get("layerdrop_ablation", {})
    if not ablation:
        return ""
    lines = ["### LayerDrop ablation (paper Table 8 shape): error (cm) as blocks are removed from every backbone", "",
             "| Blocks per backbone | With LayerDrop | Without LayerDrop |", "|---|---|---|"]
    for layers, row in sorted(ablation.items(), key=lambda x: -int(x[0])):
        lines.append(f"| {layers} | {_fmt(row.get('with_layerdrop'))} | {_fmt(row.get('without_layerdrop'))} |")
    return "\n".join(lines) + "\n"


def condition_markdown(results: dict, budgets: tuple[int, ...] = (6, 8)) -> str:
    """Error (cm) per corruption condition at the given budgets: where each method wins or loses."""
    detail = results.get("detail", {})
    lines = []
    for budget in (str(b) for b in budgets):
        rows = {m: detail[m][budget]["error_by_condition"] for m in METHOD_ORDER + tuple(detail)
                if budget in detail.get(m, {}) and "error_by_condition" in detail[m][budget]}
        if not rows:
            continue
        conditions = sorted({c for row in rows.values() for c in row})
        lines += [f"### Error (cm) by corruption condition at L={budget}", "",
                  "| Method | " + " | ".join(conditions) + " |", "|---|" + "---|" * len(conditions)]
        lines += [f"| {m} | " + " | ".join(_fmt(row.get(c)) for c in conditions) + " |" for m, row in rows.items()]
        lines.append("")
    return "\n".join(lines)


def combined_markdown(all_results: dict[str, dict]) -> str:
    return "\n".join(results_markdown(r) + "\n" + condition_markdown(r) + "\n" + layerdrop_markdown(r)
                     for r in all_results.values())
