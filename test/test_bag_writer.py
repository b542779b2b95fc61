"""Trajectory bags: write with the world, read back with rosbags, check stamps, shapes, audio and ground truth."""

import numpy as np
import pytest

from admn_core.data.bag_writer import write_trajectory_bag
from admn_core.data.errors import BagWriteError
from admn_core.data.trajectory import TrackConfig, Trajectory
from admn_core.data.trajectory_recording import AUDIO_CHUNK, TRAJECTORY_OFFSET_S, Episode

rosbags = pytest.importorskip("rosbags")
from rosbags.highlevel import AnyReader  # noqa: E402

START = 1_700_000_000.0
EPISODES = (Episode(0.5, 1.0, "audio", "dropout", 1.0, ("node_2",)),
            Episode(0.0, 0.4, "rgb", "lowlight", 100.0, ("node_1",)))


def _read(path):
    messages = {}
    with AnyReader([path]) as reader:
        for connection, timestamp, raw in reader.messages():
            message = reader.deserialize(raw, connection.msgtype)
            messages.setdefault(connection.topic, []).append((timestamp, connection.msgtype, message))
    return messages


def _stamp(message) -> int:
    return message.header.stamp.sec * 10**9 + message.header.stamp.nanosec


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_round_trip(tmp_path, storage):
    path = write_trajectory_bag(tmp_path / "bag", duration_s=1.0, seed=4, storage=storage, start_time_s=START,
                                episodes=EPISODES)
    messages = _read(path)
    for view in ("node_1", "node_2", "node_3"):
        images = messages[f"/{view}/camera/image_raw"]
        depths = messages[f"/{view}/depth/image_raw"]
        audio = messages[f"/{view}/mic/audio"]
        assert len(images) == len(depths) == 15 and len(audio) == 16000 // AUDIO_CHUNK
        for k, (timestamp, msgtype, image) in enumerate(images):
            assert msgtype == "sensor_msgs/msg/Image" and image.encoding == "rgb8"
            assert (image.height, image.width, image.step) == (64, 64, 192)
            assert timestamp == _stamp(image) == int(round((START + k / 15) * 1e9))
            assert _stamp(depths[k][2]) == timestamp and depths[k][2].encoding == "16UC1"
        depth = np.frombuffer(depths[0][2].data, "<u2").reshape(64, 64)
        assert 500 < np.median(depth[depth > 0]) < 9000  # millimetres
        for k, (timestamp, _, chunk) in enumerate(audio):
            assert (chunk.encoding, chunk.height, chunk.width) == ("32FC1", 1, AUDIO_CHUNK)
            last_sample = ((k + 1) * AUDIO_CHUNK - 1) / 16000  # the stamp is the chunk's last sample
            assert timestamp == _stamp(chunk) == int(round((START + last_sample) * 1e9))
        assert images[0][2].header.frame_id == f"{view}_camera_optical_frame"
        assert audio[0][2].header.frame_id == f"{view}_mic_frame"

    wave = {view: np.concatenate([np.frombuffer(m.data, "<f4") for _, _, m in messages[f"/{view}/mic/audio"]])
            for view in ("node_1", "node_2")}
    assert np.abs(wave["node_1"]).max() > 1e-3
    assert not np.any(wave["node_2"][8000:]) and np.any(wave["node_2"][:8000])  # the dropout episode

    # Ground truth follows the same random trajectory the writer drew.
    trajectory = Trajectory.random(np.random.default_rng([4, 2**31]), TrackConfig())
    poses = messages["/ground_truth/pose"]
    assert len(poses) == 15 and poses[0][2].header.frame_id == "world"
    for k in (0, 7, 14):
        expected = trajectory.position(TRAJECTORY_OFFSET_S + k / 15)
        pose = poses[k][2].pose
        np.testing.assert_allclose([pose.position.x, pose.position.y], expected, atol=1e-9)

    labels = messages["/ground_truth/corruption"]
    first = {status.name: status for status in labels[0][2].status}
    assert first["node_1/rgb"].message == "lowlight" and first["node_2/rgb"].message == "clean"
    last = {status.name: status for status in labels[-1][2].status}
    assert last["node_2/mic"].message == "dropout" and last["node_2/mic"].level == 1
    clocks = [t for t, _, _ in messages["/clock"]]
    assert clocks == sorted(clocks) and len(clocks) == 50


def test_bag_writer_rejects_bad_requests(tmp_path):
    with pytest.raises(BagWriteError, match="storage"):
        write_trajectory_bag(tmp_path / "x", 1.0, storage="zip")
    (tmp_path / "exists").mkdir()
    with pytest.raises(BagWriteError, match="already exists"):
        write_trajectory_bag(tmp_path / "exists", 1.0)
