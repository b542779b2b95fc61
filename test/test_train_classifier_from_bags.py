"""Training a classifier from bags with a class-label topic: every set the node forms gets the label holding at its
stamp (as the evaluator scores it), the samples are the clips the evaluator feeds the engine, the cache holds the
labels, and `admn_train_bags` turns labelled bags into a classifier bundle that evaluates on a held-out bag."""

import json
from dataclasses import replace

import numpy as np
import pytest

from admn_core.bench import random_bundle
from admn_core.bundle import load_bundle
from admn_core.data.dataset import WorldCacheDataset
from admn_core.presets import MMFI_VIEW
from admn_core.ros_interface import CLASS_GROUND_TRUTH_TOPIC
from admn_core.runtime import InferenceEngine
from admn_ros.bags.bag_dataset import bag_samples, write_bag_cache
from admn_ros.bags.bag_reader import BagError
from admn_ros.bags.replay_eval import evaluate_bag

from bag_fixtures import rewrite, short_training, write_labelled_clip_bag
from model_fixtures import micro_config

SECONDS, RATE_HZ, FRAMES = 2.0, 10, 3
LABELS = ((0.25, 0), (0.95, 2), (1.45, 1))  # (seconds, class); frames before 0.25 s precede every label
BUDGET = 4


def clip_classifier():
    config = micro_config(with_mic=False, task="classification", views=(MMFI_VIEW,))
    return replace(config, modalities=tuple(replace(spec, frames=FRAMES) for spec in config.modalities))


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    return [write_labelled_clip_bag(root / f"run{seed}", LABELS, SECONDS, ("rgb", "depth"), MMFI_VIEW, RATE_HZ,
                                    seed=seed) for seed in (1, 2)]


def expected_class(seconds):
    return next((label for start, label in reversed(LABELS) if start <= seconds + 1e-9), None)


def test_each_set_is_the_evaluators_clip_with_the_label_holding_at_its_stamp(bags):
    config = clip_classifier()
    engine = InferenceEngine(random_bundle(config, [BUDGET]))
    fed = []
    infer = engine.infer
    engine.infer = lambda sample, budget: (fed.append(sample), infer(sample, budget))[1]
    records = evaluate_bag(bags[0], engine, BUDGET).records
    assert len(records) == SECONDS * RATE_HZ and all(record.ok for record in records)

    samples, targets = [], []
    report = bag_samples(bags[0], config, lambda sample, target: (samples.append(sample), targets.append(target)))
    labelled = [(record, sent) for record, sent in zip(records, fed, strict=True) if record.true_class is not None]
    assert report.sets == len(records) and report.samples == len(samples) == len(labelled)
    assert report.no_ground_truth == len(records) - len(labelled) > 0  # the frames before the first label
    for (record, sent), sample, target in zip(labelled, samples, targets, strict=True):
        assert target["label"] == record.true_class == expected_class(record.t_s)
        assert "position" not in target and target["time"] == pytest.approx(record.t_s)
        assert sample.keys() == sent.keys()
        for key in sample:
            assert sample[key].shape[0] == FRAMES and np.array_equal(sample[key], sent[key]), key


def test_cache_holds_the_class_labels(bags, tmp_path):
    config = clip_classifier()
    cache, reports = write_bag_cache([bags[0]], tmp_path / "cache", config)
    dataset = WorldCacheDataset(cache)
    assert dataset.cache.task == "classification" and len(dataset) == reports[0].samples
    labels = [dataset[index][1]["label"] for index in range(len(dataset))]
    times = [float(dataset[index][1]["time"]) for index in range(len(dataset))]
    assert labels == [expected_class(t) for t in times] and set(labels) == {0, 1, 2}
    assert dataset.cache.class_labels().tolist() == labels
    assert dataset[0][0][(MMFI_VIEW, "rgb")].shape[0] == FRAMES


def test_a_pose_topic_for_a_classifier_and_a_bag_without_labels_are_named(bags):
    config = clip_classifier()
    with pytest.raises(BagError, match=r"run1.*no ground-truth topic /ground_truth/pose: training needs a class "
                                       r"label per set"):
        bag_samples(bags[0], config, lambda *_: None, gt_topic="/ground_truth/pose")
    with pytest.raises(BagError, match=r"/camera/camera/image_raw has type sensor_msgs/msg/Image, expected "
                                       r"std_msgs/msg/Int32"):
        bag_samples(bags[0], config, lambda *_: None, gt_topic="/camera/camera/image_raw")



def test_a_negative_class_index_is_refused_with_its_time(bags, tmp_path):
    def negate(topic, msgtype, msg):
        if topic == CLASS_GROUND_TRUTH_TOPIC:
            msg = type(msg)(data=-1 if msg.data == 2 else msg.data)
        return [(topic, msgtype, msg)]

    negative = rewrite(bags[0], tmp_path / "negative", transform=negate)
    with pytest.raises(BagError, match=r"negative: /ground_truth/class holds class -1 at \d+\.950 s; class indices "
                                       "start at 0"):
        bag_samples(negative, clip_classifier(), lambda *_: None)


def test_one_command_trains_a_classifier_that_evaluates_on_a_held_out_bag(bags, tmp_path, capsys):
    from admn_ros.bags.train_cli import main

    settings = tmp_path / "train.yaml"
    settings.write_text(short_training("tiny_mmfi"))
    common = ["--bags", str(bags[0]), "--val-bags", str(bags[1]), "--train-config", str(settings), "--quiet"]
    assert main([*common, "--classes", "left", "right", "--out", str(tmp_path / "few")]) == 2
    assert "holds class 2, but the run has 2 classes (left, right)" in capsys.readouterr().err

    out = tmp_path / "run"
    assert main([*common, "--classes", "walk", "sit", "wave", "--out", str(out)]) == 0
    engine = InferenceEngine.from_bundle(out / "bundle.safetensors")
    assert engine.config.head.num_classes == 3
    assert json.loads(load_bundle(out / "bundle.safetensors").extra["classes"]) == ["walk", "sit", "wave"]
    assert {"admn_b6", "admn_b12", "universal"} <= set(engine.controller_infos)
    assert "accuracy" in (out / "eval" / "results.md").read_text()
    result = evaluate_bag(bags[1], engine, 6)
    scored = [record for record in result.ok_records() if record.true_class is not None]
    assert scored and all(0 <= record.predicted_class < 3 for record in scored)
    assert all(record.true_class == expected_class(record.t_s) for record in scored)
    assert main([*common, "--classes", "a", "b", "c", "d", "--out", str(out)]) == 2  # other classes: no reuse
    assert "other classes" in capsys.readouterr().err
