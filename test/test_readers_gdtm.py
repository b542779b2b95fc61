"""GDTM preprocessed-HDF5 reader on a tiny fixture written in the exact layout."""

import io
import json

import numpy as np
import pytest

from admn_core.data.errors import DatasetFileError
from admn_core.data.readers import GDTMReader

h5py = pytest.importorskip("h5py")
from PIL import Image  # noqa: E402

NODES = ("node_1", "node_2")
STAMPS = [1656000000000 + 67 * k for k in range(6)]  # 15 Hz, millisecond epoch keys


def _jpeg(colour) -> np.void:
    buffer = io.BytesIO()
    Image.fromarray(np.full((27, 48, 3), colour, dtype=np.uint8)).save(buffer, format="JPEG", quality=95)
    return np.void(buffer.getvalue())


def write_split(root, node_2_gap=True):
    """mocap.hdf5 + node_K/{zed,respeaker}.hdf5; node_2's camera misses STAMPS[3] (sample-and-hold)."""
    root.mkdir(parents=True, exist_ok=True)
    with h5py.File(root / "mocap.hdf5", "w") as f:
        for k, stamp in enumerate(STAMPS):
            objects = [
                {"id": 0, "type": "node", "position": [2.0, 1.2, 0.0]},
                {"id": 3, "type": "truck", "position": [0.1 * k, 0.05, -0.2 * k] if k != 4 else [np.nan] * 3,
                 "rotation": [1, 0, 0, 0, 1, 0, 0, 0, 1], "timestamp": stamp / 1000},
            ]
            f.create_group(str(stamp)).create_dataset("mocap", data=json.dumps(objects))
    for n, node in enumerate(NODES):
        (root / node).mkdir(exist_ok=True)
        with h5py.File(root / node / "zed.hdf5", "w") as f:
            for k, stamp in enumerate(STAMPS):
                if node == "node_2" and node_2_gap and k == 3:
                    continue
                group = f.create_group(str(stamp)).create_group(node)
                group.create_dataset("zed_camera_left", data=_jpeg((40 * k, 20 * n, 200)))
                group.create_dataset("zed_camera_depth", data=np.full((27, 48), 1000 + 100 * k, dtype=np.uint16))
        with h5py.File(root / node / "respeaker.hdf5", "w") as f:
            for k, stamp in enumerate(STAMPS):
                chunk = np.full((1067, 6), k / 10, dtype=np.float32)
                f.create_group(str(stamp)).create_group(node).create_dataset("mic_waveform", data=chunk)
    return root


@pytest.fixture
def split(tmp_path):
    return write_split(tmp_path / "test")


def test_reads_samples_with_rep103_positions(split):
    reader = GDTMReader(split, views=NODES, window_seconds=0.2)
    assert len(reader) == len(STAMPS)
    sample, target = reader[2]
    assert sample[("node_1", "rgb")].shape == (27, 48, 3) and sample[("node_1", "rgb")].dtype == np.uint8
    assert abs(int(sample[("node_1", "rgb")][..., 0].mean()) - 80) < 6  # JPEG of colour (80, 20·n, 200)
    assert sample[("node_2", "depth")].dtype == np.uint16 and sample[("node_2", "depth")][0, 0] == 1200
    np.testing.assert_allclose(target["position"], [0.2, 0.4])  # (x_opt, −z_opt)
    assert target["timestamp_ms"] == STAMPS[2]


def test_sample_and_hold_and_nan_positions(split):
    reader = GDTMReader(split, views=NODES, window_seconds=0.2)
    sample, _ = reader[3]
    assert sample[("node_2", "depth")][0, 0] == 1200  # node_2 has no frame at STAMPS[3]: keeps STAMPS[2]'s
    assert sample[("node_1", "depth")][0, 0] == 1300
    _, target = reader[4]
    np.testing.assert_allclose(target["position"], [0.3, 0.6])  # NaN marker → last known position


def test_mic_window_joins_the_most_recent_chunks(split):
    reader = GDTMReader(split, views=NODES, window_seconds=0.2)  # 3200 samples = parts of 3 chunks of 1067
    mic = reader[5][0][("node_1", "mic")]
    assert mic.shape == (3200,)
    assert mic[-1] == pytest.approx(0.5) and mic[-1067] == pytest.approx(0.5) and mic[-1068] == pytest.approx(0.4)
    early = reader[0][0][("node_1", "mic")]
    assert early[0] == 0.0 and early[-1] == 0.0  # zero-padded before the first chunk (value 0.0 here too)


def test_missing_and_corrupt_files_name_the_file(split, tmp_path):
    (split / "node_2" / "respeaker.hdf5").unlink()
    with pytest.raises(DatasetFileError, match=r"node_2/respeaker\.hdf5.*missing"):
        GDTMReader(split, views=NODES)

    broken = write_split(tmp_path / "broken")
    (broken / "node_1" / "zed.hdf5").write_bytes(b"this is not HDF5")
    with pytest.raises(DatasetFileError, match=r"node_1/zed\.hdf5.*not a readable HDF5"):
        GDTMReader(broken, views=NODES)


def test_bad_mocap_json_names_the_file(tmp_path):
    root = write_split(tmp_path / "bad")
    with h5py.File(root / "mocap.hdf5", "a") as f:
        del f[str(STAMPS[1])]["mocap"]
        f[str(STAMPS[1])].create_dataset("mocap", data="{not json")
    with pytest.raises(DatasetFileError, match=rf"mocap\.hdf5.*timestamp {STAMPS[1]}"):
        GDTMReader(root, views=NODES)
