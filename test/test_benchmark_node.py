"""admn_node_benchmark (admn_ros.tools.benchmark_node) on a micro bundle: real node code paths, both inference paths."""

import pytest

from admn_core.bench import random_bundle
from admn_core.bundle import save_bundle
from admn_ros.tools.benchmark_node import format_report, measure, summarize

from model_fixtures import micro_config
from ros_fixtures import isolate_ros_environment

pytestmark = pytest.mark.ros


@pytest.mark.parametrize("fast_path", [True, False])
def test_node_benchmark_measures_every_stage_on_the_chosen_path(tmp_path, fast_path):
    isolate_ros_environment()
    bundle = save_bundle(tmp_path / "micro.safetensors", random_bundle(micro_config(), [6, 8], seed=2))
    result = measure(str(bundle), budget=8, repeats=3, warmup=1, fast_path=fast_path)
    assert result["inference_path"] == ("fast" if fast_path else "eager")
    assert len(result["rows"]) == 3 and result["allocation_source"] == "controller:budget_8"
    assert result["warmup_budgets"][:2] == [6, 8] and result["warmup_ms"] > 0
    summary = summarize(result)
    assert all(p50 > 0 for p50, _ in (summary["model_ms"], summary["sync_ms"], summary["decode_ms"]))
    report = format_report(result, summary)
    assert f"{result['inference_path']} path" in report and "NODE OVERHEAD" in report
