"""A clip classifier evaluated on a bag with class labels: every set is answered from the stream's last frames, gets
the label holding at its stamp, and the evaluator scores it as admn_node would have answered (accuracy in the
summary, predicted and true class in the CSV)."""

import csv
from dataclasses import replace

import numpy as np
import pytest

from admn_core.bench import random_bundle
from admn_core.ros_interface import CLASS_GROUND_TRUTH_TOPIC
from admn_core.runtime import InferenceEngine
from admn_ros.bags.replay_eval import evaluate_bag
from admn_ros.bags.replay_report import format_summary, summarize, write_csv

from bag_fixtures import write_labelled_clip_bag
from model_fixtures import micro_config

VIEW, FRAMES, RATE_HZ, SECONDS = "clip", 3, 10, 1.0
LABELS = ((0.0, 1), (0.55, 3))  # (seconds, class): class 1 until 0.55 s, then class 3


def clip_classifier():
    config = micro_config(with_mic=True, task="classification", views=(VIEW,))
    rgb, _depth, mic = config.modalities
    return replace(config, modalities=(replace(rgb, frames=FRAMES), mic))


@pytest.fixture(scope="module")
def labelled_bag(tmp_path_factory):
    return write_labelled_clip_bag(tmp_path_factory.mktemp("bags") / "clips", LABELS, SECONDS, ("rgb", "audio"),
                                   VIEW, RATE_HZ)


def test_every_set_is_scored_against_the_class_label_holding_at_its_stamp(labelled_bag, tmp_path):
    engine = InferenceEngine(random_bundle(clip_classifier(), budgets=[4], seed=5))
    result = evaluate_bag(labelled_bag, engine, 4)
    records = result.records
    assert len(records) == int(SECONDS * RATE_HZ) and all(record.ok for record in records)
    for record in records:
        assert record.true_class == (1 if record.t_s < 0.55 else 3)
        assert 0 <= record.predicted_class < 5
        assert record.correct == (record.predicted_class == record.true_class)
    assert not any("class labels" in warning for warning in result.warnings)

    summary = summarize(records)
    expected = 100.0 * np.mean([record.correct for record in records])
    assert summary["task"] == "classification" and summary["overall"]["accuracy"] == pytest.approx(expected)
    assert summary["per_budget"][4]["n"] == len(records)
    assert "accuracy %" in format_summary(summary)
    rows = list(csv.DictReader(write_csv(records, tmp_path / "frames.csv").open()))
    assert [int(row["true_class"]) for row in rows] == [record.true_class for record in records]
    assert [int(row["pred_class"]) for row in rows] == [record.predicted_class for record in records]


def test_a_bag_without_class_labels_warns_and_scores_nothing(labelled_bag, tmp_path):
    from bag_fixtures import rewrite

    unlabelled = tmp_path / "unlabelled"
    rewrite(labelled_bag, unlabelled, transform=lambda topic, msgtype, msg: [] if topic == CLASS_GROUND_TRUTH_TOPIC
            else [(topic, msgtype, msg)])
    result = evaluate_bag(unlabelled, InferenceEngine(random_bundle(clip_classifier(), budgets=[4], seed=5)), 4)
    assert all(record.ok and record.true_class is None and record.correct is None for record in result.records)
    assert any("no class labels" in warning for warning in result.warnings)
