"""Corruption statistics, seeding and the dataset presets."""

import math
from collections import Counter

import numpy as np
import pytest

from admn_core.data.corruptions import CorruptionSpec, apply_corruption, get_preset
from admn_core.data.corruptions.audio_noise import background_noise
from admn_core.data.corruptions.depth import gaussian_noise_depth
from admn_core.data.corruptions.image import (
    blur_sigma_pixels,
    gaussian_blur,
    gaussian_noise_rgb,
    lowlight,
    rain_and_haze,
)
from admn_core.data.errors import CorruptionError
from admn_core.data.world import World


@pytest.fixture(scope="module")
def world():
    return World()


@pytest.fixture(scope="module")
def clean(world):
    sample, _ = world.generate(4, "clean")
    return sample


def _high_frequency_energy(image: np.ndarray) -> float:
    grey = image.astype(np.float64).mean(axis=-1)
    laplacian = 4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    return float(np.mean(laplacian**2))


def test_lowlight_lowers_mean_intensity_more_when_severe(clean):
    image = clean[("node_1", "rgb")]
    medium, severe = lowlight(image, 5.0, 0), lowlight(image, 100.0, 0)
    assert medium.mean() < 0.7 * image.mean()
    assert severe.mean() < medium.mean()
    # Official step 4: +30 on blue after |0.5x + 10|: a black frame becomes ≈ (10, 10, 40).
    assert severe[..., 2].mean() > severe[..., 0].mean() + 20


def test_blur_lowers_high_frequency_energy(clean):
    image = clean[("node_2", "rgb")]
    original = _high_frequency_energy(image)
    medium = _high_frequency_energy(gaussian_blur(image, 51))
    severe = _high_frequency_energy(gaussian_blur(image, 201))
    assert medium < 0.3 * original
    assert severe < medium


def test_blur_sigma_follows_opencv_and_scales_with_width():
    assert blur_sigma_pixels(51, 224) == pytest.approx(8.0)
    assert blur_sigma_pixels(201, 224) == pytest.approx(30.5)
    assert blur_sigma_pixels(51, 64) == pytest.approx(8.0 * 64 / 224)
    constant = np.full((20, 30, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(gaussian_blur(constant, 51), constant)  # weights sum to one, borders reflect


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.1])
def test_rgb_noise_sigma_matches_on_the_unit_scale(sigma):
    grey = np.full((256, 256, 3), 128, dtype=np.uint8)
    noisy = gaussian_noise_rgb(grey, sigma, seed=1)
    measured = (noisy.astype(np.float64) - 128).std() / 255.0
    assert measured == pytest.approx(sigma, rel=0.03)


def test_native_resolution_noise_is_clamped_per_native_pixel_then_averaged():
    # The official order: noise on the larger native frame, clamp, resize. Averaging k² draws divides the spread by
    # k and leaves the mean of the clamped values as it was (the mean is what carries the image under strong noise).
    dark = np.full((96, 96, 3), 40, dtype=np.uint8)
    plain = gaussian_noise_rgb(dark, 1.0, seed=3).astype(np.float64)
    native = gaussian_noise_rgb(dark, 1.0, seed=3, native_factor=3).astype(np.float64)
    assert native.mean() == pytest.approx(plain.mean(), abs=1.5)
    assert plain.mean() > 40 + 50  # clamping at 0 lifts a dark image under σ = 1
    assert native.std() == pytest.approx(plain.std() / 3, rel=0.05)
    grey = np.full((128, 128, 3), 128, dtype=np.uint8)  # small σ, no clamping: σ / k on the unit scale
    measured = (gaussian_noise_rgb(grey, 0.06, seed=4, native_factor=2).astype(np.float64) - 128).std() / 255.0
    assert measured == pytest.approx(0.03, rel=0.05)
    with pytest.raises(CorruptionError, match="native_factor"):
        gaussian_noise_rgb(grey, 1.0, seed=0, native_factor=0)


def test_the_world_adds_rgb_noise_at_its_native_resolution():
    from admn_core.data.cache import world_settings
    from admn_core.data.errors import WorldConfigError
    from admn_core.data.world import WorldConfig, native_noise_factor
    from admn_core.presets import preset_config

    assert native_noise_factor(8) == 3 and native_noise_factor(16) == 2  # tiny (64 px, 8-px patches), paper
    assert WorldConfig().rgb_noise_native_factor == 3
    assert WorldConfig.from_model_config(preset_config("paper")).rgb_noise_native_factor == 2
    assert world_settings(WorldConfig())["rgb_noise_native_factor"] == 3
    assert "rgb_noise_native_factor" not in world_settings(WorldConfig(rgb_noise_native_factor=1))
    with pytest.raises(WorldConfigError, match="rgb_noise_native_factor"):
        WorldConfig(rgb_noise_native_factor=0)
    grey = np.full((64, 64, 3), 128, dtype=np.uint8)
    spec = CorruptionSpec("gaussian", 1, 1.0)
    from admn_core.data.corruptions import CorruptionContext
    native = apply_corruption(spec, "rgb", grey, 5, CorruptionContext(rgb_noise_native_factor=3))
    plain = apply_corruption(spec, "rgb", grey, 5)
    assert native.std() < plain.std() / 2.5


def test_depth_noise_sigma_is_in_full_scale_units():
    depth = np.full((200, 200), 5000, dtype=np.uint16)
    noisy = gaussian_noise_depth(depth, 0.01, full_scale_mm=10000.0, seed=2)
    assert (noisy.astype(np.float64) - 5000).std() == pytest.approx(100.0, rel=0.03)
    clamped = gaussian_noise_depth(depth, 0.75, full_scale_mm=10000.0, seed=2)
    assert clamped.max() <= 10000 and clamped.min() == 0  # paper: noise, then clamp to [0, 1]


def test_corruptions_are_seeded_and_pure(clean):
    image = clean[("node_3", "rgb")]
    before = image.copy()
    for spec in (CorruptionSpec("gaussian", 2, 2.0), CorruptionSpec("lowlight", 1, 5.0),
                 CorruptionSpec("rain", 1, 0.8), CorruptionSpec("occlusion", 1, 0.3)):
        first = apply_corruption(spec, "rgb", image, 11)
        again = apply_corruption(spec, "rgb", image, 11)
        other = apply_corruption(spec, "rgb", image, 12)
        np.testing.assert_array_equal(first, again)
        assert not np.array_equal(first, other)
    np.testing.assert_array_equal(image, before)


def test_rain_and_haze_veils_far_pixels_more(clean, world):
    _, scene_depth = world.render_cameras((0.0, 0.0), 0.0, 1.0, np.random.default_rng(0))
    image = clean[("node_1", "rgb")]
    depth = scene_depth["node_1"]
    rainy = rain_and_haze(image, depth, 1.0, seed=3).astype(float)
    change = np.abs(rainy - image.astype(float)).mean(axis=-1)
    far, near = depth > np.percentile(depth, 80), depth < np.percentile(depth, 20)
    assert change[far].mean() > change[near].mean()


def test_background_noise_level_follows_the_snr_against_the_fixed_reference():
    silent = np.zeros(16000, dtype=np.float32)
    for snr in (0.0, -10.0, -20.0):
        noisy = background_noise(silent, "fan", snr, reference_rms=0.01, sample_rate=16000, seed=4)
        rms = float(np.sqrt(np.mean(noisy**2)))
        expected = 0.01 * 10 ** (-snr / 20)
        assert expected * 10 ** (-6.5 / 20) <= rms <= expected * 10 ** (6.5 / 20)  # ± the per-node jitter


def test_saturation_replaces_depth_by_the_worlds_frame(world):
    plan = {(view, "depth"): CorruptionSpec("saturation", 1, 1.0) for view in world.config.views}
    first, _ = world.generate(1, "clean", plan=plan)
    second, _ = world.generate(2, "clean", plan=plan)
    frame = first[("node_1", "depth")]
    np.testing.assert_array_equal(frame, second[("node_1", "depth")])  # carries no trace of the car
    assert (frame == 0).mean() > 0.5  # a blinded IR sensor mostly returns nothing


def test_invalid_corruptions_raise_clear_errors(clean):
    with pytest.raises(CorruptionError, match="does not apply to depth"):
        apply_corruption(CorruptionSpec("blur", 1, 51), "depth", clean[("node_1", "depth")], 0)
    with pytest.raises(CorruptionError, match="odd"):
        gaussian_blur(clean[("node_1", "rgb")], 50)
    with pytest.raises(CorruptionError, match="unknown corruption category"):
        CorruptionSpec("snow", 1, 1.0)
    with pytest.raises(CorruptionError, match="uint8"):
        lowlight(clean[("node_1", "depth")], 5.0, 0)


def test_lowlight_preset_splits_the_three_conditions_equally(world):
    preset = get_preset("lowlight")
    counts = Counter()
    rng = np.random.default_rng(0)
    for _ in range(600):
        plan = preset.draw(rng, world.config.sensor_kinds, world.config.views)
        counts[(plan[("node_1", "rgb")].value, plan[("node_1", "depth")].category)] += 1
        assert len({plan[(v, "rgb")] for v in world.config.views}) == 1  # shared across nodes (paper A.3)
    assert set(counts) == {(0.0, "saturation"), (5.0, "clean"), (100.0, "clean")}
    assert min(counts.values()) > 150


def test_gaussian_preset_labels_carry_the_paper_sigmas(world):
    seen_rgb, seen_depth = set(), set()
    for index in range(40):
        _, target = world.generate(index, "gaussian")
        seen_rgb.add(float(target["corruption"]["rgb"]["value"]))
        seen_depth.add(float(target["corruption"]["depth"]["value"]))
        assert target["corruption"]["mic"]["category"] == "clean"
    assert seen_rgb == {0.0, 1.0, 2.0, 3.0}
    assert seen_depth == {0.0, 0.25, 0.5, 0.75}


def test_rain_noise_preset_corrupts_exactly_one_of_image_and_audio(world):
    for index in range(20):
        _, target = world.generate(index, "rain_noise")
        corrupted = [target["corruption"][m]["category"] != "clean" for m in ("rgb", "mic")]
        assert sum(corrupted) == 1
        if corrupted[1]:
            assert target["corruption"]["mic"]["category"] in ("wind", "fan")
            assert not math.isinf(target["corruption"]["mic"]["value"])


def test_per_view_preset_draws_views_independently(world):
    differs = 0
    for index in range(20):
        _, target = world.generate(index, "mixed_per_view")
        differs += len(set(target["corruption"]["rgb"]["view_category_id"].tolist())) > 1
    assert differs >= 5


def test_field_preset_fails_at_most_one_camera_modality_so_one_always_localizes(world):
    seen = set()
    for index in range(40):
        _, target = world.generate(index, "field")
        categories = {m: target["corruption"][m]["category"] for m in ("rgb", "depth", "mic")}
        assert categories["rgb"] == "clean" or categories["depth"] == "clean"
        assert categories["rgb"] in ("clean", "lowlight", "blur", "rain")
        assert categories["depth"] in ("clean", "saturation", "dropout")
        seen.update(f"{m}:{c}" for m, c in categories.items())
    assert {"rgb:lowlight", "rgb:blur", "depth:saturation", "mic:clean", "rgb:clean"} <= seen
