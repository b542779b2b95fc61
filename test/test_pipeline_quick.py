"""The quick pipeline end to end: a loadable bundle whose controllers the InferenceEngine serves at every budget."""

import json

import pytest

from admn_core.allocation import maximum_budget, minimum_budget
from admn_core.runtime import InferenceEngine
from admn_core.train.pipeline import QUICK_OVERRIDES, load_settings


def test_quick_settings_and_strict_keys():
    settings = load_settings("config/train_tiny.yaml", quick=True)
    assert settings.data.train == QUICK_OVERRIDES["data"]["train"]
    from admn_core.config import ConfigError
    from admn_core.train.pipeline import settings_from_dict
    with pytest.raises(ConfigError):
        settings_from_dict({"stage1": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"stage1\.init must be mae or random"):
        settings_from_dict({"stage1": {"init": "imagenet"}})
    tiny = load_settings("config/train_tiny.yaml")  # the shipped world-results recipe (README, training notes)
    assert (tiny.preset, tiny.stage1.init) == ("tiny_rgbd", "random")
    # the from-scratch recipe: a clean phase with modality dropout, also for the scratch baselines
    assert 0 < tiny.stage1.clean_warmup_epochs < tiny.stage1.epochs and tiny.stage1.clean_modality_dropout > 0
    assert 0 < tiny.scratch.clean_warmup_epochs < tiny.scratch.epochs


def test_controller_gumbel_scale_setting_reaches_the_training_configs(tmp_path):
    from admn_core.train.pipeline import Pipeline, settings_from_dict

    default = Pipeline(settings_from_dict({"preset": "tiny_rgbd"}), tmp_path / "a")
    assert default._controller_config("corruption_supervised").gumbel_scale is None  # the preset's (0.1)
    paper = Pipeline(settings_from_dict({"preset": "tiny_rgbd", "controller": {"gumbel_scale": 1.0}}),
                     tmp_path / "b")
    assert paper._controller_config("corruption_supervised").gumbel_scale == 1.0
    assert paper._controller_config("corruption_supervised", universal=True).gumbel_scale == 1.0


@pytest.mark.slow
def test_quick_pipeline_bundle_serves_every_budget(tmp_path):
    from admn_core.data.world import World, WorldConfig
    from admn_core.train.pipeline import evaluate_from_disk, run_pipeline

    run_pipeline(tmp_path, quick=True, until="stage1")  # e.g. Stage 1 on a GPU machine
    run_dir = tmp_path / "gaussian"
    assert (run_dir / "stage1" / "model.safetensors").is_file()
    assert not (run_dir / "controllers").exists() and not (tmp_path / "bundle.safetensors").exists()
    stage1_seconds = json.loads((run_dir / "timings.json").read_text())["stage1"]
    run_pipeline(tmp_path, quick=True)  # continues: Stage 1 reused, its timing kept
    timings = json.loads((run_dir / "timings.json").read_text())
    assert timings["stage1"] == stage1_seconds and "controllers" in timings and "total" in timings
    evaluate_from_disk(run_dir)  # re-evaluation re-times "evaluate" only
    after = json.loads((run_dir / "timings.json").read_text())
    assert {k: v for k, v in after.items() if k != "evaluate"} == {k: v for k, v in timings.items() if k != "evaluate"}
    engine = InferenceEngine.from_bundle(tmp_path / "bundle.safetensors")
    assert {"admn_b6", "admn_b8", "universal"} <= set(engine.controller_infos)
    sample, _ = World(WorldConfig()).generate(0, "gaussian", 5)
    config = engine.config
    for budget in range(minimum_budget(config), maximum_budget(config) + 1):
        result = engine.infer(sample, budget)
        assert result.ran and result.allocation.budget_used <= budget
    results = json.loads((tmp_path / "gaussian" / "eval" / "results.json").read_text())
    for method in ("Upper Bound", "Naive Alloc.", "ADMN", "ADMN universal", "Naive Scratch", "MNS"):
        assert "6" in results["table_cm"][method]
    assert (tmp_path / "gaussian" / "eval" / "error_vs_budget.png").is_file()
    assert (tmp_path / "gaussian" / "eval" / "allocations.png").is_file()
    # Stage 1 validated on its own split every epoch (never on the test set).
    header, *rows = (tmp_path / "gaussian" / "stage1" / "run" / "metrics.csv").read_text().splitlines()
    assert "val_error" in header.split(",") and len(rows) == QUICK_OVERRIDES["stage1"]["epochs"]
    assert (tmp_path / "gaussian" / "data" / "val" / "manifest.json").is_file()
    # trained_baselines: false leaves Naive Scratch and MNS out (not loaded, not trained) and still evaluates.
    settings_path = run_dir / "settings.json"
    settings = json.loads(settings_path.read_text())
    settings["trained_baselines"] = False
    settings_path.write_text(json.dumps(settings))
    evaluate_from_disk(run_dir)
    table = json.loads((run_dir / "eval" / "results.json").read_text())["table_cm"]
    assert "ADMN" in table and "Naive Alloc." in table and "Naive Scratch" not in table and "MNS" not in table
    # controller.ablation_budgets: [] leaves ADMN_AE and plain ST out (the ≤ 30 min pipeline, README): the export
    # writes an ablation bundle without controllers and the evaluation still runs.
    settings["controller"]["ablation_budgets"] = []
    settings_path.write_text(json.dumps(settings))
    evaluate_from_disk(run_dir)
    table = json.loads((run_dir / "eval" / "results.json").read_text())["table_cm"]
    assert "ADMN" in table and "ADMN universal" in table
    assert "ADMN_AE" not in table and "ADMN plain ST" not in table
