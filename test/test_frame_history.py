"""Clip models served from a stream: the last T frames per input, through the frame pipeline the node runs."""

from dataclasses import replace

import numpy as np
import pytest

from admn_core.bench import random_bundle
from admn_core.preprocess import missing_input
from admn_core.runtime import InferenceEngine
from admn_core.stream.frame_history import FrameHistory
from admn_core.stream.pipeline import FramePipeline
from admn_ros.msgs.conversions import ns_to_stamp, numpy_to_image
from admn_ros.msgs.frame_assembly import FrameAssembler, synchronizer_factory

from model_fixtures import micro_config

FRAMES = 3
VIEWS = ("node_1",)


def clip_config():
    """RGB as a 3-frame clip, depth a single frame, one view, a classification head."""
    config = micro_config(with_mic=False, task="classification", views=VIEWS)
    rgb, depth = config.modalities
    return replace(config, modalities=(replace(rgb, frames=FRAMES), depth))


def rgb_frame(value, shape=(16, 16, 3)):
    return np.full(shape, value, np.uint8)


def test_the_clip_holds_the_last_frames_oldest_first_and_repeats_the_oldest_while_warming_up():
    history = FrameHistory(clip_config())
    key = ("node_1", "rgb")
    first = history.clip({key: rgb_frame(1), ("node_1", "depth"): np.zeros((16, 24), np.uint16)})
    assert first[key].shape == (FRAMES, 16, 16, 3) and history.warming_up
    assert [int(f[0, 0, 0]) for f in first[key]] == [1, 1, 1]
    assert first[("node_1", "depth")].shape == (16, 24)  # single-frame inputs pass through
    history.clip({key: rgb_frame(2)})
    third = history.clip({key: rgb_frame(3)})
    assert not history.warming_up and [int(f[0, 0, 0]) for f in third[key]] == [1, 2, 3]
    fourth = history.clip({key: rgb_frame(4)})
    assert [int(f[0, 0, 0]) for f in fourth[key]] == [2, 3, 4]


def test_a_resolution_change_or_a_reset_starts_the_clip_over():
    history = FrameHistory(clip_config())
    key = ("node_1", "rgb")
    for value in (1, 2, 3):
        history.clip({key: rgb_frame(value)})
    bigger = history.clip({key: rgb_frame(9, (32, 32, 3))})
    assert history.restarts == 1 and bigger[key].shape == (FRAMES, 32, 32, 3)
    assert {int(f[0, 0, 0]) for f in bigger[key]} == {9}
    history.reset()
    assert history.warming_up
    assert {int(f[0, 0, 0]) for f in history.clip({key: rgb_frame(5, (32, 32, 3))})[key]} == {5}


def test_a_blind_inputs_stand_in_clip_enters_as_one_black_frame():
    config = clip_config()
    history = FrameHistory(config)
    key = ("node_1", "rgb")
    for value in (7, 8):
        history.clip({key: rgb_frame(value)})
    clip = history.clip({key: missing_input(config.modalities[0])})
    assert [int(f[0, 0, 0]) for f in clip[key]] == [7, 8, 0]


def test_single_frame_models_get_their_sample_unchanged():
    history = FrameHistory(micro_config())
    sample = {("node_1", "rgb"): rgb_frame(1)}
    assert not history and history.clip(sample) is sample


@pytest.fixture(scope="module")
def clip_engine():
    return InferenceEngine(random_bundle(clip_config(), budgets=[4], seed=3))


def test_the_pipeline_answers_every_set_of_a_clip_model_from_the_streams_last_frames(clip_engine):
    pipeline = FramePipeline(clip_engine, FrameAssembler(clip_engine.config), lambda stamp: (4, "fixed"),
                             synchronizer_factory(0.05, 10, "builtin"))
    rng = np.random.default_rng(0)
    outcomes, rgb, depth = [], [], []
    for index in range(5):
        stamp = ns_to_stamp(1_000_000_000 + index * 66_000_000)
        rgb.append(rng.integers(0, 256, (16, 16, 3), np.uint8))
        depth.append(rng.integers(500, 6000, (16, 24), np.uint16))
        pipeline.add_frame(("node_1", "rgb"), numpy_to_image(rgb[-1], "rgb8", stamp))
        pipeline.add_frame(("node_1", "depth"), numpy_to_image(depth[-1], "16UC1", stamp))
        outcomes += [pipeline.process(pending) for pending in pipeline.drain()]
    assert [o.status for o in outcomes] == ["ok"] * 5
    assert not pipeline.history.warming_up

    def expected(clip, depth_frame):
        sample = {("node_1", "rgb"): np.stack(clip), ("node_1", "depth"): depth_frame}
        return clip_engine.infer(sample, 4).class_probabilities

    np.testing.assert_allclose(outcomes[0].result.class_probabilities, expected([rgb[0]] * 3, depth[0]), atol=1e-6)
    np.testing.assert_allclose(outcomes[-1].result.class_probabilities, expected(rgb[-3:], depth[-1]), atol=1e-6)
    assert not np.allclose(outcomes[-1].result.class_probabilities, expected([rgb[-1]] * 3, depth[-1]), atol=1e-6)
