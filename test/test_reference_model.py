"""Every published model in models/ (`admn publish RUN --out models/NAME.safetensors`, with NAME.json beside it): it
loads, is small enough to ship, names its data, and its recorded results reproduce from its recorded provenance."""

import contextlib
import hashlib
import io
import json
from pathlib import Path

import pytest

from admn_core.bundle import bundle_provenance, load_bundle, read_bundle_header
from admn_core.cli import main

MODELS = Path(__file__).resolve().parents[1] / "models"
MAX_BUNDLE_BYTES = 10 * 1000 * 1000
# CPU kernels (and so float rounding) differ between machines: a recorded mean error is reproduced when within
# 2 % of itself or 0.3 cm, whichever is larger.
RELATIVE_TOLERANCE, ABSOLUTE_TOLERANCE_CM = 0.02, 0.3


def published_models(folder: Path = MODELS) -> list[Path]:
    """The published bundles in `folder`: every .safetensors with its recorded results (.json) beside it."""
    return sorted(path for path in folder.glob("*.safetensors") if path.with_suffix(".json").is_file())


def _model_parameters(folder: Path = MODELS) -> list:
    models = published_models(folder)
    if not models:
        return [pytest.param(None, marks=pytest.mark.skip(
            reason=f"{folder} holds no published model yet (admn publish RUN --out models/NAME.safetensors)"))]
    return [pytest.param(path, id=path.stem) for path in models]


def check_published_model(bundle_path: Path) -> None:
    """`admn info` shows the provenance, the bundle loads and fits the size limit, its JSON names the same data."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        assert main(["info", str(bundle_path)]) == 0
    metadata = read_bundle_header(bundle_path)
    provenance = bundle_provenance(metadata)
    assert "  provenance:\n" in output.getvalue(), f"{bundle_path} carries no provenance: publish it with admn publish"
    assert f"    data_fingerprint: {provenance['data_fingerprint']}\n" in output.getvalue()
    assert bundle_path.stat().st_size <= MAX_BUNDLE_BYTES, f"{bundle_path} is over {MAX_BUNDLE_BYTES / 1e6:g} MB"
    bundle = load_bundle(bundle_path)
    assert bundle.controllers, f"{bundle_path} holds no controller"
    record = json.loads(bundle_path.with_suffix(".json").read_text())
    assert record["provenance"]["data_fingerprint"] == provenance["data_fingerprint"], \
        f"{bundle_path.with_suffix('.json').name} names other data than {bundle_path.name}"
    assert record["content_sha256"] == metadata["content_sha256"]
    assert record["bundle_sha256"] == hashlib.sha256(bundle_path.read_bytes()).hexdigest(), \
        f"{bundle_path} is not the bundle its .json recorded"
    assert {"Upper Bound", "Naive Alloc.", "ADMN", "ADMN universal"} <= set(record["table_cm"])


def check_results_reproduce(bundle_path: Path, work: Path) -> None:
    """Regenerate the test split from the recorded provenance, check it is the recorded data, re-evaluate the bundle
    and compare every recorded mean error."""
    from admn_core.data.dataset import WorldCacheDataset
    from admn_core.publish import cache_fingerprint, evaluate_bundle, regenerate_test_split
    from admn_core.train.pipeline import settings_from_dict

    provenance = bundle_provenance(read_bundle_header(bundle_path))
    world = json.loads(provenance["world"])
    if world.get("source") != "world":
        pytest.skip(f"{bundle_path.name} was tested on a {world.get('source')!r} split, which cannot be regenerated")
    root = regenerate_test_split(world, work / "test", workers=2)
    assert cache_fingerprint(root) == provenance["test_fingerprint"], \
        f"the test split regenerated from {provenance['world']} is not the one {bundle_path.name} was evaluated on"
    settings = settings_from_dict(json.loads(provenance["settings"]))
    results = evaluate_bundle(bundle_path, settings, WorldCacheDataset(root), work / "eval")
    recorded = json.loads(bundle_path.with_suffix(".json").read_text())["table_cm"]
    moved = []
    for method, row in recorded.items():
        for budget, error in row.items():
            now = results["table_cm"].get(method, {}).get(budget)
            tolerance = max(RELATIVE_TOLERANCE * error, ABSOLUTE_TOLERANCE_CM)
            if now is None or abs(now - error) > tolerance:
                moved.append(f"{method} L={budget}: recorded {error:.2f} cm, now {now} (tolerance ±{tolerance:.2f})")
    assert not moved, f"{bundle_path.name}: recorded mean errors not reproduced: " + "; ".join(moved)


@pytest.mark.parametrize("bundle_path", _model_parameters())
def test_published_model_loads_and_names_its_data(bundle_path):
    check_published_model(bundle_path)


@pytest.mark.slow
@pytest.mark.parametrize("bundle_path", _model_parameters())
def test_published_results_reproduce_from_the_recorded_provenance(bundle_path, tmp_path):
    check_results_reproduce(bundle_path, tmp_path)
