"""PyTorch datasets over the world: a streamed on-disk cache, or samples generated on the fly.

Both return (sample, target): sample = {(view, modality): numpy array in sensor units}, target = World.target's
dict (position float32 [2] metres, heading, speed, time, corruption labels per modality). torch's default collate
turns them into batched tensors (tuple keys are kept); preprocessing belongs to the engine (`transform` hook).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset

from admn_core.data.cache import WorldCache
from admn_core.data.world import World, WorldConfig


class WorldCacheDataset(Dataset):
    """Streams a cache directory written by `write_cache`; only the requested samples are read from disk."""

    def __init__(self, root: str | Path, transform: Callable | None = None) -> None:
        self.cache = WorldCache(root)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, index: int):
        if index < 0:
            index += len(self)
        item = (self.cache.sample(index), self.cache.target(index))
        return self.transform(*item) if self.transform else item


class WorldDataset(Dataset):
    """Generates sample `index` of (preset, seed) on demand: deterministic, no disk, any length."""

    def __init__(self, num_samples: int, preset: str = "mixed", seed: int = 0,
                 world_config: WorldConfig | None = None, transform: Callable | None = None) -> None:
        self.num_samples = num_samples
        self.preset = preset
        self.seed = seed
        self.world_config = world_config or WorldConfig()
        self.transform = transform
        self.redraw: int | None = None  # World.generate's corruption redraw (FreshCorruptionDataset sets it)
        self._world: World | None = None

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int):
        if not 0 <= index < self.num_samples:
            raise IndexError(f"sample index {index} out of range ({self.num_samples} samples)")
        if self._world is None:  # built lazily so each DataLoader worker makes its own
            self._world = World(self.world_config)
        item = self._world.generate(index, self.preset, self.seed, redraw=self.redraw)
        return self.transform(*item) if self.transform else item

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_world"] = None
        return state


class FreshCorruptionDataset(WorldDataset):
    """Sample `index` of (preset, seed) with a new corruption every epoch: the car state and clean render are
    fixed by (seed, index), the corruption draw (condition and noise) by (seed, index, epoch) (`World.generate`'s
    `redraw`).

    The official GDTM Gaussian loader adds its noise on the fly, so Stage 1 never sees the same noisy frame twice;
    a fixed corrupted cache of a few thousand samples is memorised instead (on our Gaussian world: validation loss
    15.9 → 74 while training loss fell). Call `set_epoch` before each epoch (every training loop does, through
    `admn_core.train.loop.start_epoch`).
    """

    def __init__(self, num_samples: int, preset: str = "mixed", seed: int = 0,
                 world_config: WorldConfig | None = None, transform: Callable | None = None) -> None:
        super().__init__(num_samples, preset, seed, world_config, transform)
        self.redraw = 0

    def set_epoch(self, epoch: int) -> None:
        self.redraw = int(epoch)
