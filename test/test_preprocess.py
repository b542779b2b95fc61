import numpy as np
import pytest
import torch

from admn_core.preprocess import InputError, audio_tensor, depth_tensor, preprocess_batch, rgb_tensor, synthetic_sample

from model_fixtures import micro_config

CONFIG = micro_config()


def test_batch_shapes_follow_the_config():
    batch = preprocess_batch(CONFIG, [synthetic_sample(CONFIG, 0), synthetic_sample(CONFIG, 1)])
    assert batch["rgb"].shape == (2, 2, 3, 16, 16)
    assert batch["depth"].shape == (2, 2, 1, 16, 24)
    assert batch["mic"].shape == (2, 2, 1, 16, 16)
    assert all(torch.isfinite(t).all() for t in batch.values())


def test_depth_in_millimetres_equals_depth_in_metres_and_invalid_is_no_return():
    spec = CONFIG.modality("depth")
    millimetres = np.full((32, 48), 2500, np.uint16)
    metres = np.full((32, 48), 2.5, np.float32)
    assert torch.allclose(depth_tensor(spec, millimetres), depth_tensor(spec, metres))
    metres[:, :24] = np.nan
    metres[0, 30] = np.inf
    left = depth_tensor(spec, metres)[0, :, :10]
    assert torch.isfinite(left).all() and float(left.abs().max()) == 0.0


def test_rgb_is_scaled_and_normalised():
    spec = CONFIG.modality("rgb")
    white = np.full((40, 40, 3), 255, np.uint8)
    expected = (1.0 - torch.tensor(spec.norm_mean)) / torch.tensor(spec.norm_std)
    assert torch.allclose(rgb_tensor(spec, white)[:, 5, 5], expected, atol=1e-5)


def test_audio_window_and_tone_position_in_the_spectrogram():
    spec = CONFIG.modality("mic")
    rate = spec.audio.sample_rate
    time = np.arange(spec.audio_window_samples) / rate
    low = audio_tensor(spec, np.sin(2 * np.pi * 300 * time).astype(np.float32))[0]
    high = audio_tensor(spec, np.sin(2 * np.pi * 5000 * time).astype(np.float32))[0]
    assert low.shape == (16, 16)
    assert int(low.mean(1).argmax()) < int(high.mean(1).argmax())
    short = audio_tensor(spec, np.ones(10, np.float32))  # less audio than a window: zero-padded in front
    assert short.shape == (1, 16, 16) and torch.isfinite(short).all()


@pytest.mark.parametrize("key, array, message", [
    (("node_1", "rgb"), np.zeros((16, 16), np.uint8), "RGB must be uint8"),
    (("node_1", "rgb"), np.zeros((16, 16, 3), np.float32), "RGB must be uint8"),
    (("node_1", "depth"), np.zeros((16, 16), np.int8), "depth must be uint16"),
    (("node_1", "mic"), np.zeros((0,), np.float32), "empty array"),
    (("node_1", "mic"), np.zeros((4,), np.int16), "audio must be float"),
])
def test_bad_arrays_name_the_key_and_problem(key, array, message):
    sample = synthetic_sample(CONFIG)
    sample[key] = array
    with pytest.raises(InputError, match=message):
        preprocess_batch(CONFIG, [sample])


def test_missing_view_is_named():
    sample = synthetic_sample(CONFIG)
    del sample[("node_2", "depth")]
    with pytest.raises(InputError, match=r"sample has no \('node_2', 'depth'\)"):
        preprocess_batch(CONFIG, [sample])


def test_log_mel_of_huge_finite_samples_stays_finite():
    """3e38 is finite float32, but its power is not: the log-mel is computed in float64 and must stay finite."""
    spec = next(s for s in micro_config().modalities if s.kind == "audio")
    huge = np.full(spec.audio_window_samples, 3e38, np.float32)
    huge[::2] = -3e38
    features = audio_tensor(spec, huge)
    assert torch.isfinite(features).all()
    quiet = audio_tensor(spec, (0.1 * np.random.default_rng(0).standard_normal(spec.audio_window_samples))
                         .astype(np.float32))
    assert features.max() > quiet.max()  # still louder, not clipped to the quiet range
