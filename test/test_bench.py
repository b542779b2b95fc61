"""`admn bench` on a micro config: well-formed rows (figures are printed, never asserted: machines are noisy)."""

import json

import torch

from admn_core.allocation import mask_cost
from admn_core.bench import benchmark_budgets, format_table, mixed_masks, random_bundle
from admn_core.cli import main
from admn_core.runtime import InferenceEngine

from model_fixtures import micro_config


def test_benchmark_returns_well_formed_rows():
    config = micro_config()
    result = benchmark_budgets(config, [3, 6, 12, 36], repeats=2, warmup=1, reference_budget=36, fast=True,
                               throughput_batch=4, distinct_allocations=2, throughput_repeats=1)
    assert result["reference_budget"] == 36 and result["device"] == "cpu" and result["dtype"] == "float32"
    assert result["fast_dtype"] == "float32" and result["throughput_path"] == "fast"
    assert "threads=" in result["machine"]
    rows = result["rows"]
    assert [r["budget"] for r in rows] == [3, 6, 12, 36]
    for row in rows:
        assert sum(row["blocks_per_modality"].values()) <= row["budget"]
        assert row["flops_analytic"] > 0 and row["flops_counted"] > 0
        assert 0 < row["latency_ms_p50"] <= row["latency_ms_p90"]
        assert 0 < row["fast_latency_ms_p50"] <= row["fast_latency_ms_p90"]
        assert row["fast_max_abs_error"] < 1e-4
        assert row["grouped_samples_per_s"] > 0 and row["loop_samples_per_s"] > 0
        assert row["grouped_speedup"] > 0 and row["peak_memory_mb"]["eager"] > 0
    assert rows[-1]["latency_ratio_to_reference"] == 1.0 and rows[-1]["flops_ratio_to_reference"] == 1.0
    assert rows[-1]["controller_flops"] == 0 and rows[0]["controller_flops"] > 0
    share = result["controller_flop_share"]
    assert share["budget"] == 3 and 0 < share["share"] < 1
    table = format_table(result)
    print(table)
    assert "fast p50" in table and "controller share" in table and len(table.splitlines()) == 2 + 4 + 2 + 2
    # The controller alone is timed per budget and path; the fit splits latency into fixed + per-block parts.
    assert all(row["controller_ms_p50"] > 0 and row["fast_controller_ms_p50"] > 0 for row in rows[:-1])
    for path in ("eager", "fast"):
        fit = result["latency_model"][path]
        assert set(fit) == {"fixed_ms", "per_block_ms", "controller_ms"} and fit["controller_ms"] > 0
        assert f"{path}: latency ≈" in table
    json.dumps(result)


def test_benchmark_without_extras_keeps_the_old_table():
    result = benchmark_budgets(micro_config(), [3, 36], repeats=2, warmup=0, reference_budget=36)
    assert result["fast_dtype"] is None and result["rows"][0]["fast_latency_ms_p50"] is None
    assert "fast p50" not in format_table(result)


def test_mixed_masks_obey_the_budget_and_differ():
    config = micro_config()
    engine = InferenceEngine(random_bundle(config, [6]))
    masks = mixed_masks(engine, 6, 8, 4)
    assert masks.shape == (8, 3, 12) and masks[:, :, 0].all()
    assert (mask_cost(masks, engine.costs) <= 6).all()
    assert len({tuple(m.flatten().tolist()) for m in masks}) == 4
    assert torch.equal(masks[0], masks[4])


def test_cli_bench_writes_json(tmp_path, capsys, monkeypatch):
    import admn_core.cli as cli
    from admn_core import presets

    monkeypatch.setitem(presets.PRESETS, "tiny", micro_config)
    monkeypatch.setattr(cli, "PRESETS", presets.PRESETS)
    out = tmp_path / "bench.json"
    assert main(["bench", "--presets", "tiny", "--budgets", "3", "36", "--repeats", "2", "--fast", "--batch", "2",
                 "--throughput-repeats", "1", "--json", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results[0]["rows"][0]["fast_latency_ms_p50"] > 0
    assert "grouped/s" in capsys.readouterr().out
