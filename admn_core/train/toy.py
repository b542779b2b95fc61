"""A tiny learnable dataset and model config for tests, smoke runs and the torchrun check (seconds on a CPU).

`SquareDataset`: every view of every modality sees the same bright (RGB) / near (depth) square; its grid position is
the target (metres, world frame). `noisy` picks which modality is replaced by pure noise (label σ = 1, severity 1):
"none", a modality name, or "alternate" (per sample, one random modality is noise). Items follow the dataset
contract: ({(view, modality): array in sensor units}, {"position_m", "label", "corruption": {modality: label}}).
`CrashAfter`: a dataset wrapper that raises after N fetches, to test resuming an interrupted run.
`EpochRecorder`: an epoch-aware dataset wrapper (`set_epoch`, as FreshCorruptionDataset) that records the epochs
it was told, to test that a training loop tells it each epoch.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from admn_core.config import ControllerSpec, FusionSpec, HeadSpec, LayerDropSpec, ModalitySpec, ModelConfig

GRID = 5  # square positions per axis
CELL_M = 0.3  # metres between neighbouring positions → targets within ±0.6 m


def toy_config(views: tuple[str, ...] = ("node_1", "node_2"), task: str = "localization",
               trainable_last_blocks: int = 2, size: int = 16) -> ModelConfig:
    """RGB + depth, 12 blocks per backbone, 32 wide, `size`×`size` inputs: a full-shape ADMN in miniature."""
    small = dict(views=views, patch_size=size, embed_dim=32, num_heads=2, controller_input_size=(size, size),
                 trainable_last_blocks=trainable_last_blocks)
    return ModelConfig(
        name="toy",
        modalities=(
            ModalitySpec(name="rgb", kind="rgb", channels=3, input_size=(size, size), **small),
            ModalitySpec(name="depth", kind="depth", channels=1, input_size=(size, size), norm_mean=(0.5,),
                         norm_std=(0.25,), **small),
        ),
        fusion=FusionSpec(adapter_hidden=32, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64),
        head=HeadSpec(task=task, num_classes=GRID * GRID if task == "classification" else 0,
                      position_unit_m=0.1, mean_half_range=(10.0, 10.0)),  # decimetres: errors of a few units
        controller=ControllerSpec(stem_channels=4, stem_kernels=(3, 3, 3), stem_pool=2, embed_dim=32, depth=1,
                                  heads=2, dim_head=16, mlp_dim=64, logit_hidden=32),
        layerdrop=LayerDropSpec(max_rate=0.2, step=0.1, every_epochs=1, full_backbone_drop=0.1),
    )


class SquareDataset(Dataset):
    def __init__(self, config: ModelConfig, length: int = 64, noisy: str = "none", seed: int = 0):
        names = config.modality_names
        if noisy not in ("none", "alternate", *names):
            raise ValueError(f"noisy must be none, alternate or one of {names}, got {noisy!r}")
        self.config, self.length, self.noisy, self.seed = config, length, noisy, seed

    def __len__(self) -> int:
        return self.length

    def noisy_modality(self, index: int) -> str | None:
        if self.noisy == "none":
            return None
        if self.noisy == "alternate":
            return self.config.modality_names[np.random.default_rng([self.seed, index, 1]).integers(2)]
        return self.noisy

    def __getitem__(self, index: int):
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        cell = rng.integers(0, GRID, size=2)
        noisy = self.noisy_modality(index)
        sample, labels = {}, {}
        for spec in self.config.modalities:
            height, width = spec.input_size
            side = max(2, height // 3)
            row = int(cell[1] * (height - side) / (GRID - 1))
            col = int(cell[0] * (width - side) / (GRID - 1))
            is_noise = spec.name == noisy
            labels[spec.name] = {"category": "gaussian" if is_noise else "clean", "category_id": int(is_noise),
                                 "severity": int(is_noise), "value": float(is_noise)}
            for view in spec.views:
                if spec.kind == "rgb":
                    if is_noise:
                        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                    else:
                        image = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
                        image[row:row + side, col:col + side] = 230
                    sample[(view, spec.name)] = image
                else:
                    if is_noise:
                        depth = rng.integers(0, 10000, (height, width), dtype=np.uint16)
                    else:
                        depth = rng.integers(6000, 6500, (height, width), dtype=np.uint16)
                        depth[row:row + side, col:col + side] = 1000
                    sample[(view, spec.name)] = depth
        position = ((cell - (GRID - 1) / 2) * CELL_M).astype(np.float32)
        return sample, {"position_m": position, "label": int(cell[1] * GRID + cell[0]), "corruption": labels}


class CrashAfter(Dataset):
    """Raises after `items` fetches: an interrupted run (the crash, not the training, is simulated)."""

    def __init__(self, dataset, items):
        self.dataset, self.items, self.fetched = dataset, items, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.fetched += 1
        if self.fetched > self.items:
            raise RuntimeError("simulated crash")
        return self.dataset[index]


class EpochRecorder(Dataset):
    """Records every `set_epoch` call in `epochs`."""

    def __init__(self, dataset):
        self.dataset, self.epochs = dataset, []

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)
