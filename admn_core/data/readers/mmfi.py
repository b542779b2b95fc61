"""MM-Fi reader: RGB + depth sequences with the official subject split.

Layout: `E01..E04/S01..S40/A01..A27/<modality>/frameNNN.<ext>` (297 frames per sequence, NNN from 001).

* depth: 16-bit PNG in millimetres (public release) → uint16 [T, H, W].
* rgb: image files (`.png`/`.jpg`) — the public `rgb/` folder holds 17-keypoint `.npy` files instead (faces are
  withheld); ADMN used a defaced RGB set obtained from the authors. A sequence with keypoints only raises
  `DatasetFileError` saying so; pass `modalities=("depth",)` to read depth alone.

Frames per sample (official loader): train = a random 30-frame window (start in [0, 266)) subsampled by 2;
val/test = frames 0–29 subsampled by 2 → 15 frames. The train window is drawn from (seed, index, epoch).
Classes: the 27 actions A01–A27 (label = action − 1, official), or `classes=` (action folder names; label =
position, e.g. a dataset of your own in this layout with other actions).
Target: {"label", "action", "subject", "environment"}.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from admn_core.data.errors import DatasetFileError
from admn_core.data.readers.decode import read_image

MMFI_SPLITS = {
    "train": [f"S{s:02d}" for base in (0, 10, 20, 30) for s in range(base + 1, base + 7)],
    "val": ["S07", "S17", "S27", "S37"],
    "test": [f"S{s:02d}" for base in (0, 10, 20, 30) for s in range(base + 8, base + 11)],
}
MMFI_ACTIONS = tuple(f"A{a:02d}" for a in range(1, 28))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_FRAME_NUMBER = re.compile(r"frame(\d+)")


class MMFiReader:
    def __init__(self, root: str | Path, split: str = "test", modalities: tuple[str, ...] = ("rgb", "depth"),
                 window: int = 30, stride: int = 2, max_start: int = 266, seed: int = 0, view: str = "camera",
                 classes: tuple[str, ...] = MMFI_ACTIONS) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetFileError(self.root, "MM-Fi root directory not found")
        if split not in MMFI_SPLITS:
            raise DatasetFileError(self.root, f"unknown split {split!r}; choose one of {sorted(MMFI_SPLITS)}")
        unknown = set(modalities) - {"rgb", "depth"}
        if unknown:
            raise DatasetFileError(self.root, f"unsupported MM-Fi modalities {sorted(unknown)} (rgb, depth)")
        self.split, self.modalities, self.view = split, modalities, view
        self.window, self.stride, self.max_start, self.seed = window, stride, max_start, seed
        self.epoch = 0
        self.classes = tuple(classes)
        subjects = set(MMFI_SPLITS[split])
        self.sequences = sorted(
            path for path in self.root.glob("E*/S*/A*")
            if path.is_dir() and path.parent.name in subjects)
        if not self.sequences:
            raise DatasetFileError(self.root, f"no E*/S*/A* sequence of the {split} subjects {sorted(subjects)}")
        unknown_actions = sorted({path.name for path in self.sequences} - set(self.classes))
        if unknown_actions:
            raise DatasetFileError(self.root, f"actions {unknown_actions} are not among the classes "
                                              f"{list(self.classes)} (pass classes=… to choose them)")

    @property
    def frames(self) -> int:
        """Frames per sample: the window subsampled by the stride."""
        return len(range(0, self.window, self.stride))

    def set_epoch(self, epoch: int) -> None:
        """Train windows differ per epoch (call from the training loop)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sequences)

    def frame_indices(self, index: int) -> np.ndarray:
        start = 0
        if self.split == "train":
            start = int(np.random.default_rng([self.seed, index, self.epoch]).integers(0, self.max_start))
        return np.arange(start, start + self.window, self.stride)

    def __getitem__(self, index: int):
        sequence = self.sequences[index]
        frames = self.frame_indices(index)
        sample = {}
        for modality in self.modalities:
            files = self._frame_files(sequence / modality)
            if frames[-1] >= len(files):
                raise DatasetFileError(sequence / modality, f"has {len(files)} frames, need index {frames[-1]}")
            mode = None if modality == "depth" else "RGB"
            stack = np.stack([read_image(files[i], mode) for i in frames])
            sample[(self.view, modality)] = stack.astype(np.uint16) if modality == "depth" else stack
        action = sequence.name
        target = {"label": self.classes.index(action), "action": action, "subject": sequence.parent.name,
                  "environment": sequence.parent.parent.name}
        return sample, target

    @staticmethod
    def _frame_files(folder: Path) -> list[Path]:
        if not folder.is_dir():
            raise DatasetFileError(folder, "missing modality folder")
        files = [p for p in folder.iterdir() if _FRAME_NUMBER.match(p.stem)]
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            if any(p.suffix == ".npy" for p in files):
                raise DatasetFileError(folder, "holds keypoint .npy files, not images: the public MM-Fi release "
                                               "withholds RGB frames (ADMN used a defaced set from the authors)")
            raise DatasetFileError(folder, "no frameNNN image files")
        return sorted(images, key=lambda p: int(_FRAME_NUMBER.match(p.stem).group(1)))
