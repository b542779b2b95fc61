"""The `make run` demo's pieces: model fallback, thermal profile, live view; and a very short end-to-end run (slow)."""

from pathlib import Path

import pytest

from admn_core.bench import random_bundle
from admn_core.bundle import save_bundle
from admn_ros.bags.replay_eval import FrameRecord
from admn_ros.nodes.thermal_monitor import ScriptedProfile
from admn_ros.tools import demo

from model_fixtures import micro_config
from ros_fixtures import isolate_ros_environment


def test_thermal_profile_heats_up_and_cools_down(tmp_path):
    path = demo.write_thermal_profile(tmp_path / "profile.yaml", 40.0)
    profile = ScriptedProfile.from_yaml(str(path))
    temperatures = [profile.celsius_at(t) for t in (0, 10, 18, 20, 40)]
    assert temperatures[0] == 45.0 and temperatures[2] >= 85.0 and temperatures[3] >= 85.0
    assert temperatures[-1] == 45.0
    command = demo.thermal_command(path, 40.0).argv
    assert "source:=scripted" in command and "use_sim_time:=false" in command


def test_live_view_shows_budget_allocation_bars_and_error():
    record = FrameRecord(1, budget=8, budget_used=8, source="controller:budget_8",
                         active_blocks={"rgb": [0, 3, 5, 7], "depth": [0, 1], "mic": [0, 9]}, position=(0.0, 0.0),
                         error_cm=12.5, episode="rgb:lowlight")
    lines = demo.render_view({"record": record, "t": 3.0, "budget": 8, "temperature": 81.0, "outputs": 40,
                              "mean_error": 20.0}, ["rgb", "depth", "mic"], 45.0)
    text = "\n".join(lines)
    assert "████░░░░░░░░  4/12" in text and "██░░░░░░░░░░  2/12" in text
    assert "81.0 °C" in text and "error   12.5 cm" in text and "rgb:lowlight" in text
    assert "waiting" in "\n".join(demo.render_view({}, ["rgb"], 45.0))


def test_missing_training_falls_back_to_a_random_bundle_loudly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "train_available", lambda: False)
    args = demo.parse_args(["--out", str(tmp_path / "demo"), "--train-out", str(tmp_path / "none")])
    path, origin = demo.get_bundle(args)
    assert origin == "RANDOM" and path.is_file()
    assert "RANDOM-WEIGHTS" in capsys.readouterr().out
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / "bundle.safetensors").write_bytes(b"x")
    path, origin = demo.get_bundle(demo.parse_args(["--train-out", str(trained)]))
    assert origin == "reused" and path == trained / "bundle.safetensors"


@pytest.mark.slow
def test_a_very_short_demo_run_writes_summary_csv_and_plot(tmp_path, capsys):
    isolate_ros_environment()
    bundle = save_bundle(tmp_path / "micro.safetensors",
                         random_bundle(micro_config(views=("node_1", "node_2", "node_3")), budgets=[6, 8], seed=1))
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--bundle", str(bundle), "--duration", "4"]) == 0
    printed = capsys.readouterr().out
    assert "per corruption episode" in printed and "offline vs live" in printed and "timings:" in printed
    for name in ("live_frames.csv", "offline_frames.csv", "summary.txt", "live_timeline.png"):
        assert (out / name).stat().st_size > 0


def _installed_prefix(root, files) -> Path:
    """A prefix laid out as colcon installs the package: ament index marker + share/admn_ros/<files>."""
    prefix = Path(root)
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "admn_ros").touch()
    for name in files:
        path = prefix / "share" / "admn_ros" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# installed {name}\n")
    return prefix


def test_demo_finds_its_training_config_in_the_installed_share_directory(tmp_path, monkeypatch):
    from admn_ros.tools import share

    prefix = _installed_prefix(tmp_path / "install", ["config/train_tiny_demo.yaml", "config/admn_node.yaml"])
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    monkeypatch.setattr(share, "SOURCE_TREE", tmp_path / "no_checkout")
    installed = prefix / "share" / "admn_ros" / "config"
    assert demo.train_settings(full_training=False) == ["--train-config", str(installed / "train_tiny_demo.yaml")]
    assert share.config_dir() == installed
    assert demo.train_settings(full_training=True) == []


def test_demo_refuses_to_switch_to_full_training_when_its_config_is_missing(tmp_path, monkeypatch):
    from admn_ros.tools import share

    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    monkeypatch.setattr(share, "SOURCE_TREE", tmp_path / "no_checkout")
    monkeypatch.setattr(share.sys, "prefix", str(tmp_path / "venv_without_share"))  # `make venv` links config/ there
    with pytest.raises(SystemExit, match=r"config/train_tiny_demo.yaml not found in any of: .*--full-training"):
        demo.train_settings(full_training=False)


def test_config_lookup_falls_back_to_the_source_tree(monkeypatch):
    from admn_ros.tools import share

    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)
    monkeypatch.setattr(share.sys, "prefix", "/nonexistent/venv")  # `make venv` links config/ into the venv
    checkout = Path(__file__).resolve().parents[1]
    assert share.config_file("train_tiny_demo.yaml") == checkout / "config" / "train_tiny_demo.yaml"
