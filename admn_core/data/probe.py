"""Single-modality probe: can each modality alone localize the car, clean and corrupted?

For every modality, a small network sees only that modality (all views) and regresses the car's (x, y). It is
trained and tested under the same condition, so a corrupted score near the chance level means the corruption really
removed the information (not just a train/test shift). Chance = always predicting the training mean. If a
corruption leaves a modality as good as clean, layer allocation cannot matter in this world: that is a world bug.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from admn_core.data.audio import log_mel_spectrogram
from admn_core.data.corruptions import CorruptionSpec
from admn_core.data.corruptions.presets import BLUR_KERNELS, DEPTH_SIGMAS, LOWLIGHT_GAMMAS, MIC_SNRS_DB, RGB_SIGMAS
from admn_core.data.world import World, WorldConfig

logger = logging.getLogger(__name__)

# (condition name, sensor kind, spec): the severe level of every family that can hit the kind.
PROBE_CONDITIONS: dict[str, list[tuple[str, CorruptionSpec]]] = {
    "rgb": [("clean", CorruptionSpec()),
            ("gaussian σ=1", CorruptionSpec("gaussian", 1, RGB_SIGMAS[1])),
            ("gaussian σ=3", CorruptionSpec("gaussian", 3, RGB_SIGMAS[3])),
            ("lowlight γ=5", CorruptionSpec("lowlight", 1, LOWLIGHT_GAMMAS[0])),
            ("lowlight γ=100", CorruptionSpec("lowlight", 2, LOWLIGHT_GAMMAS[1])),
            ("blur k=51", CorruptionSpec("blur", 1, BLUR_KERNELS[0])),
            ("blur k=201", CorruptionSpec("blur", 2, BLUR_KERNELS[1])),
            ("rain+lowlight", CorruptionSpec("rain", 1, 1.0, (("gamma", 5.0),))),
            ("dropout", CorruptionSpec("dropout", 1, 1.0))],
    "depth": [("clean", CorruptionSpec()),
              ("gaussian σ=.25", CorruptionSpec("gaussian", 1, DEPTH_SIGMAS[1])),
              ("gaussian σ=.75", CorruptionSpec("gaussian", 3, DEPTH_SIGMAS[3])),
              ("saturation", CorruptionSpec("saturation", 1, 1.0))],
    "audio": [("clean", CorruptionSpec()),
              ("wind 0 dB", CorruptionSpec("wind", 1, MIC_SNRS_DB[0])),
              ("wind -20 dB", CorruptionSpec("wind", 3, MIC_SNRS_DB[2])),
              ("fan -10 dB", CorruptionSpec("fan", 2, MIC_SNRS_DB[1])),
              ("fan -20 dB", CorruptionSpec("fan", 3, MIC_SNRS_DB[2]))],
}


@dataclass(frozen=True)
class ProbeResult:
    modality: str
    condition: str
    mean_error_cm: float
    chance_error_cm: float

    @property
    def fraction_of_chance(self) -> float:
        return self.mean_error_cm / self.chance_error_cm


def _features(kind: str, arrays: list[np.ndarray], sample_rate: int) -> np.ndarray:
    """One sample's views → [V, C, H, W] float32: RGB on [0, 1], depth in metres (0 = no return), log-mel."""
    if kind == "rgb":
        return np.stack([a.astype(np.float32).transpose(2, 0, 1) / 255.0 for a in arrays])
    if kind == "depth":
        return np.stack([a.astype(np.float32)[None] / 1000.0 for a in arrays])
    return np.stack([((log_mel_spectrogram(a, sample_rate, n_mels=64) + 4.27) / 9.14)[None] for a in arrays])


def _background_residual(kind: str, x: np.ndarray, train_count: int) -> np.ndarray:
    """Images: |x − per-pixel median of the training set| max-pooled 2×2 (the car is a few pixels at 64×64).

    A classical background-subtraction front end, so a small CNN learns in seconds; depth pixels without a
    return (0) carry no residual. Audio features pass through unchanged.
    """
    if kind == "audio":
        return x
    background = np.median(x[:train_count], axis=0)
    residual = np.abs(x - background)
    if kind == "depth":
        residual[x == 0] = 0.0
        residual = np.minimum(residual, 2.0)  # metres: bound the garbage of saturated / noisy frames
    n, v, c, h, w = residual.shape
    return residual[..., : h // 2 * 2, : w // 2 * 2].reshape(n, v, c, h // 2, 2, w // 2, 2).max(axis=(4, 6))


def _train_and_test(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                    epochs: int, seed: int) -> float:
    """Tiny CNN shared across views → concatenated → linear (x, y). Returns mean test error in metres."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    views, channels = train_x.shape[1], train_x.shape[2]

    class ViewNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = nn.Sequential(
                nn.Conv2d(channels, 16, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(4), nn.Flatten())
            self.head = nn.Sequential(nn.Linear(views * 32 * 16, 128), nn.ReLU(), nn.Linear(128, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, V, C, H, W]
            b = x.shape[0]
            per_view = self.trunk(x.flatten(0, 1)).view(b, -1)
            return self.head(per_view)

    model = ViewNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    mean = torch.tensor(train_x.mean(axis=(0, 3, 4), keepdims=True)[0])
    std = torch.tensor(train_x.std(axis=(0, 3, 4), keepdims=True)[0] + 1e-6)
    tx, ty = (torch.from_numpy(train_x) - mean) / std, torch.from_numpy(train_y)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, len(tx) // 64)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=epochs * steps_per_epoch)
    for _ in range(epochs):
        order = torch.randperm(len(tx), generator=generator)
        for step in range(steps_per_epoch):
            batch = order[step * 64:(step + 1) * 64]
            loss = (model(tx[batch]) - ty[batch]).norm(dim=-1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()
    with torch.no_grad():
        predicted = model((torch.from_numpy(test_x) - mean) / std).numpy()
    return float(np.linalg.norm(predicted - test_y, axis=-1).mean())


def run_probe(train_samples: int = 1500, test_samples: int = 400, epochs: int = 12, seed: int = 0,
              world_config: WorldConfig | None = None, modalities: tuple[str, ...] | None = None) -> list[ProbeResult]:
    """Render clean samples once, corrupt them per condition, train/test one probe per (modality, condition)."""
    import torch

    torch.set_num_threads(1)  # these convolutions are too small to gain from threads; splitting them only adds overhead
    world = World(world_config)
    kinds = world.config.sensor_kinds
    wanted = modalities or tuple(kinds)
    started = time.perf_counter()
    renders = [world.render_clean(i, seed) for i in range(train_samples + test_samples)]
    positions = np.stack([np.asarray(r.state.position, np.float32) for r in renders])
    logger.info(f"rendered {len(renders)} clean samples in {time.perf_counter() - started:.1f} s")
    train_y, test_y = positions[:train_samples], positions[train_samples:]
    chance = float(np.linalg.norm(test_y - train_y.mean(axis=0), axis=-1).mean())
    results = []
    for modality in wanted:
        kind = kinds[modality]
        for condition, spec in PROBE_CONDITIONS[kind]:
            features = []
            for index, render in enumerate(renders):
                plan = {(view, modality): spec for view in world.config.views}
                rng = np.random.default_rng([seed, index, 7])
                keys = [(view, modality) for view in world.config.views]
                only = {key: render.sample[key] for key in keys}
                corrupted = world.corrupt(only, plan, rng, render.scene_depth)
                features.append(_features(kind, [corrupted[key] for key in keys], world.config.audio.sample_rate))
            x = _background_residual(kind, np.stack(features), train_samples)
            error = _train_and_test(x[:train_samples], train_y, x[train_samples:], test_y, epochs, seed)
            result = ProbeResult(modality, condition, error * 100, chance * 100)
            results.append(result)
            logger.info(f"{modality:>6} {condition:<16} mean error {result.mean_error_cm:6.1f} cm "
                        f"({result.fraction_of_chance:4.0%} of chance {result.chance_error_cm:.1f} cm)")
    return results
