"""The shipped reference model: installed by setup.py, linked by ament_register, found by share lookup, and the
default of admn_bringup."""

import runpy
import shutil
from pathlib import Path

import pytest
import setuptools

from admn_core.bench import random_bundle
from admn_core.bundle import save_bundle
from admn_ros.tools import bringup, share
from admn_ros.tools.ament_register import register

from model_fixtures import micro_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_installed_share(tmp_path, monkeypatch):
    """Neither the ament index nor <sys.prefix>/share knows the package: only share.SOURCE_TREE is searched."""
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    monkeypatch.setattr(share.sys, "prefix", str(tmp_path / "venv_without_share"))


def _checkout_with_model(root: Path) -> Path:
    """A source tree holding the config files and a (micro) reference model under models/."""
    shutil.copytree(ROOT / "config", root / "config")
    model = root / "models" / share.REFERENCE_MODEL
    model.parent.mkdir(parents=True)
    save_bundle(model, random_bundle(micro_config(), budgets=[6], seed=1))
    return model


def test_reference_model_is_found_in_the_installed_share_directory_first(tmp_path, monkeypatch):
    prefix = tmp_path / "install"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / share.PACKAGE).touch()
    installed = prefix / "share" / share.PACKAGE / "models" / share.REFERENCE_MODEL
    installed.parent.mkdir(parents=True)
    installed.write_bytes(b"bundle")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    monkeypatch.setattr(share, "SOURCE_TREE", tmp_path / "checkout")
    _checkout_with_model(tmp_path / "checkout")
    assert share.reference_model() == installed


def test_reference_model_missing_everywhere_names_every_place_searched(tmp_path, monkeypatch, no_installed_share):
    monkeypatch.setattr(share, "SOURCE_TREE", tmp_path / "checkout_without_models")
    with pytest.raises(FileNotFoundError) as raised:
        share.reference_model()
    message = str(raised.value)
    assert f"models/{share.REFERENCE_MODEL}" in message
    assert str(tmp_path / "checkout_without_models") in message and str(tmp_path / "venv_without_share") in message


def test_setup_installs_the_models_folder_into_the_share_directory(tmp_path, monkeypatch):
    shutil.copy(ROOT / "setup.py", tmp_path / "setup.py")
    (tmp_path / "models").mkdir()
    for name in ("reference_tiny_rgbd.safetensors", "reference_tiny_rgbd.json", "reference_tiny_rgbd.md",
                 "notes.txt"):
        (tmp_path / "models" / name).write_text(name)
    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(tmp_path)
    runpy.run_path("setup.py")
    data_files = dict(captured["data_files"])
    assert sorted(data_files["share/admn_ros/models"]) == [
        "models/reference_tiny_rgbd.json", "models/reference_tiny_rgbd.md", "models/reference_tiny_rgbd.safetensors"]


def test_register_links_the_models_folder_and_tolerates_a_checkout_without_one(tmp_path):
    source = tmp_path / "checkout"
    for name in ("package.xml", "launch", "config"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).symlink_to(ROOT / name)
    prefix = tmp_path / "venv"
    (prefix / "bin").mkdir(parents=True)
    register(prefix, source, scripts=[])
    assert (prefix / "share" / share.PACKAGE / "models").is_dir()
    assert not any((prefix / "share" / share.PACKAGE / "models").iterdir())
    model = _checkout_with_model_file(source)
    register(prefix, source, scripts=[])
    linked = prefix / "share" / share.PACKAGE / "models" / share.REFERENCE_MODEL
    assert linked.is_symlink() and linked.resolve() == model.resolve()


def _checkout_with_model_file(source: Path) -> Path:
    model = source / "models" / share.REFERENCE_MODEL
    model.parent.mkdir()
    model.write_bytes(b"bundle")
    return model


def test_bringup_defaults_to_the_reference_model(tmp_path, monkeypatch, no_installed_share):
    monkeypatch.setattr(share, "SOURCE_TREE", tmp_path / "checkout")
    model = _checkout_with_model(tmp_path / "checkout")
    specs = bringup.build_commands(bringup.parse_args([]), python="python3")
    (admn_node,) = [spec for spec in specs if spec.name == "admn_node"]
    assert f"model:={model}" in admn_node.argv
    given = tmp_path / "mine.safetensors"
    (admn_node,) = [spec for spec in bringup.build_commands(bringup.parse_args(["--model", str(given)]))
                    if spec.name == "admn_node"]
    assert f"model:={given}" in admn_node.argv


def test_bringup_without_a_reference_model_exits_with_the_places_searched(tmp_path, monkeypatch, capsys,
                                                                          no_installed_share):
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "config", checkout / "config")
    monkeypatch.setattr(share, "SOURCE_TREE", checkout)
    assert bringup.main(["--dry-run"]) == 2
    error = capsys.readouterr().err
    assert f"models/{share.REFERENCE_MODEL} not found" in error and str(checkout) in error and "--model" in error


SHIPPED = ROOT / "models" / share.REFERENCE_MODEL


@pytest.mark.skipif(not SHIPPED.is_file(), reason=f"models/{share.REFERENCE_MODEL} is not in this checkout yet "
                                                   "(trained by config/train_reference.yaml)")
def test_the_shipped_reference_model_reads_the_demo_bags_sensors_and_has_its_controllers():
    from admn_core.bundle import load_bundle
    from admn_core.presets import preset_config

    bundle = load_bundle(SHIPPED)
    # The demo bag's camera and depth streams are the tiny_rgbd preset's inputs (its microphones go unread)
    expected = [(m.name, tuple(m.views)) for m in preset_config("tiny_rgbd").modalities]
    assert [(m.name, tuple(m.views)) for m in bundle.config.modalities] == expected
    assert any(name.startswith("admn_b") for name in bundle.controllers), "no per-budget ADMN controller"
