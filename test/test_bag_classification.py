"""A clip classifier evaluated on a bag with class labels: every set is answered from the stream's last frames, gets
the label holding at its stamp, and the evaluator scores it as admn_node would have answered (accuracy in the
summary, predicted and true class in the CSV)."""

import csv
from dataclasses import replace

import numpy as np
import pytest
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_typestore

from admn_core.bench import random_bundle
from admn_core.ros_interface import CLASS_GROUND_TRUTH_TOPIC, sensor_topic
from admn_core.runtime import InferenceEngine
from admn_ros.bags.replay_eval import evaluate_bag
from admn_ros.bags.replay_report import format_summary, summarize, write_csv

from model_fixtures import micro_config

VIEW, FRAMES, RATE_HZ, SECONDS = "clip", 3, 10, 1.0
START_NS = 1_700_000_000 * 10**9
LABELS = ((0.0, 1), (0.55, 3))  # (seconds, class): class 1 until 0.55 s, then class 3


def clip_classifier():
    config = micro_config(with_mic=True, task="classification", views=(VIEW,))
    rgb, _depth, mic = config.modalities
    return replace(config, modalities=(replace(rgb, frames=FRAMES), mic))


@pytest.fixture(scope="module")
def labelled_bag(tmp_path_factory):
    store = get_typestore(Stores.ROS2_KILTED)
    types = store.types
    path = tmp_path_factory.mktemp("bags") / "clips"
    rng = np.random.default_rng(0)

    def header(ns):
        return types["std_msgs/msg/Header"](stamp=types["builtin_interfaces/msg/Time"](
            sec=ns // 10**9, nanosec=ns % 10**9), frame_id=VIEW)

    def image(ns, array, encoding, bytes_per_pixel):
        rows, cols = array.shape[:2]
        return types["sensor_msgs/msg/Image"](header=header(ns), height=rows, width=cols, encoding=encoding,
                                              is_bigendian=0, step=cols * bytes_per_pixel,
                                              data=np.ascontiguousarray(array).view(np.uint8).reshape(-1))

    with Writer(path, version=9) as writer:
        camera = writer.add_connection(f"/{sensor_topic('rgb', VIEW)}", "sensor_msgs/msg/Image", typestore=store)
        microphone = writer.add_connection(f"/{sensor_topic('audio', VIEW)}", "sensor_msgs/msg/Image",
                                           typestore=store)
        labels = writer.add_connection(CLASS_GROUND_TRUTH_TOPIC, "std_msgs/msg/Int32", typestore=store)
        messages = []
        for seconds, label in LABELS:
            ns = START_NS + round(seconds * 1e9)
            messages.append((ns, labels, types["std_msgs/msg/Int32"](data=label)))
        for chunk in range(int(SECONDS * 50)):  # 20 ms chunks stamped at their last sample
            ns = START_NS + round((chunk + 1) * 0.02e9) - 62_500
            wave = (0.1 * rng.standard_normal((1, 320))).astype("<f4")
            messages.append((ns, microphone, image(ns, wave, "32FC1", 4)))
        for frame in range(int(SECONDS * RATE_HZ)):
            ns = START_NS + round(frame * 1e9 / RATE_HZ)
            messages.append((ns, camera, image(ns, rng.integers(0, 256, (24, 32, 3), np.uint8), "rgb8", 3)))
        for ns, connection, message in sorted(messages, key=lambda item: item[0]):
            writer.write(connection, ns, store.serialize_cdr(message, connection.msgtype))
    return path


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
