"""Clips from a stream: the last T frames of every input of a clip model (`ModalitySpec.frames` = T > 1).

A clip classifier (the AVE and MM-Fi presets) takes T frames per view, as its dataset reader yields them; a live
stream delivers one frame per input per synchronized set. `FrameHistory` keeps, per multi-frame input, the most
recent T decoded frames (newest last) and turns each set's frame into the [T, H, W(, 3)] clip the model takes.
- Until T frames have arrived the oldest one is repeated at the front: the first sets are answered from a clip
  that is partly still, rather than not at all (`warming_up` says so).
- A frame whose shape differs from the held ones (the camera changed resolution) starts that input's clip over.
- `reset()` forgets everything: the input time jumped back (a looping bag, a restarted simulator).
Single-frame models get an empty history and `clip` returns the sample unchanged.
"""

from __future__ import annotations

import collections

import numpy as np

from admn_core.config import ModelConfig

SINGLE_FRAME_DIMS = {"rgb": 3, "depth": 2}  # [H, W, 3] and [H, W]


class FrameHistory:
    def __init__(self, config: ModelConfig):
        self._kinds: dict[tuple[str, str], str] = {}
        self._frames: dict[tuple[str, str], collections.deque] = {}
        for spec in config.modalities:
            if spec.frames > 1 and spec.kind in SINGLE_FRAME_DIMS:
                for view in spec.views:
                    self._kinds[(view, spec.name)] = spec.kind
                    self._frames[(view, spec.name)] = collections.deque(maxlen=spec.frames)
        self.restarts = 0  # clips started over because a frame's shape changed

    def __bool__(self) -> bool:
        return bool(self._frames)

    @property
    def warming_up(self) -> bool:
        """Some input has fewer than T frames yet: its clip repeats the oldest one."""
        return any(len(frames) < frames.maxlen for frames in self._frames.values())

    def clip(self, sample: dict) -> dict:
        """A copy of `sample` whose multi-frame inputs hold their last T frames ([T, H, W(, 3)], oldest first)."""
        if not self._frames:
            return sample
        clipped = dict(sample)
        for key, frames in self._frames.items():
            frame = sample.get(key)
            if frame is None:
                continue
            if frame.ndim == SINGLE_FRAME_DIMS[self._kinds[key]] + 1:  # already a clip (a blind input's stand-in)
                frame = frame[-1]
            if frames and frames[-1].shape != frame.shape:
                frames.clear()
                self.restarts += 1
            frames.append(frame)
            padding = [frames[0]] * (frames.maxlen - len(frames))
            clipped[key] = np.stack([*padding, *frames])
        return clipped

    def reset(self) -> None:
        for frames in self._frames.values():
            frames.clear()
