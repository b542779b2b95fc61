"""GDTM preprocessed HDF5 reader.

Layout of one split directory (`…/train`, `…/val` or `…/test`)::

    mocap.hdf5                      group per millisecond timestamp (string key) holding dataset `mocap`: a JSON
                                    string, a list of objects {id, type ('node' | 'truck'), position [x, y, z]
                                    metres in the OptiTrack frame (y up), rotation, …}
    node_K/zed.hdf5                 timestamp → `node_K` → `zed_camera_left` (JPEG bytes), `zed_camera_depth`
                                    (uint16 mm)
    node_K/realsense.hdf5           timestamp → `node_K` → `realsense_camera_img` (JPEG), `realsense_camera_depth`
                                    (JPEG of a colour-mapped depth: not metric)
    node_K/respeaker.hdf5           timestamp → `node_K` → `mic_waveform` (float32 [samples, 6], 16 kHz)

One sample per mocap timestamp with sample-and-hold imputation (a stream missing at that instant keeps its last
value), dropping leading timestamps before every stream has started — as the official cacher does.

Output: {(node, "rgb"): uint8 [H, W, 3], (node, "depth"): uint16 mm [H, W] (ZED depth; with
depth_source="realsense_camera_depth" the grayscale of the colour-mapped JPEG, uint8, as the official code used),
(node, "mic"): float32 [window] mono}. Target position: the car in REP-103 world metres, (x, y) = (x_opt, −z_opt):
OptiTrack is y-up with x forward, so its z axis points right; the official code regresses (x_opt, z_opt) in cm.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import numpy as np

from admn_core.data.errors import DatasetFileError
from admn_core.data.readers.decode import decode_image_bytes

SOURCE_FILES = {
    "zed_camera_left": "zed.hdf5",
    "zed_camera_right": "zed.hdf5",
    "zed_camera_depth": "zed.hdf5",
    "realsense_camera_img": "realsense.hdf5",
    "realsense_camera_depth": "realsense.hdf5",
    "mic_waveform": "respeaker.hdf5",
}


def _open_h5(path: Path):
    try:
        import h5py
    except ImportError:  # pragma: no cover - depends on the environment
        raise DatasetFileError(path, "reading GDTM needs h5py (pip install h5py)") from None
    if not path.is_file():
        raise DatasetFileError(path, "missing (expected the GDTM preprocessed layout, see admn_core.data.readers.gdtm)")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DatasetFileError(path, f"not a readable HDF5 file: {exc}") from None


class GDTMReader:
    """Random access to a GDTM preprocessed split; `len(reader)` samples, `reader[i]` → (sample, target)."""

    def __init__(self, split_dir: str | Path, views: tuple[str, ...] = ("node_1", "node_2", "node_3"),
                 rgb_source: str | None = "zed_camera_left", depth_source: str | None = "zed_camera_depth",
                 mic_source: str | None = "mic_waveform", window_seconds: float = 0.64, sample_rate: int = 16000,
                 mic_channel: int = 0, car_id: int | None = None) -> None:
        self.root = Path(split_dir)
        if not self.root.is_dir():
            raise DatasetFileError(self.root, "GDTM split directory not found")
        self.views = views
        self.window_samples = int(round(window_seconds * sample_rate))
        self.mic_channel = mic_channel
        self.car_id = car_id
        self.streams = {name: source for name, source in
                        (("rgb", rgb_source), ("depth", depth_source), ("mic", mic_source)) if source}
        for source in self.streams.values():
            if source not in SOURCE_FILES:
                raise DatasetFileError(self.root, f"unknown GDTM dataset {source!r}; known: {sorted(SOURCE_FILES)}")
        self._files: dict[Path, object] = {}
        self._mocap_path = self.root / "mocap.hdf5"
        self._timestamps: dict[tuple[str, str], list[int]] = {}
        for view in views:
            for modality, source in self.streams.items():
                path = self._path(view, source)
                self._timestamps[(view, modality)] = self._index(path, view, source)
        self._frames, self._positions = self._read_mocap()

    # ------------------------------------------------------------------ indexing
    def _path(self, view: str, source: str) -> Path:
        return self.root / view / SOURCE_FILES[source]

    def _file(self, path: Path):
        if path not in self._files:
            self._files[path] = _open_h5(path)
        return self._files[path]

    def _index(self, path: Path, view: str, source: str) -> list[int]:
        handle = self._file(path)
        stamps = []
        try:
            for key in handle.keys():
                group = handle[key]
                if view in group and source in group[view]:
                    stamps.append(self._stamp(key, path))
        except (OSError, KeyError, TypeError) as exc:
            raise DatasetFileError(path, f"unreadable HDF5 content: {exc}") from None
        if not stamps:
            raise DatasetFileError(path, f"no timestamp holds {view}/{source}")
        return sorted(stamps)

    @staticmethod
    def _stamp(key: str, path: Path) -> int:
        try:
            return int(key)
        except ValueError:
            raise DatasetFileError(path, f"top-level key {key!r} is not a millisecond timestamp") from None

    def _read_mocap(self) -> tuple[list[int], np.ndarray]:
        handle = self._file(self._mocap_path)
        stamps = sorted(self._stamp(key, self._mocap_path) for key in handle.keys())
        first_ready = max(stamps_of[0] for stamps_of in self._timestamps.values()) if self._timestamps else 0
        frames, positions = [], []
        last = None
        for stamp in stamps:
            try:
                raw = handle[str(stamp)]["mocap"][()]
            except (KeyError, OSError) as exc:
                raise DatasetFileError(self._mocap_path, f"timestamp {stamp}: no `mocap` dataset ({exc})") from None
            position = self._car_position(raw, stamp)
            if np.all(np.isfinite(position)):
                last = position
            elif last is not None:
                position = last  # NaN (occluded marker) → last known value, as the official cacher
            if stamp < first_ready or last is None:
                continue
            frames.append(stamp)
            positions.append(position)
        if not frames:
            raise DatasetFileError(self._mocap_path, "no mocap timestamp after every sensor stream has started")
        return frames, np.asarray(positions, dtype=np.float32)

    def _car_position(self, raw, stamp: int) -> np.ndarray:
        text = raw.decode() if isinstance(raw, (bytes, np.bytes_)) else str(raw)
        try:
            objects = json.loads(text)
            cars = [o for o in objects if o.get("type") != "node"]
            if self.car_id is not None:
                cars = [o for o in cars if o.get("id") == self.car_id]
            x, _, z = (float(v) for v in cars[0]["position"])
        except (json.JSONDecodeError, IndexError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DatasetFileError(self._mocap_path, f"timestamp {stamp}: no car position in the mocap JSON ({exc!r})"
                                   ) from None
        return np.array([x, -z], dtype=np.float32)  # OptiTrack (x fwd, y up, z right) → REP-103 (x, y)

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"sample {index} out of range ({len(self)} samples in {self.root})")
        stamp = self._frames[index]
        sample = {}
        for modality, source in self.streams.items():
            for view in self.views:
                sample[(view, modality)] = self._read(view, modality, source, stamp)
        target = {"position": self._positions[index].copy(), "timestamp_ms": np.int64(stamp)}
        return sample, target

    def _read(self, view: str, modality: str, source: str, stamp: int) -> np.ndarray:
        stamps = self._timestamps[(view, modality)]
        position = bisect.bisect_right(stamps, stamp) - 1  # sample-and-hold: the latest value at or before `stamp`
        path = self._path(view, source)
        if modality == "mic":
            return self._mic_window(path, view, source, stamps, position)
        raw = self._dataset(path, stamps[position], view, source)
        if source.endswith("_depth") and source.startswith("zed"):
            return np.asarray(raw, dtype=np.uint16)
        mode = "L" if source == "realsense_camera_depth" else "RGB"
        return decode_image_bytes(_as_bytes(raw), f"{path}:{stamps[position]}/{view}/{source}", mode)

    def _dataset(self, path: Path, stamp: int, view: str, source: str):
        try:
            return self._file(path)[str(stamp)][view][source][()]
        except (KeyError, OSError) as exc:
            raise DatasetFileError(path, f"cannot read {stamp}/{view}/{source}: {exc}") from None

    def _mic_window(self, path: Path, view: str, source: str, stamps: list[int], position: int) -> np.ndarray:
        """The most recent `window` samples of channel `mic_channel`, joining chunks backwards (zero-padded)."""
        chunks, have = [], 0
        while position >= 0 and have < self.window_samples:
            chunk = np.asarray(self._dataset(path, stamps[position], view, source), dtype=np.float32)
            if chunk.ndim != 2 or chunk.shape[1] <= self.mic_channel:
                raise DatasetFileError(path, f"{stamps[position]}/{view}/{source}: expected [samples, channels], "
                                             f"got {chunk.shape}")
            chunks.append(chunk[:, self.mic_channel])
            have += chunk.shape[0]
            position -= 1
        joined = np.concatenate(chunks[::-1]) if chunks else np.zeros(0, np.float32)
        window = np.zeros(self.window_samples, dtype=np.float32)
        tail = joined[-self.window_samples:]
        window[self.window_samples - tail.size:] = tail
        return window

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_files"] = {}  # HDF5 handles are reopened per process
        return state


def _as_bytes(raw) -> bytes:
    if isinstance(raw, (bytes, np.bytes_)):
        return bytes(raw)
    if isinstance(raw, np.void):
        return raw.tobytes()
    return np.asarray(raw).tobytes()
