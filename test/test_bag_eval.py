"""Offline bag evaluation: the engine's numbers on independently rebuilt samples; malformed bags -> clear errors."""

import math

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from admn_core.bench import random_bundle
from admn_core.ros_interface import NODE_DEFAULTS
from admn_core.runtime import InferenceEngine
from admn_ros.bags.bag_reader import BagError, open_reader
from admn_ros.bags.plots import plot_timeline
from admn_ros.bags.replay_eval import (
    TIME_JUMP_BACK_S,
    BudgetSource,
    evaluate_bag,
)
from admn_ros.bags.replay_report import compare, find_gaps, format_summary, summarize, write_csv
from admn_ros.msgs.conversions import image_to_numpy

from bag_fixtures import rewrite
from model_fixtures import micro_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VIEWS = ("node_1", "node_2", "node_3")
START_S = 1_700_000_000.0


@pytest.fixture(scope="module")
def engine():
    return InferenceEngine(random_bundle(micro_config(views=VIEWS), budgets=[6, 8], seed=1))


def independent_samples(bag, config):
    """Rebuild each synchronized sample without the evaluator: frames by exact stamp, audio as one continuous signal
    per view, window ending at the newest chunk already in the bag when the frame arrives (bag time = stamp)."""
    reader = open_reader(bag)
    frames, chunks = {}, {view: [] for view in VIEWS}
    for connection, _t, raw in reader.messages():
        topic = connection.topic
        if not topic.endswith(("/camera/image_raw", "/depth/image_raw", "/mic/audio")):
            continue
        msg = reader.deserialize(raw, connection.msgtype)
        view = topic.split("/")[1]
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        if topic.endswith("/mic/audio"):
            chunks[view].append((stamp, image_to_numpy(msg).reshape(-1).copy()))
        else:
            modality = "rgb" if "/camera/" in topic else "depth"
            frames.setdefault(stamp, {})[(view, modality)] = image_to_numpy(msg).copy()
    reader.close()
    window = round(config.modalities[2].audio_window_seconds * 16000)
    samples = {}
    for stamp, sample in sorted(frames.items()):
        for view in VIEWS:
            arrived = [c for c in chunks[view] if c[0] <= stamp]
            audio = np.concatenate([c[1] for c in arrived]) if arrived else np.zeros(0, np.float32)
            padded = np.concatenate([np.zeros(max(0, window - audio.size), np.float32), audio])[-window:]
            sample[(view, "mic")] = padded
        samples[stamp] = sample
    return samples


def test_node_defaults_match_the_node():
    from admn_ros.nodes import admn_node

    assert admn_node.PARAMETERS["sync_slop"][0] == NODE_DEFAULTS.sync_slop
    assert admn_node.PARAMETERS["sync_queue_size"][0] == NODE_DEFAULTS.sync_queue_size
    assert admn_node.PARAMETERS["default_budget"][0] == NODE_DEFAULTS.default_budget
    assert admn_node.TIME_JUMP_BACK_S == TIME_JUMP_BACK_S


def test_evaluator_gives_the_engines_numbers_on_the_same_samples(bag, engine, tmp_path):
    result = evaluate_bag(bag, engine, "0:8,1:6")
    assert result.stream_error is None and not result.bad_input
    samples = independent_samples(bag, engine.config)
    assert [r.stamp_ns for r in result.records] == sorted(samples)  # every frame formed a set (30 at 15 Hz)
    assert len(result.records) == 30
    for record in result.records:
        expected = engine.infer(samples[record.stamp_ns], record.budget)
        assert record.budget == (8 if record.t_s < 1.0 else 6)
        assert record.active_blocks == {k: list(v) for k, v in expected.allocation.active_blocks().items()}
        np.testing.assert_allclose(record.position, expected.position_m, rtol=0, atol=1e-6)
        assert record.ground_truth is not None and record.episode
        assert record.error_cm == pytest.approx(100 * math.dist(record.position, record.ground_truth))

    summary = summarize(result.records)
    errors = [r.error_cm for r in result.records]
    assert summary["overall"]["mean"] == pytest.approx(np.mean(errors))
    assert summary["overall"]["p90"] == pytest.approx(np.percentile(errors, 90))
    assert set(summary["per_budget"]) == {6, 8}
    text = format_summary(summary)
    assert "budget 6" in text and "clean" in text
    csv_path = write_csv(result.records, tmp_path / "frames.csv")
    header = csv_path.read_text().splitlines()[0].split(",")
    assert {"blocks_rgb", "active_mic", "error_cm", "episode", "budget"} <= set(header)
    assert len(csv_path.read_text().splitlines()) == 31
    png = plot_timeline(result.records, tmp_path / "plot.png")
    assert png.stat().st_size > 1000


def test_budget_below_minimum_is_skipped_and_bag_budget_topic_is_followed(bag, engine, tmp_path):
    store = get_typestore(Stores.ROS2_KILTED)
    Int32 = store.types["std_msgs/msg/Int32"]
    start = int(START_S * 1e9)
    extra = [("/compute_budget", "std_msgs/msg/Int32", start + 500_000_000, Int32(data=2)),
             ("/compute_budget", "std_msgs/msg/Int32", start + 1_000_000_000, Int32(data=6))]
    with_budget = rewrite(bag, tmp_path / "budget", extra=extra)
    result = evaluate_bag(with_budget, engine, BudgetSource.parse("bag"))
    by_t = [(round(r.t_s, 3), r.budget, r.status) for r in result.records]
    assert by_t[0] == (0.0, NODE_DEFAULTS.default_budget, "ok")
    assert all(status == "skipped_budget" for t, b, status in by_t if 0.5 < t < 1.0)
    assert all(b == 6 and status == "ok" for t, b, status in by_t if t > 1.0)
    assert "below the model's minimum" in next(r.reason for r in result.records if r.budget == 2)


def test_compressed_camera_and_mcap_give_identical_numbers(bag, engine, tmp_path):
    from admn_ros.msgs.conversions import numpy_to_compressed

    store = get_typestore(Stores.ROS2_KILTED)

    def to_png(topic, msgtype, msg):
        if not topic.endswith("/camera/image_raw"):
            return [(topic, msgtype, msg)]
        rclpy_msg = numpy_to_compressed(image_to_numpy(msg), "png")
        compressed = store.types["sensor_msgs/msg/CompressedImage"](
            header=msg.header, format="rgb8; png compressed", data=np.frombuffer(bytes(rclpy_msg.data), np.uint8))
        return [(topic + "/compressed", "sensor_msgs/msg/CompressedImage", compressed)]

    compressed = rewrite(bag, tmp_path / "compressed", storage="mcap", transform=to_png)
    raw = evaluate_bag(bag, engine, 8)
    other = evaluate_bag(compressed, engine, 8)
    agreement = compare(raw.records, other.records)
    assert agreement["joined"] == 30 and agreement["identical_allocations"] == 30
    assert agreement["max_position_diff_cm"] < 1e-4


def test_missing_topics_wrong_types_and_broken_files_give_clear_errors(bag, engine, tmp_path):
    no_depth = rewrite(bag, tmp_path / "no_depth", transform=lambda topic, msgtype, msg: [] if topic ==
                       "/node_2/depth/image_raw" else [(topic, msgtype, msg)])
    with pytest.raises(BagError, match=r"missing topic\(s\) /node_2/depth/image_raw.*The bag holds: /clock"):
        evaluate_bag(no_depth, engine, 8)

    store = get_typestore(Stores.ROS2_KILTED)
    String = store.types["std_msgs/msg/String"]
    wrong = rewrite(bag, tmp_path / "wrong", transform=lambda topic, msgtype, msg: [
        (topic, "std_msgs/msg/String", String(data="x"))] if topic == "/node_1/camera/image_raw" else [
        (topic, msgtype, msg)])
    with pytest.raises(BagError, match="/node_1/camera/image_raw has type std_msgs/msg/String, expected"):
        evaluate_bag(wrong, engine, 8)

    no_mic = rewrite(bag, tmp_path / "no_mic", transform=lambda topic, msgtype, msg: [] if topic.endswith(
        "/mic/audio") or topic.startswith("/ground_truth") else [(topic, msgtype, msg)])
    result = evaluate_bag(no_mic, engine, 8)  # like the node: silent audio, no ground truth -> warnings, no crash
    assert len(result.ok_records()) == 30 and all(r.error_cm is None for r in result.records)
    assert any("/node_1/mic/audio is not in the bag" in w for w in result.warnings)
    assert any("/ground_truth/pose is not in the bag" in w for w in result.warnings)

    with pytest.raises(BagError, match="no such bag"):
        evaluate_bag(tmp_path / "nowhere", engine, 8)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(BagError, match=r"metadata\.yaml is missing"):
        evaluate_bag(tmp_path / "empty_dir", engine, 8)

    mcap = rewrite(bag, tmp_path / "trunc", storage="mcap")
    data_file = next(mcap.glob("*.mcap"))
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    try:
        truncated = evaluate_bag(mcap, engine, 8)
    except BagError as error:  # rosbags may refuse at open (no summary section): also a clear error
        assert str(data_file.parent) in str(error) and "truncated" in str(error)
    else:
        assert truncated.stream_error and "truncated" in truncated.stream_error
        assert 0 < len(truncated.records) < 30

    corrupt = rewrite(bag, tmp_path / "corrupt")
    db3 = next(corrupt.glob("*.db3"))
    db3.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BagError, match=r"corrupt.*|cannot open"):
        evaluate_bag(corrupt, engine, 8)


def test_gaps_are_runs_of_missing_outputs():
    expected = list(range(0, 100, 10))
    outputs = [0, 10, 50, 60, 70, 80, 90]
    assert find_gaps(expected, outputs, 0.01) == [(20, 40, 3)]
    assert find_gaps(expected, expected, 0.01) == []


def test_replay_cli_writes_csv_summary_and_plot_and_refuses_bad_paths(bag, tmp_path, capsys):
    from admn_core.bundle import save_bundle
    from admn_ros.bags.replay_cli import main as replay_main

    model = save_bundle(tmp_path / "micro.safetensors", random_bundle(micro_config(views=VIEWS), [6], seed=1))
    out = tmp_path / "replay"
    assert replay_main([str(bag), "--model", str(model), "--budget", "0:36,1:6", "--out", str(out)]) == 0
    frames = (out / "frames.csv").read_text().splitlines()
    assert len(frames) > 10 and "budget" in frames[0]
    assert (out / "timeline.png").stat().st_size > 1000 and "per budget" in (out / "summary.txt").read_text()
    assert replay_main([str(tmp_path / "nope"), "--model", str(model)]) == 2
    assert "no such bag" in capsys.readouterr().err
