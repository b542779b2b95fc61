import pytest

from admn_core.config import ConfigError, ModalitySpec, ModelConfig, load_model_config
from admn_core.presets import PRESETS, preset_config


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
    with pytest.raises(ConfigError, match="covariance_scale must be > 0"):
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
