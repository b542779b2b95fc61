"""The bag evaluator on hostile and unusual bags: path forms, QoS-text mismatch, service-event topics, open failures,
declared vs read counts, header stamps, empty depth, remapping, and the CLI's exit codes (see
docs/robustness_bags.md)."""

import csv
import dataclasses
import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from admn_core.bench import random_bundle
from admn_core.bundle import save_bundle
from admn_core.data.bag_writer import write_trajectory_bag
from admn_core.data.cli import world_bag
from admn_core.runtime import InferenceEngine
from admn_ros.bags.bag_reader import BagError, open_bag, parse_remaps
from admn_ros.bags.replay_cli import main as replay_main
from admn_ros.bags.replay_eval import evaluate_bag, synchronized_stamps

from bag_fixtures import ROSBAG2_QOS, edit_metadata, rewrite
from model_fixtures import micro_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VIEWS = ("node_1", "node_2", "node_3")
SETS = 30  # a 2 s bag at 15 Hz
STORE = get_typestore(Stores.ROS2_KILTED)
SERVICE_EVENT_DEFINITION = ("=" * 80 + "\nSRV: example_interfaces/srv/AddTwoInts\nint64 a\nint64 b\n---\n"
                            "int64 sum\n")  # what rosbag2 (Jazzy+) stores as a service event's MCAP schema


@pytest.fixture(scope="module")
def config():
    return micro_config(views=VIEWS)


@pytest.fixture(scope="module")
def engine(config):
    return InferenceEngine(random_bundle(config, budgets=[6, 8], seed=1))


@pytest.fixture(scope="module")
def model(config, tmp_path_factory):
    return save_bundle(tmp_path_factory.mktemp("model") / "micro.safetensors", random_bundle(config, [6], seed=1))


def cli(*argv):
    return replay_main([str(a) for a in argv])


def with_header_stamps(stamp_of):
    """A rewrite transform giving every camera/depth message the header stamp stamp_of(old stamp ns)."""
    def transform(topic, msgtype, msg):
        if not topic.endswith(("/camera/image_raw", "/depth/image_raw")):
            return [(topic, msgtype, msg)]
        old = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        new = stamp_of(old)
        stamp = STORE.types["builtin_interfaces/msg/Time"](sec=new // 10**9, nanosec=new % 10**9)
        return [(topic, msgtype, dataclasses.replace(msg, header=dataclasses.replace(msg.header, stamp=stamp)))]
    return transform


# ---- what BAG may be --------------------------------------------------------------------------------------------


def test_bag_may_be_the_folder_its_metadata_or_its_data_file(bag, config, tmp_path):
    mcap = rewrite(bag, tmp_path / "mcap", storage="mcap")
    forms = [bag, bag / "metadata.yaml", next(bag.glob("*.db3")), mcap, next(mcap.glob("*.mcap"))]
    for form in forms:
        assert len(synchronized_stamps(form, config)) == SETS, form
    notes = tmp_path / "notes.txt"
    notes.write_text("not a bag")
    with pytest.raises(BagError, match=r"notes\.txt: not a rosbag2 bag \(expected a rosbag2 folder"):
        open_bag(notes, config)
    ros1 = tmp_path / "old.bag"
    ros1.write_bytes(b"#ROSBAG V2.0\n")
    with pytest.raises(BagError, match="a ROS 1 bag; convert it to rosbag2 first"):
        open_bag(ros1, config)


def test_world_bag_with_a_bag_suffix_is_read_back(config, tmp_path):
    written = world_bag(tmp_path / "run.bag", duration=1.0, seed=2)  # the README's `--out artifacts/run.bag`
    assert written.is_dir() and (written / "metadata.yaml").is_file()
    assert len(synchronized_stamps(written, config)) == 15


# ---- reading what real rosbag2 bags hold ---------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_qos_text_mismatch_between_metadata_and_data_file_is_read(bag, engine, tmp_path, storage):
    crafted = rewrite(bag, tmp_path / "qos", storage=storage)

    def rosbag2_qos(info):
        for topic in info["topics_with_message_count"]:
            topic["topic_metadata"]["offered_qos_profiles"] = ROSBAG2_QOS
    edit_metadata(crafted, rosbag2_qos)
    result = evaluate_bag(crafted, engine, 8)
    assert result.sets == SETS and len(result.ok_records()) == SETS
    assert all(read == declared > 0 for read, declared in result.read_counts.values())
    assert any("offered QoS text differs" in w and "/node_1/camera/image_raw" in w for w in result.warnings)


def test_mcap_service_event_topic_is_skipped_with_a_note(bag, engine, tmp_path):
    event = ("/add_two_ints/_service_event", "example_interfaces/srv/AddTwoInts_Event", SERVICE_EVENT_DEFINITION,
             [(1_700_000_000_000_000_000, bytes(48))])
    crafted = rewrite(bag, tmp_path / "services", storage="mcap", raw_connections=[event])
    result = evaluate_bag(crafted, engine, 8)
    assert len(result.ok_records()) == SETS
    assert any("/add_two_ints/_service_event" in w and "cannot be parsed" in w for w in result.warnings)


def test_open_failures_name_the_real_reason(bag, config, tmp_path):
    newer = edit_metadata(rewrite(bag, tmp_path / "v10"), lambda info: info.update(version=10))
    with pytest.raises(BagError, match="version 10 not supported") as error:
        open_bag(newer, config)
    assert "truncated" not in str(error.value)

    def json_format(info):
        info["topics_with_message_count"][0]["topic_metadata"]["serialization_format"] = "json"
    other_format = edit_metadata(rewrite(bag, tmp_path / "json"), json_format)
    with pytest.raises(BagError, match=r"Serialization format \{'json'\} is not supported") as error:
        open_bag(other_format, config)
    assert "truncated" not in str(error.value)

    cut = rewrite(bag, tmp_path / "cut", storage="mcap")
    data = next(cut.glob("*.mcap"))
    data.write_bytes(data.read_bytes()[:200])
    with pytest.raises(BagError, match="truncated, corrupt"):
        open_bag(cut, config)


def test_read_counts_are_compared_with_the_declared_ones(bag, engine, tmp_path):
    def overstate(info):
        for topic in info["topics_with_message_count"]:
            if topic["topic_metadata"]["name"] == "/node_1/camera/image_raw":
                topic["message_count"] = 45
    crafted = edit_metadata(rewrite(bag, tmp_path / "counts"), overstate)
    result = evaluate_bag(crafted, engine, 8)
    assert result.read_counts["/node_1/camera/image_raw"] == (30, 45)
    assert result.read_counts["/node_2/depth/image_raw"] == (30, 30)
    assert any("/node_1/camera/image_raw: read 30 of the 45 messages the bag declares" in w for w in result.warnings)


# ---- what the evaluator reports about the data ---------------------------------------------------------------------


def test_zero_and_backward_header_stamps_are_counted_and_warned(bag, engine, tmp_path):
    zero = evaluate_bag(rewrite(bag, tmp_path / "zero", transform=with_header_stamps(lambda old: 0)), engine, 8)
    audit = zero.stamps["/node_1/camera/image_raw"]
    assert (audit.messages, audit.zero) == (SETS, SETS)
    assert any("30 of 30 header stamps are zero" in w for w in zero.warnings)

    start = 1_700_000_000 * 10**9
    end = start + 2 * 10**9
    mirrored = rewrite(bag, tmp_path / "backward", transform=with_header_stamps(lambda old: start + end - old))
    backward = evaluate_bag(mirrored, engine, 8)
    assert backward.stamps["/node_3/depth/image_raw"].backward == SETS - 1
    assert any("29 of 30 header stamps run backwards" in w for w in backward.warnings)


def test_all_zero_and_all_nan_depth_frames_are_counted(bag, engine, tmp_path):
    def empty_depth(topic, msgtype, msg):
        if topic == "/node_2/depth/image_raw":
            msg = dataclasses.replace(msg, data=np.zeros_like(msg.data))
        elif topic == "/node_3/depth/image_raw":
            nan = np.full(msg.height * msg.width, np.nan, "<f4").view(np.uint8)
            msg = dataclasses.replace(msg, encoding="32FC1", step=msg.width * 4, data=nan)
        return [(topic, msgtype, msg)]
    result = evaluate_bag(rewrite(bag, tmp_path / "empty_depth", transform=empty_depth), engine, 8)
    assert result.empty_depth == {("node_2", "depth"): SETS, ("node_3", "depth"): SETS}
    assert any("node_3/depth: 30 depth frame(s) without one valid pixel" in w for w in result.warnings)


def test_remap_and_namespace_find_realsense_style_topics(bag, engine, tmp_path):
    def rename(topic, msgtype, msg):
        if topic == "/node_1/camera/image_raw":
            return [("/camera/camera/color/image_raw", msgtype, msg)]
        return [(f"/robot{topic}" if topic.startswith("/node_") else topic, msgtype, msg)]
    crafted = rewrite(bag, tmp_path / "realsense", transform=rename)
    with pytest.raises(BagError, match="missing topic"):
        evaluate_bag(crafted, engine, 8, namespace="robot")
    remap = parse_remaps(["node_1/camera/image_raw:=/camera/camera/color/image_raw"])
    result = evaluate_bag(crafted, engine, 8, namespace="robot", remap=remap)
    assert len(result.ok_records()) == SETS and all(r.error_cm is not None for r in result.records)
    with pytest.raises(ValueError, match="FROM:=TO"):
        parse_remaps(["node_1/camera/image_raw=/x"])


def test_microphone_of_another_type_degrades_like_a_missing_one(bag, engine, tmp_path):
    String = STORE.types["std_msgs/msg/String"]
    crafted = rewrite(bag, tmp_path / "mic_string", transform=lambda topic, msgtype, msg: [
        (topic, "std_msgs/msg/String", String(data="x"))] if topic == "/node_2/mic/audio" else [(topic, msgtype, msg)])
    result = evaluate_bag(crafted, engine, 8)
    assert len(result.ok_records()) == SETS
    assert any("/node_2/mic/audio has type std_msgs/msg/String" in w and "silent window" in w
               for w in result.warnings)


def test_progress_bar_only_on_a_terminal_and_ctrl_c_keeps_what_was_evaluated(bag, engine):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal, pipe = Terminal(), io.StringIO()
    evaluate_bag(bag, engine, 8, progress=terminal)
    evaluate_bag(bag, engine, 8, progress=pipe)
    assert "100%" in terminal.getvalue() and "msg" in terminal.getvalue()
    assert pipe.getvalue() == ""

    def interrupt_at_the_fourth(record):
        if len(seen) == 3:
            raise KeyboardInterrupt
        seen.append(record)
    seen = []
    result = evaluate_bag(bag, engine, 8, on_record=interrupt_at_the_fourth)
    assert result.interrupted and len(result.records) == 4 and len(seen) == 3  # the 4th was complete
    assert not any("messages the bag declares" in w for w in result.warnings)  # stopping early is not a mismatch


# ---- the command line --------------------------------------------------------------------------------------------


def test_cli_checks_out_and_bag_before_loading_the_model(bag, model, tmp_path, capsys):
    broken_model = tmp_path / "broken.safetensors"
    broken_model.write_bytes(b"not a model")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert cli(bag, "--model", broken_model, "--out", a_file) == 2
    assert f"--out {a_file}: cannot write results there" in capsys.readouterr().err
    assert cli(bag, "--model", broken_model, "--out", a_file / "sub") == 2
    assert "cannot write results there" in capsys.readouterr().err
    assert cli(a_file, "--model", broken_model, "--out", tmp_path / "out") == 2
    assert "not a rosbag2 bag" in capsys.readouterr().err
    assert cli(bag, "--model", model, "--out", tmp_path / "out", "--remap", "nonsense") == 2
    assert "FROM:=TO" in capsys.readouterr().err
    assert cli(bag, "--model", model, "--out", tmp_path / "out", "--budget", "lots") == 2
    assert "budget must be" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert cli(bag, "--model", model, "--out", tmp_path / "out", "--device", "cuda") == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_cli_reads_metadata_yaml_and_exits_3_when_nothing_was_evaluated(bag, model, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(bag / "metadata.yaml", "--model", model, "--out", out, "--quiet") == 0
    printed = capsys.readouterr()
    assert "messages read / declared by the bag" in printed.out and "msg/s" not in printed.err
    rows = list(csv.DictReader((out / "frames.csv").open()))
    assert len(rows) == SETS and all(row["gt_x_m"] for row in rows)
    assert "/node_1/camera/image_raw" in (out / "summary.txt").read_text()

    assert cli(bag, "--model", model, "--out", out, "--budget", "1") == 3  # below the model's minimum: none ran
    assert "nothing was evaluated" in capsys.readouterr().err
    assert {row["status"] for row in csv.DictReader((out / "frames.csv").open())} == {"skipped_budget"}


def test_cli_ctrl_c_exits_130_and_leaves_a_valid_partial_csv(model, tmp_path):
    long_bag = write_trajectory_bag(tmp_path / "long", duration_s=8.0, seed=5)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "admn_ros.bags.replay_cli", str(long_bag), "--model", str(model),
               "--out", str(out), "--quiet"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    frames = out / "frames.csv"
    while process.poll() is None and (not frames.exists() or len(frames.read_text().splitlines()) < 4):
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    rows = list(csv.DictReader(frames.open()))
    assert 3 <= len(rows) < 120 and all(row["status"] == "ok" and row["pred_x_m"] for row in rows)
    assert "interrupted (Ctrl-C)" in (out / "summary.txt").read_text()
