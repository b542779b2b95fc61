"""`admn publish`: a finished run's bundle as a published model with provenance and recorded results, on a small real
run directory (world caches, settings, timings, a tiny-preset bundle with random weights)."""

import hashlib
import json
from dataclasses import asdict

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from admn_core.bench import random_bundle
from admn_core.bundle import BundleError, ControllerInfo, build_controller, content_digest, load_bundle, save_bundle
from admn_core.cli import main
from admn_core.data.cache import write_cache
from admn_core.data.world import WorldConfig
from admn_core.presets import preset_config
from admn_core.publish import PublishError, cache_fingerprint, publish_run, regenerate_test_split
from admn_core.train.pipeline import load_settings

TRAIN_CONFIG = "config/train_tiny_demo.yaml"
PROVENANCE_FIELDS = {"command", "seed", "settings", "package_version", "git_commit", "created", "machine", "torch",
                     "training_wall_s", "storage_dtype", "data_fingerprint", "test_fingerprint", "world"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """`<out>/gaussian/` as `admn train --train-config config/train_tiny_demo.yaml --quick` leaves it."""
    run = tmp_path_factory.mktemp("out") / "gaussian"
    settings = load_settings(TRAIN_CONFIG, quick=True)
    data = settings.data
    for split, count, seed in (("train", data.train, data.train_seed), ("test", data.test, data.test_seed)):
        write_cache(run / "data" / split, count, settings.corruption, seed, WorldConfig(seed=data.world_seed))
    (run / "settings.json").write_text(json.dumps(asdict(settings), indent=1))
    (run / "timings.json").write_text(json.dumps({"data": 1.5, "stage1": 20.25, "total": 30.5}))
    config = preset_config(settings.preset)
    bundle = random_bundle(config, budgets=[], seed=4)
    infos = [ControllerInfo(f"admn_b{b}", b, variant="corruption_supervised") for b in settings.budgets]
    infos.append(ControllerInfo("universal", None, kind="universal", variant="corruption_supervised"))
    for info in infos:
        bundle.controllers[info.name] = build_controller(config, info)
        bundle.controller_infos[info.name] = info
    bundle.extra = {"corruption": settings.corruption, "seed": str(settings.seed)}
    save_bundle(run / "bundle.safetensors", bundle)
    return run


@pytest.fixture(scope="module")
def published(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "reference.safetensors"
    assert main(["publish", str(run_dir), "--out", str(out), "--threads", "1"]) == 0
    return out


def test_published_bundle_carries_its_provenance_under_the_content_hash(run_dir, published, tmp_path):
    bundle = load_bundle(published)
    provenance = {k.removeprefix("provenance."): v for k, v in bundle.extra.items() if k.startswith("provenance.")}
    assert set(provenance) == PROVENANCE_FIELDS
    assert bundle.extra["corruption"] == "gaussian"  # the run's own extras are kept
    assert provenance["command"] == (f"admn train --train-config {TRAIN_CONFIG} --quick --out {run_dir.parent} "
                                     f"--seed 100")
    assert provenance["training_wall_s"] == "30.50" and provenance["seed"] == "100"
    assert provenance["storage_dtype"] == "float32"
    assert json.loads(provenance["settings"]) == json.loads((run_dir / "settings.json").read_text())
    world = json.loads(provenance["world"])
    assert world == {"source": "world", "corruption": "gaussian", "world_seed": 0, "test_seed": 1, "test_samples": 6,
                     "train_seed": 0, "train_samples": 12}
    fingerprints = {split: cache_fingerprint(run_dir / "data" / split) for split in ("train", "test")}
    assert provenance["test_fingerprint"] == fingerprints["test"] != fingerprints["train"]
    assert provenance["data_fingerprint"] == hashlib.sha256(json.dumps(fingerprints, sort_keys=True).encode()
                                                            ).hexdigest()
    run_weights = load_bundle(run_dir / "bundle.safetensors").model.state_dict()
    assert all(torch.equal(v, run_weights[k]) for k, v in bundle.model.state_dict().items())

    with safe_open(str(published), framework="pt") as handle:  # a changed provenance field breaks the hash
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    assert metadata["content_sha256"] == content_digest(tensors, metadata)
    metadata["extra.provenance.seed"] = "7"
    save_file(tensors, str(tmp_path / "edited.safetensors"), metadata=metadata)
    with pytest.raises(BundleError, match="content_sha256"):
        load_bundle(tmp_path / "edited.safetensors")


def test_published_results_record_the_tables_and_match_the_bundle(published):
    record = json.loads(published.with_suffix(".json").read_text())
    assert (record["format"], record["format_version"], record["bundle"]) == ("admn-published-model", 1,
                                                                              published.name)
    assert record["bundle_sha256"] == hashlib.sha256(published.read_bytes()).hexdigest()
    with safe_open(str(published), framework="pt") as handle:
        metadata = handle.metadata()
    assert record["content_sha256"] == metadata["content_sha256"]
    assert {k: v for k, v in record["provenance"].items() if k != "evaluated_on"} == {
        k.removeprefix("extra.provenance."): v for k, v in metadata.items() if k.startswith("extra.provenance.")}
    table = record["table_cm"]
    assert {"Upper Bound", "Naive Alloc.", "ADMN", "ADMN universal"} <= set(table)
    assert set(table["ADMN"]) == {"6", "8"} and set(table["ADMN universal"]) == {"5", "6", "8"}
    assert all(value > 0 for row in table.values() for value in row.values())
    by_condition = record["error_by_condition_cm"]["ADMN"]["6"]
    assert by_condition and all(value > 0 for value in by_condition.values())
    blocks = record["blocks_by_condition"]
    assert set(blocks) == {"6", "8"}
    for budget, per_condition in blocks.items():
        assert set(per_condition) == set(by_condition)
        assert all(sum(row.values()) <= int(budget) for row in per_condition.values())  # blocks ≤ budget (cost 1)
    assert record["evaluation"]["test_samples"] == 6 and "half_precision" not in record

    markdown = published.with_suffix(".md").read_text()
    assert "| Method | L=6 | L=8 |" in markdown and f"| ADMN | {table['ADMN']['6']:.1f} |" in markdown
    assert "blocks per modality by condition at L=6" in markdown
    assert record["provenance"]["data_fingerprint"] in markdown and record["provenance"]["created"] in markdown


def test_info_prints_the_provenance(published, capsys):
    assert main(["info", str(published)]) == 0
    output = capsys.readouterr().out
    assert "content sha256" in output and "\n  provenance:\n" in output
    record = json.loads(published.with_suffix(".json").read_text())
    assert f"    data_fingerprint: {record['provenance']['data_fingerprint']}\n" in output
    assert f"    command: {record['provenance']['command']}\n" in output


def test_recorded_world_regenerates_the_same_test_split(published, tmp_path):
    provenance = json.loads(published.with_suffix(".json").read_text())["provenance"]
    root = regenerate_test_split(json.loads(provenance["world"]), tmp_path / "test")
    assert cache_fingerprint(root) == provenance["test_fingerprint"]


def test_half_precision_publication_halves_the_file_and_reports_the_change(run_dir, tmp_path, capsys):
    out = tmp_path / "half.safetensors"
    assert main(["publish", str(run_dir), "--out", str(out), "--half", "--threads", "1"]) == 0
    assert "float16 storage moved the test errors by at most" in capsys.readouterr().out
    with safe_open(str(out), framework="pt") as handle:
        assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"F16"}
    assert out.stat().st_size < 0.55 * (run_dir / "bundle.safetensors").stat().st_size
    record = json.loads(out.with_suffix(".json").read_text())
    half = record["half_precision"]
    assert record["provenance"]["storage_dtype"] == "float16"
    assert set(half["relative_change"]) == set(record["table_cm"])
    assert all(set(half["relative_change"][m]) == set(row) for m, row in record["table_cm"].items())
    assert 0 <= half["max_abs_relative_change"] < half["limit"] == 0.01 and half["moved"] == []
    assert "float16 storage vs the float32 run bundle" in out.with_suffix(".md").read_text()


def test_half_precision_beyond_the_limit_publishes_nothing(run_dir, tmp_path):
    out = tmp_path / "models" / "half.safetensors"
    with pytest.raises(PublishError, match=r"float16 storage moves .*L=6.*publish in float32"):
        publish_run(run_dir, out, half=True, max_half_change=0.0)  # every change, even none, is "too much"
    assert list(out.parent.iterdir()) == []  # no bundle, JSON, Markdown or staging folder left behind


def test_unfinished_runs_and_existing_models_are_refused_with_a_message(run_dir, published, tmp_path, capsys):
    unfinished = tmp_path / "gaussian"
    unfinished.mkdir()
    (unfinished / "settings.json").write_text((run_dir / "settings.json").read_text())
    assert main(["publish", str(unfinished), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "not a finished training run (no timings.json)" in capsys.readouterr().err
    (unfinished / "timings.json").write_text(json.dumps({"data": 1.0}))
    (unfinished / "bundle.safetensors").write_bytes((run_dir / "bundle.safetensors").read_bytes())
    assert main(["publish", str(unfinished), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "has no total: the run did not finish" in capsys.readouterr().err
    before = published.read_bytes()
    assert main(["publish", str(run_dir), "--out", str(published)]) == 2
    assert "already exist" in capsys.readouterr().err and published.read_bytes() == before
    assert main(["publish", str(run_dir), "--out", str(tmp_path / "m.pt")]) == 2
    assert "must name a .safetensors file" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()
