"""AVE (Tian et al. 2018) reader.

Annotation files (`Annotations.txt`, `trainSet.txt`, `valSet.txt`, `testSet.txt`): one line per clip,
`Category&VideoID&Quality&StartTime&EndTime` (integer seconds); a leading header line is detected and skipped.

Two media layouts are supported (auto-detected):

* "extracted" — ADMN's pre-extracted layout: `New_Data/<id>.wav` and `New_Data/<id>/{1..8}.png`.
* "video" — the released `AVE/<id>.mp4`: frames are decoded with OpenCV (opencv-python-headless), sampled evenly
  over the 10 s clip. OpenCV cannot decode the audio track, so the audio is read from `AVE/<id>.wav` next to it
  (extract once with `ffmpeg -i <id>.mp4 -ac 1 -ar 16000 <id>.wav`); a missing WAV is an error naming that file.

Classes: `classes=` (a sequence of category names: label = position) or, by default, taken from the annotation
files: AVE's 28 categories in the official `class_to_idx` order when every category is one of them, else the sorted
categories of all annotation files present (so every split of your own dataset agrees on the indices).

Audio: the whole clip, or with `audio_seconds` the window of that length centred on the annotated event
(`audio_anchor="event"`, the default) or on the clip's centre (`"clip"`), zero-padded past the clip's ends.
Pass the model's window (`ModalitySpec.audio_window_seconds`; `admn train --dataset ave` does): the engine's
spectrogram otherwise covers the last window of whatever it gets, right for a live stream, wrong for a clip.

Sample: {(view, "rgb"): uint8 [frames, H, W, 3], (view, "audio"): float32 mono at `sample_rate`}.
Target: {"label": class index, "category", "video_id", "event_s": [start, end]}.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from admn_core.data.errors import DatasetFileError
from admn_core.data.readers.decode import read_image, read_wav
from admn_core.preprocess import clip_audio_window

# The official class_to_idx order: 0 = Church bell … 27 = Mandolin.
AVE_CLASSES = (
    "Church bell", "Male speech, man speaking", "Bark", "Fixed-wing aircraft, airplane", "Race car, auto racing",
    "Female speech, woman speaking", "Helicopter", "Violin, fiddle", "Flute", "Ukulele", "Frying (food)", "Truck",
    "Shofar", "Motorcycle", "Acoustic guitar", "Train horn", "Clock", "Banjo", "Goat", "Baby cry, infant cry", "Bus",
    "Chainsaw", "Cat", "Horse", "Toilet flush", "Rodents, rats, mice", "Accordion", "Mandolin",
)
SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt", "all": "Annotations.txt"}
AUDIO_ANCHORS = ("event", "clip")


@dataclass(frozen=True)
class AVEClip:
    category: str
    video_id: str
    quality: str
    start_s: int
    end_s: int
    line: int  # in its annotation file, for error messages


def parse_annotations(path: Path) -> list[AVEClip]:
    if not path.is_file():
        raise DatasetFileError(path, "missing AVE annotation file")
    clips = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        fields = line.split("&")
        if number == 1 and fields[0].strip().lower() == "category":
            continue  # header line
        if len(fields) != 5:
            raise DatasetFileError(path, f"line {number}: expected Category&VideoID&Quality&Start&End, got {line!r}")
        category, video_id, quality, start, end = (f.strip() for f in fields)
        try:
            clips.append(AVEClip(category, video_id, quality, int(start), int(end), number))
        except ValueError:
            raise DatasetFileError(path, f"line {number}: start/end must be integer seconds, got {line!r}") from None
    return clips


def dataset_classes(annotations_dir: Path) -> tuple[str, ...]:
    """The categories of every annotation file present: AVE's official list if they all belong to it, else sorted."""
    files = [annotations_dir / name for name in SPLIT_FILES.values() if (annotations_dir / name).is_file()]
    if not files:
        raise DatasetFileError(annotations_dir, f"no AVE annotation file ({', '.join(SPLIT_FILES.values())})")
    categories = {clip.category for path in files for clip in parse_annotations(path)}
    return AVE_CLASSES if categories <= set(AVE_CLASSES) else tuple(sorted(categories))


class AVEReader:
    modalities = ("rgb", "audio")

    def __init__(self, root: str | Path, split: str = "test", layout: str = "auto", frames: int = 8,
                 sample_rate: int = 16000, view: str = "clip", annotations_dir: str | Path | None = None,
                 clip_seconds: float = 10.0, classes: tuple[str, ...] | None = None,
                 audio_seconds: float | None = None, audio_anchor: str = "event") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetFileError(self.root, "AVE root directory not found")
        if split not in SPLIT_FILES:
            raise DatasetFileError(self.root, f"unknown split {split!r}; choose one of {sorted(SPLIT_FILES)}")
        if layout == "auto":
            layout = "extracted" if (self.root / "New_Data").is_dir() else "video"
        if layout not in ("extracted", "video"):
            raise DatasetFileError(self.root, f"unknown AVE layout {layout!r} (extracted | video)")
        self.layout = layout
        self.frames = frames
        self.sample_rate = sample_rate
        self.view = view
        self.clip_seconds = clip_seconds
        if audio_anchor not in AUDIO_ANCHORS:
            raise DatasetFileError(self.root, f"unknown audio_anchor {audio_anchor!r}; choose one of {AUDIO_ANCHORS}")
        self.audio_seconds, self.audio_anchor = audio_seconds, audio_anchor
        annotations = Path(annotations_dir or self.root)
        self.classes = tuple(classes) if classes is not None else dataset_classes(annotations)
        path = annotations / SPLIT_FILES[split]
        self.clips = parse_annotations(path)
        known = set(self.classes)
        for clip in self.clips:
            if clip.category not in known:
                raise DatasetFileError(path, f"line {clip.line}: unknown AVE category {clip.category!r}; the "
                                             f"classes are {list(self.classes)} (pass classes=… to choose them)")

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int):
        clip = self.clips[index]
        if self.layout == "extracted":
            folder = self.root / "New_Data" / clip.video_id
            images = np.stack([read_image(folder / f"{k}.png") for k in range(1, self.frames + 1)])
            audio = read_wav(self.root / "New_Data" / f"{clip.video_id}.wav", self.sample_rate)
        else:
            video = self.root / "AVE" / f"{clip.video_id}.mp4"
            images = self._video_frames(video)
            wav = video.with_suffix(".wav")
            if not wav.is_file():
                raise DatasetFileError(wav, f"missing: OpenCV cannot decode mp4 audio; extract it once with "
                                            f"`ffmpeg -i {video} -ac 1 -ar {self.sample_rate} {wav}`")
            audio = read_wav(wav, self.sample_rate)
        if self.audio_seconds is not None:
            centre = ((clip.start_s + clip.end_s) / 2 if self.audio_anchor == "event" else self.clip_seconds / 2)
            audio = clip_audio_window(audio, self.sample_rate, self.audio_seconds, centre)
        sample = {(self.view, "rgb"): images, (self.view, "audio"): audio}
        target = {"label": self.classes.index(clip.category), "category": clip.category, "video_id": clip.video_id,
                  "event_s": np.array([clip.start_s, clip.end_s], dtype=np.float32)}
        return sample, target

    def _video_frames(self, path: Path) -> np.ndarray:
        if not path.is_file():
            raise DatasetFileError(path, "missing AVE video")
        try:
            import cv2
        except ImportError:  # pragma: no cover - depends on the environment
            raise DatasetFileError(path, "decoding AVE mp4 needs OpenCV (pip install opencv-python-headless), "
                                         "or use the extracted layout (New_Data/<id>/{1..8}.png)") from None
        capture = cv2.VideoCapture(str(path))
        try:
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            if not capture.isOpened() or count <= 0:
                raise DatasetFileError(path, "OpenCV cannot open this video (corrupt file or unsupported codec)")
            # Frame k sits at the centre of the k-th of `frames` equal parts of the clip.
            wanted = ((np.arange(self.frames) + 0.5) * count / self.frames).astype(int)
            images = []
            for frame_index in wanted:
                capture.set(cv2.CAP_PROP_POS_FRAMES, int(frame_index))
                ok, frame = capture.read()
                if not ok:
                    raise DatasetFileError(path, f"cannot decode frame {frame_index} of {count}")
                images.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        finally:
            capture.release()
        return np.stack(images)
