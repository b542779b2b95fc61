import json
from dataclasses import replace

import pytest

from admn_core.config import ConfigError, ModalitySpec, ModelConfig
from admn_core.presets import PRESETS, load_model_config, preset_config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_plain_dicts(name):
    config = preset_config(name)
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig.from_json(config.to_json()) == config
    assert all(spec.depth == 12 for spec in config.modalities)


def test_paper_preset_is_vit_b16_at_224_with_three_views():
    config = preset_config("paper")
    assert config.modality_names == ("rgb", "depth")
    rgb = config.modality("rgb")
    assert (rgb.embed_dim, rgb.num_heads, rgb.patch_size, rgb.input_size) == (768, 12, 16, (224, 224))
    assert config.sensor_keys[:3] == (("node_1", "rgb"), ("node_2", "rgb"), ("node_3", "rgb"))
    assert (config.fusion.dim, config.fusion.depth, config.fusion.heads) == (256, 6, 4)


def test_unknown_key_is_rejected_with_a_suggestion(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("preset: tiny\nfusion:\n  dpeth: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'dpeth'.*did you mean 'depth'"):
        load_model_config(path)


def test_yaml_override_on_a_preset(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("preset: tiny\nname: tiny_deep_fusion\nfusion:\n  depth: 4\n")
    config = load_model_config(path)
    assert config.fusion.depth == 4 and config.name == "tiny_deep_fusion"
    assert config.modalities == preset_config("tiny").modalities


def test_modalities_mapping_overrides_those_modalities_by_name(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("preset: tiny_rgbd\nmodalities: {rgb: {readout: cls}, depth: {readout: mean}}\n")
    config, base = load_model_config(path), preset_config("tiny_rgbd")
    assert [spec.readout for spec in config.modalities] == ["cls", "mean"]
    assert [replace(spec, readout=base_spec.readout) for spec, base_spec in zip(config.modalities, base.modalities,
                                                                                 strict=True)] == list(base.modalities)
    path.write_text("preset: tiny_rgbd\nmodalities: {rbg: {readout: cls}}\n")
    with pytest.raises(ConfigError, match=r"modalities: unknown key 'rbg'.*did you mean 'rgb'"):
        load_model_config(path)
    path.write_text("preset: tiny_rgbd\nmodalities: {rgb: {readuot: cls}}\n")
    with pytest.raises(ConfigError, match=r"modalities\.rgb: unknown key 'readuot'"):
        load_model_config(path)


def test_a_training_run_takes_a_model_file_instead_of_the_preset(tmp_path):
    from admn_core.train.pipeline import settings_from_dict, settings_model_config

    path = tmp_path / "model.yaml"
    path.write_text("preset: tiny_rgbd\nname: tiny_rgbd_cls\nmodalities: {rgb: {readout: cls}}\n")
    settings = settings_from_dict({"preset": "tiny_rgbd", "model": str(path)})
    assert settings_model_config(settings) == load_model_config(path)
    assert settings_model_config(settings_from_dict({"preset": "tiny_rgbd"})) == preset_config("tiny_rgbd")


def test_a_training_config_names_its_model_file_relative_to_itself(tmp_path, monkeypatch):
    """The same recipe trains the same model whichever directory `admn train` runs in (an installed share/ config
    next to its model file)."""
    from admn_core.train.pipeline import load_settings, settings_model_config

    recipe_dir = tmp_path / "share" / "config"
    recipe_dir.mkdir(parents=True)
    (recipe_dir / "model.yaml").write_text("preset: tiny_rgbd\nname: tiny_rgbd_cls\n"
                                           "modalities: {rgb: {readout: cls}}\n")
    (recipe_dir / "recipe.yaml").write_text("preset: tiny_rgbd\nmodel: model.yaml\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(recipe_dir / "recipe.yaml")
    assert settings.model == "../share/config/model.yaml"
    assert settings_model_config(settings).name == "tiny_rgbd_cls"
    monkeypatch.chdir(tmp_path / "share")
    assert load_settings("config/recipe.yaml").model == "config/model.yaml"


def test_wrong_types_and_missing_files_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match=r"fusion\.depth: expected an integer"):
        ModelConfig.from_dict({**preset_config("tiny").to_dict(), "fusion": {"depth": "six"}})
    with pytest.raises(ConfigError, match="config file not found"):
        load_model_config(tmp_path / "nope.yaml")


def test_invalid_modality_specs_explain_themselves():
    with pytest.raises(ConfigError, match="not divisible by patch_size"):
        ModalitySpec(name="rgb", kind="rgb", views=("a",), channels=3, input_size=(30, 32), patch_size=8,
                     embed_dim=32, num_heads=2)
    with pytest.raises(ConfigError, match="needs an `audio` frontend"):
        ModalitySpec(name="mic", kind="audio", views=("a",), channels=1, input_size=(16, 16), patch_size=8,
                     embed_dim=32, num_heads=2, norm_mean=(0.0,), norm_std=(1.0,))


def test_readout_pooling_and_covariance_scale_are_checked():
    from admn_core.config import FusionSpec, HeadSpec

    with pytest.raises(ConfigError, match="readout must be one of"):
        ModalitySpec(name="rgb", kind="rgb", views=("a",), channels=3, input_size=(32, 32), patch_size=8,
                     embed_dim=32, num_heads=2, readout="max")
    with pytest.raises(ConfigError, match="readout_grid must be in"):
        ModalitySpec(name="rgb", kind="rgb", views=("a",), channels=3, input_size=(32, 32), patch_size=8,
                     embed_dim=32, num_heads=2, readout="grid", readout_grid=5)
    with pytest.raises(ConfigError, match=r"fusion\.pooling must be one of"):
        FusionSpec(pooling="sum")
    with pytest.raises(ConfigError, match=r"covariance_scale must be in \[1e-06, "):
        HeadSpec(covariance_scale=0.0)
    paper = preset_config("paper")  # the paper preset keeps the official choices
    assert paper.modality("rgb").readout == "cls" and paper.fusion.pooling == "mean"
    assert paper.head.covariance_scale == 1.0


def test_layerdrop_warmup_matches_the_official_schedule():
    spec = preset_config("tiny").layerdrop
    rates = [spec.rate_at(epoch) for epoch in range(25)]
    assert rates[:9] == [0.0] * 9  # epochs 0–8
    assert all(abs(r - 0.1) < 1e-9 for r in rates[9:19])  # epochs 9–18
    assert all(abs(r - 0.2) < 1e-9 for r in rates[19:])  # 19+: capped at max_rate


def _tiny_with(**changes) -> dict:
    """The tiny preset as plain data with `changes` applied: {"fusion.depth": 0} sets data["fusion"]["depth"]."""
    data = preset_config("tiny").to_dict()
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        target = data
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[leaf] = value
    return data


@pytest.mark.parametrize("field, value, message", [
    ("modalities.0.depth", 10**6, r"model\.modalities\[0\]: modality 'rgb': depth must be in \[1, 64\], got 1000000"),
    ("modalities.0.embed_dim", 10**9, r"modalities\[0\]: modality 'rgb': embed_dim must be in \[1, 8192\]"),
    ("modalities.0.patch_size", 0, r"modalities\[0\]: modality 'rgb': patch_size must be in \[1, 8192\], got 0"),
    ("modalities.0.num_heads", 0, r"num_heads must be in \[1, 256\], got 0"),
    ("modalities.0.input_size", [0, 64], r"input_size must be in \[1, 8192\], got \(0, 64\)"),
    ("modalities.0.views", [str(i) for i in range(65)], r"views: at most 64 views, got 65"),
    ("modalities.0.norm_std", [0.0, 1.0, 1.0], r"norm_std must be in \[1e-06, "),
    ("modalities.0.mlp_ratio", float("inf"), r"modalities\[0\]\.mlp_ratio: expected a finite number, got inf"),
    ("modalities.2.audio.hop_length", 0, r"modalities\[2\]\.audio: audio\.hop_length must be in \[1, 65536\]"),
    ("fusion.depth", 0, r"model\.fusion: fusion\.depth must be in \[1, 64\], got 0"),
    ("fusion.dim", 10**5, r"fusion\.dim must be in \[1, 8192\]"),
    ("head.num_classes", 10**7, r"head\.num_classes must be in \[0, 100000\]"),
    ("head.min_variance", float("nan"), r"head\.min_variance: expected a finite number, got nan"),
    ("controller.stem_kernels", [3, 0, 3], r"controller\.stem_kernels must be in \[1, 8192\], got \(3, 0, 3\)"),
    ("controller.temperature", 0.0, r"controller\.temperature must be in \[1e-06, "),
    ("layerdrop.max_rate", 1.5, r"layerdrop\.max_rate must be in \[0.0, 1.0\], got 1.5"),
])
def test_out_of_range_values_are_rejected_naming_the_field(field, value, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(_tiny_with(**{field: value}))


def test_too_many_modalities_and_oversized_or_deep_json_are_rejected():
    data = preset_config("tiny").to_dict()
    many = [{**spec, "name": f"{spec['name']}_{i}"} for i in range(6) for spec in data["modalities"]]
    with pytest.raises(ConfigError, match=r"at most 16 modalities, got 18"):
        ModelConfig.from_dict({**data, "modalities": many})
    with pytest.raises(ConfigError, match=r"config: JSON nested deeper than 32 levels"):
        ModelConfig.from_json("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match=r"config: JSON of \d+ characters exceeds the limit"):
        ModelConfig.from_json(json.dumps({**data, "name": "x" * (1 << 20)}))
    brackets_in_strings = {**data, "name": "[" * 100}  # brackets inside a string are not nesting
    assert ModelConfig.from_json(json.dumps(brackets_in_strings)).name == "[" * 100


def test_yaml_files_are_bounded_too(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("preset: tiny\nfusion:\n  depth: 100000\n")
    with pytest.raises(ConfigError, match=r"model.yaml: .*fusion\.depth must be in \[1, 64\], got 100000"):
        load_model_config(path)
