"""admn_core.stream.pipeline.FramePipeline without ROS transport: real messages, the real engine and decoder, a clock
the test advances. The set-completeness rule, the wait bound, the budget and output rules, latest-only taking."""

import numpy as np
import pytest

from admn_core.bench import random_bundle
from admn_core.runtime import InferenceEngine
from admn_core.stream.pipeline import FramePipeline
from admn_ros.msgs.audio import numpy_to_audio_image
from admn_ros.msgs.conversions import ns_to_stamp, numpy_to_image
from admn_ros.msgs.frame_assembly import FrameAssembler, synchronizer_factory

from model_fixtures import micro_config

VIEWS = ("node_1", "node_2")
CHUNK = 320  # 20 ms at 16 kHz
WAIT_S = 0.1


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture(scope="module")
def engine():
    return InferenceEngine(random_bundle(micro_config(views=VIEWS), budgets=[6, 8], seed=1))


def make_pipeline(engine, budget=8, latest_only=False):
    clock = Clock()
    pipeline = FramePipeline(engine, FrameAssembler(engine.config), lambda stamp: (budget, "fixed"),
                             synchronizer_factory(0.05, 10, "builtin"), latest_only=latest_only,
                             audio_wait_s=WAIT_S, clock=clock)
    return pipeline, clock


def feed_frames(pipeline, stamp_ns, rng):
    for view in VIEWS:
        stamp = ns_to_stamp(stamp_ns)
        pipeline.add_frame((view, "rgb"), numpy_to_image(rng.integers(0, 256, (48, 64, 3), np.uint8), "rgb8", stamp))
        pipeline.add_frame((view, "depth"), numpy_to_image(rng.integers(500, 6000, (48, 64), np.uint16), "16UC1",
                                                           stamp))


def feed_audio(pipeline, end_ns, rng):
    for view in VIEWS:
        chunk = (0.1 * rng.standard_normal(CHUNK)).astype(np.float32)
        assert pipeline.add_audio((view, "mic"), numpy_to_audio_image(chunk, stamp=ns_to_stamp(end_ns))) is None


def stream(pipeline, rng, first_ns, chunks):
    """`chunks` consecutive 20 ms chunks per microphone, the first ending at `first_ns`."""
    for index in range(chunks):
        feed_audio(pipeline, first_ns + index * 20_000_000, rng)


def test_a_set_waits_until_its_audio_reaches_the_stamp_and_then_gets_the_final_window(engine):
    stamp = 10_000_000_000
    late, _ = make_pipeline(engine)
    rng = np.random.default_rng(0)
    stream(late, rng, stamp - 1_000_000_000 + 10_000_000, 50)  # up to 10 ms before the frame
    feed_frames(late, stamp, rng)
    assert late.ready_sets() == [] and late.waiting_for_audio()
    stream(late, np.random.default_rng(1), stamp + 10_000_000, 3)  # the chunk covering the stamp, and later ones
    (pending,) = late.ready_sets()
    late_outcome = late.process(pending)

    early, _ = make_pipeline(engine)  # the same messages, the audio all there before the frames
    rng = np.random.default_rng(0)
    stream(early, rng, stamp - 1_000_000_000 + 10_000_000, 50)
    stream(early, np.random.default_rng(1), stamp + 10_000_000, 3)
    feed_frames(early, stamp, rng)
    (pending,) = early.ready_sets()
    early_outcome = early.process(pending)

    assert late_outcome.ok and early_outcome.ok and late.counters.audio_waits_expired == 0
    for key in late_outcome.assembled.sample:
        np.testing.assert_array_equal(late_outcome.assembled.sample[key], early_outcome.assembled.sample[key])
    np.testing.assert_array_equal(late_outcome.result.position_m, early_outcome.result.position_m)


def test_a_set_whose_audio_never_comes_runs_after_the_wait_and_names_the_shortfall(engine):
    pipeline, clock = make_pipeline(engine)
    rng = np.random.default_rng(0)
    stamp = 5_000_000_000
    stream(pipeline, rng, stamp - 500_000_000, 10)  # the microphones stop 320 ms before the frame
    feed_frames(pipeline, stamp, rng)
    clock.now = WAIT_S / 2
    assert pipeline.ready_sets() == []
    clock.now = WAIT_S
    (pending,) = pipeline.ready_sets()
    outcome = pipeline.process(pending)
    assert outcome.ok and pipeline.counters.audio_waits_expired == 1
    mic = pipeline.inputs[("node_1", "mic")]
    assert mic.audio_waits_expired == 1 and mic.audio_short_ms == pytest.approx(320.0)
    assert "audio did not reach the set stamped 5.000 s" in pipeline.wait_problem
    assert "node_1/mic (320.0 ms short)" in pipeline.wait_problem


def test_a_budget_below_the_minimum_runs_nothing_and_is_never_rounded_up(engine):
    pipeline, _ = make_pipeline(engine, budget=engine.min_budget - 1)
    rng = np.random.default_rng(0)
    stream(pipeline, rng, 1_000_000_000, 2)
    feed_frames(pipeline, 1_000_000_000, rng)
    outcome = pipeline.process(pipeline.ready_sets()[0])
    assert outcome.status == "skipped_budget" and outcome.result is None
    assert f"is below the model's minimum {engine.min_budget}" in outcome.reason


def test_a_non_finite_output_is_never_ok(engine, monkeypatch):
    pipeline, _ = make_pipeline(engine)
    infer = engine.infer

    def nan_infer(sample, budget):
        result = infer(sample, budget)
        result.position_m = np.full(2, np.nan, np.float32)
        return result

    monkeypatch.setattr(engine, "infer", nan_infer)
    rng = np.random.default_rng(0)
    stream(pipeline, rng, 1_000_000_000, 2)
    feed_frames(pipeline, 1_000_000_000, rng)
    outcome = pipeline.process(pipeline.ready_sets()[0])
    assert outcome.status == "non_finite" and pipeline.counters.dropped_non_finite_output == 1
    assert pipeline.counters.sets_processed == 0


def test_latest_only_takes_the_newest_ready_set_and_keeps_the_waiting_one(engine):
    pipeline, _ = make_pipeline(engine, latest_only=True)
    rng = np.random.default_rng(0)
    stream(pipeline, rng, 1_000_000_000, 12)  # audio up to 1.22 s
    for stamp in (1_000_000_000, 1_066_000_000, 1_300_000_000):  # the last one's audio has not come yet
        feed_frames(pipeline, stamp, rng)
    (pending,) = pipeline.ready_sets()
    assert pending.stamp_ns == 1_066_000_000 and pipeline.counters.dropped_stale == 1
    assert pipeline.pending() == 1 and pipeline.waiting_for_audio()
