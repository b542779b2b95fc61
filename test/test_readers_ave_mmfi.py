"""AVE and MM-Fi readers on tiny fixtures written in the datasets' layouts."""

import wave

import numpy as np
import pytest
from PIL import Image

from admn_core.data.errors import DatasetFileError
from admn_core.data.readers import AVE_CLASSES, AVEReader, MMFiReader


def _write_wav(path, samples: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((samples * 32767).astype("<i2").tobytes())


def _ave_root(tmp_path, layout: str):
    root = tmp_path / f"ave_{layout}"
    root.mkdir()
    (root / "testSet.txt").write_text("Category&VideoID&Quality&StartTime&EndTime\n"
                                      "Bark&vidA&good&2&7\nMandolin&vidB&good&0&10\n")
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    if layout == "extracted":
        for vid in ("vidA", "vidB"):
            (root / "New_Data" / vid).mkdir(parents=True)
            _write_wav(root / "New_Data" / f"{vid}.wav", tone, 8000)
            for k in range(1, 9):
                Image.fromarray(np.full((24, 32, 3), 10 * k, np.uint8)).save(root / "New_Data" / vid / f"{k}.png")
    return root, tone


def test_ave_extracted_layout(tmp_path):
    root, _ = _ave_root(tmp_path, "extracted")
    reader = AVEReader(root, split="test")
    assert len(reader) == 2  # the header line is skipped
    sample, target = reader[0]
    assert target["label"] == AVE_CLASSES.index("Bark") == 2 and target["category"] == "Bark"
    assert reader[1][1]["label"] == 27  # Mandolin is the last class in the official order
    frames = sample[("clip", "rgb")]
    assert frames.shape == (8, 24, 32, 3) and frames[7].mean() == 80
    audio = sample[("clip", "audio")]
    assert audio.dtype == np.float32 and audio.shape == (16000,)  # 1 s at 8 kHz resampled to 16 kHz
    assert np.sqrt(np.mean(audio**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_ave_video_layout_decodes_frames_and_needs_the_wav(tmp_path):
    cv2 = pytest.importorskip("cv2")
    root, tone = _ave_root(tmp_path, "video")
    (root / "AVE").mkdir()
    for vid in ("vidA", "vidB"):
        writer = cv2.VideoWriter(str(root / "AVE" / f"{vid}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 24))
        if not writer.isOpened():
            pytest.skip("this OpenCV build cannot write mp4")
        for k in range(20):
            writer.write(np.full((24, 32, 3), 10 * k, np.uint8))
        writer.release()
    _write_wav(root / "AVE" / "vidA.wav", tone, 16000)
    reader = AVEReader(root, split="test")
    assert reader.layout == "video"
    sample, _ = reader[0]
    frames = sample[("clip", "rgb")]
    assert frames.shape == (8, 24, 32, 3)
    assert np.all(np.diff(frames.reshape(8, -1).mean(axis=1)) > 0)  # evenly spaced, in time order
    with pytest.raises(DatasetFileError, match=r"vidB\.wav.*ffmpeg"):
        reader[1]


def test_ave_bad_annotation_names_file_and_line(tmp_path):
    root, _ = _ave_root(tmp_path, "extracted")
    (root / "testSet.txt").write_text("Bark&vidA&good&2&7\nDragon&vidB&good&0&10\n")
    with pytest.raises(DatasetFileError, match=r"testSet\.txt: line 2: unknown AVE category 'Dragon'"):
        AVEReader(root, split="test", classes=AVE_CLASSES)
    assert AVEReader(root, split="test").classes == ("Bark", "Dragon")  # a dataset of its own: its categories
    with pytest.raises(DatasetFileError, match=r"valSet\.txt: missing"):
        AVEReader(root, split="val")


def _mmfi_sequence(root, subject: str, action: str, frames: int, rgb_as_keypoints: bool = False):
    sequence = root / "E01" / subject / action
    (sequence / "rgb").mkdir(parents=True)
    (sequence / "depth").mkdir(parents=True)
    for k in range(1, frames + 1):
        Image.fromarray(np.full((12, 16), 1000 + k, np.uint16)).save(sequence / "depth" / f"frame{k:03d}.png")
        if rgb_as_keypoints:
            np.save(sequence / "rgb" / f"frame{k:03d}.npy", np.zeros((17, 2)))
        else:
            Image.fromarray(np.full((12, 16, 3), k, np.uint8)).save(sequence / "rgb" / f"frame{k:03d}.png")
    return sequence


def test_mmfi_test_split_reads_15_frames_of_the_first_30(tmp_path):
    root = tmp_path / "mmfi"
    _mmfi_sequence(root, "S08", "A03", 32)
    _mmfi_sequence(root, "S01", "A05", 32)  # a train subject: not in the test split
    reader = MMFiReader(root, split="test")
    assert len(reader) == 1
    sample, target = reader[0]
    assert target == {"label": 2, "action": "A03", "subject": "S08", "environment": "E01"}
    assert MMFiReader(root, split="test", classes=("A03",))[0][1]["label"] == 0
    with pytest.raises(DatasetFileError, match=r"actions \['A03'\] are not among the classes"):
        MMFiReader(root, split="test", classes=("A01",))
    depth = sample[("camera", "depth")]
    assert depth.dtype == np.uint16 and depth.shape == (15, 12, 16)
    np.testing.assert_array_equal(depth[:, 0, 0], 1001 + np.arange(0, 30, 2))  # millimetres preserved
    assert sample[("camera", "rgb")].shape == (15, 12, 16, 3)


def test_mmfi_train_windows_are_seeded(tmp_path):
    root = tmp_path / "mmfi"
    _mmfi_sequence(root, "S01", "A05", 40)
    reader = MMFiReader(root, split="train", max_start=10, seed=1)
    first = reader.frame_indices(0)
    assert len(first) == 15 and first[0] < 10
    np.testing.assert_array_equal(first, MMFiReader(root, split="train", max_start=10, seed=1).frame_indices(0))
    assert reader[0][1]["label"] == 4


def test_mmfi_keypoint_only_rgb_is_explained(tmp_path):
    root = tmp_path / "mmfi"
    _mmfi_sequence(root, "S09", "A01", 30, rgb_as_keypoints=True)
    with pytest.raises(DatasetFileError, match=r"S09/A01/rgb.*keypoint"):
        MMFiReader(root, split="test")[0]
    depth_only = MMFiReader(root, split="test", modalities=("depth",))
    assert set(depth_only[0][0]) == {("camera", "depth")}
