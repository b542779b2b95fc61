"""Dataset corruption presets: the paper's scenario mixes (appendix A.3) plus a mixed one.

A preset draws, per sample, one `CorruptionSpec` per sensor kind (rgb / depth / audio) and applies it to every view
(paper A.3: "the same corruption across the three nodes", each node with its own noise draw). `per_view=True`
presets draw independently for every view instead. Levels are equiprobable unless stated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from admn_core.data.corruptions.labels import CLEAN, CorruptionSpec
from admn_core.data.errors import CorruptionError

RGB_SIGMAS = (0.0, 1.0, 2.0, 3.0)  # paper A.3, on [0, 1]-scaled RGB
DEPTH_SIGMAS = (0.0, 0.25, 0.5, 0.75)  # paper A.3, on [0, 1]-scaled depth
LOWLIGHT_GAMMAS = (5.0, 100.0)  # medium, severe (official loader drops gamma 10)
BLUR_KERNELS = (51, 201)  # at the 224-wide reference (official generator)
MIC_SNRS_DB = (0.0, -10.0, -20.0)  # background noise levels against the fixed reference motor level
RAIN_INTENSITY = 1.0
RAIN_LOWLIGHT_GAMMA = 5.0  # AVE: rain alone leaves the subject visible, so the paper adds lowlight on top

KindSpecs = dict[str, CorruptionSpec]


def _gaussian(level_rgb: int, level_depth: int) -> KindSpecs:
    return {"rgb": CorruptionSpec("gaussian" if level_rgb else "clean", level_rgb, RGB_SIGMAS[level_rgb]),
            "depth": CorruptionSpec("gaussian" if level_depth else "clean", level_depth, DEPTH_SIGMAS[level_depth])}


LOWLIGHT_CONDITIONS: tuple[KindSpecs, ...] = (
    {"rgb": CLEAN, "depth": CorruptionSpec("saturation", 1, 1.0)},  # ordinary light saturates the IR depth
    {"rgb": CorruptionSpec("lowlight", 1, LOWLIGHT_GAMMAS[0]), "depth": CLEAN},
    {"rgb": CorruptionSpec("lowlight", 2, LOWLIGHT_GAMMAS[1]), "depth": CLEAN},
)
BLUR_CONDITIONS: tuple[KindSpecs, ...] = (
    {"rgb": CLEAN},
    {"rgb": CorruptionSpec("blur", 1, BLUR_KERNELS[0])},
    {"rgb": CorruptionSpec("blur", 2, BLUR_KERNELS[1])},
)


def _rain_image() -> CorruptionSpec:
    return CorruptionSpec("rain", 1, RAIN_INTENSITY, (("gamma", RAIN_LOWLIGHT_GAMMA),))


def _audio_noise(kind: str, level: int) -> CorruptionSpec:
    return CorruptionSpec(kind, level + 1, MIC_SNRS_DB[level])


def _draw_rain_noise(rng: np.random.Generator, with_clean_variants: bool) -> KindSpecs:
    """AVE-style variants: 0 clean, 1 noisy audio, 2 rainy+dark image, 3 both (paper: controller uses {1, 2})."""
    variant = int(rng.integers(0, 4)) if with_clean_variants else int(rng.integers(1, 3))
    noise_kind = "wind" if rng.random() < 0.5 else "fan"
    audio = _audio_noise(noise_kind, int(rng.integers(0, len(MIC_SNRS_DB)))) if variant in (1, 3) else CLEAN
    return {"rgb": _rain_image() if variant in (2, 3) else CLEAN, "audio": audio}


def _draw_mixed(rng: np.random.Generator) -> KindSpecs:
    """Every kind independently: clean with p = 0.4 (rgb 0.3), else a uniformly chosen family and level."""
    rgb_options = ([CorruptionSpec("gaussian", i, RGB_SIGMAS[i]) for i in (1, 2, 3)]
                   + [CorruptionSpec("lowlight", i + 1, g) for i, g in enumerate(LOWLIGHT_GAMMAS)]
                   + [CorruptionSpec("blur", i + 1, k) for i, k in enumerate(BLUR_KERNELS)]
                   + [CorruptionSpec("rain", 1, 0.6), _rain_image(),
                      CorruptionSpec("occlusion", 1, 0.25), CorruptionSpec("occlusion", 2, 0.5),
                      CorruptionSpec("dropout", 1, 1.0)])
    depth_options = ([CorruptionSpec("gaussian", i, DEPTH_SIGMAS[i]) for i in (1, 2, 3)]
                     + [CorruptionSpec("saturation", 1, 1.0), CorruptionSpec("occlusion", 1, 0.25),
                        CorruptionSpec("occlusion", 2, 0.5), CorruptionSpec("dropout", 1, 1.0)])
    audio_options = ([_audio_noise(kind, level) for kind in ("wind", "fan") for level in range(len(MIC_SNRS_DB))]
                     + [CorruptionSpec("dropout", 1, 1.0)])

    def pick(options: Sequence[CorruptionSpec], clean_probability: float) -> CorruptionSpec:
        return CLEAN if rng.random() < clean_probability else options[int(rng.integers(0, len(options)))]

    return {"rgb": pick(rgb_options, 0.3), "depth": pick(depth_options, 0.4), "audio": pick(audio_options, 0.4)}


def _draw_field(rng: np.random.Generator) -> KindSpecs:
    """What a robot meets in the field (and `admn world-bag`'s episodes show): the lights dim (γ 5 / 100), a lens
    blurs (k 51 / 201), rain with haze, the IR depth saturates in daylight or drops out — one camera modality at a
    time, so one always localizes — and the microphone independently clean (p = 0.5), noisy (wind / fan at every
    SNR) or silent."""
    rgb_failures = ([CorruptionSpec("lowlight", i + 1, g) for i, g in enumerate(LOWLIGHT_GAMMAS)]
                    + [CorruptionSpec("blur", i + 1, k) for i, k in enumerate(BLUR_KERNELS)] + [_rain_image()])
    depth_failures = [CorruptionSpec("saturation", 1, 1.0), CorruptionSpec("dropout", 1, 1.0)]
    audio_failures = ([_audio_noise(kind, level) for kind in ("wind", "fan") for level in range(len(MIC_SNRS_DB))]
                      + [CorruptionSpec("dropout", 1, 1.0)])
    # 1/5 both cameras clean, 1/2 the RGB fails, 3/10 the depth fails
    camera = rng.random()
    specs: KindSpecs = {"rgb": CLEAN, "depth": CLEAN}
    if camera >= 0.2:
        failing, options = ("rgb", rgb_failures) if camera < 0.7 else ("depth", depth_failures)
        specs[failing] = options[int(rng.integers(0, len(options)))]
    specs["audio"] = CLEAN if rng.random() < 0.5 else audio_failures[int(rng.integers(0, len(audio_failures)))]
    return specs


@dataclass(frozen=True)
class CorruptionPreset:
    name: str
    description: str
    draw_kinds: Callable[[np.random.Generator], KindSpecs]
    showcase: tuple[KindSpecs, ...]  # representative conditions, one contact-sheet row each
    per_view: bool = False

    def draw(self, rng: np.random.Generator, sensor_kinds: Mapping[str, str],
             views: Sequence[str]) -> dict[tuple[str, str], CorruptionSpec]:
        """{(view, modality): spec} for one sample; `sensor_kinds` maps modality name → rgb | depth | audio."""
        shared = None if self.per_view else self.draw_kinds(rng)
        plan = {}
        for view in views:
            drawn = self.draw_kinds(rng) if self.per_view else shared
            for modality, kind in sensor_kinds.items():
                plan[(view, modality)] = drawn.get(kind, CLEAN)
        return plan

    def expand(self, condition: KindSpecs, sensor_kinds: Mapping[str, str],
               views: Sequence[str]) -> dict[tuple[str, str], CorruptionSpec]:
        return {(view, modality): condition.get(kind, CLEAN) for view in views for modality, kind in
                sensor_kinds.items()}


def _uniform(conditions: Sequence[KindSpecs]) -> Callable[[np.random.Generator], KindSpecs]:
    return lambda rng: conditions[int(rng.integers(0, len(conditions)))]


_GAUSSIAN_CONDITIONS = tuple(_gaussian(i, j) for i in range(4) for j in range(4))
_MIXED_SHOWCASE = (
    {"rgb": CLEAN, "depth": CLEAN, "audio": CLEAN},
    {"rgb": CorruptionSpec("occlusion", 2, 0.5), "depth": CorruptionSpec("dropout", 1, 1.0),
     "audio": _audio_noise("wind", 1)},
    {"rgb": CorruptionSpec("rain", 1, 0.6), "depth": CorruptionSpec("gaussian", 2, 0.5),
     "audio": _audio_noise("fan", 2)},
)

PRESETS: dict[str, CorruptionPreset] = {
    preset.name: preset
    for preset in (
        CorruptionPreset("clean", "no corruption", lambda rng: {}, ({},)),
        CorruptionPreset(
            "gaussian", "paper GDTM Gaussian: σ_rgb ∈ {0,1,2,3}, σ_depth ∈ {0,.25,.5,.75}, independent, mic clean",
            _uniform(_GAUSSIAN_CONDITIONS), tuple(_gaussian(i, (i + 2) % 4) for i in range(4))),
        CorruptionPreset(
            "lowlight", "paper GDTM Lowlight: normal light (depth saturated) / medium (γ 5) / severe (γ 100)",
            _uniform(LOWLIGHT_CONDITIONS), LOWLIGHT_CONDITIONS),
        CorruptionPreset("blur", "paper GDTM Blur: none / kernel 51 / kernel 201 (at 224 wide) on RGB",
                         _uniform(BLUR_CONDITIONS), BLUR_CONDITIONS),
        CorruptionPreset(
            "rain_noise", "paper AVE mix: either rain + haze + lowlight on RGB or wind/fan noise on the mic",
            lambda rng: _draw_rain_noise(rng, with_clean_variants=False),
            ({"rgb": _rain_image()}, {"audio": _audio_noise("wind", 1)}, {"audio": _audio_noise("fan", 2)})),
        CorruptionPreset(
            "rain_noise_all", "rain_noise with all four AVE variants (clean, audio, image, both), as Stage 1",
            lambda rng: _draw_rain_noise(rng, with_clean_variants=True),
            ({}, {"rgb": _rain_image(), "audio": _audio_noise("wind", 0)})),
        CorruptionPreset(
            "field", "the robot's failures: lowlight, blur, rain or depth saturation/dropout on one camera modality "
            "at a time; the microphone independently noisy or silent", _draw_field,
            ({"rgb": CLEAN, "depth": CLEAN, "audio": CLEAN},
             {"rgb": CorruptionSpec("lowlight", 2, LOWLIGHT_GAMMAS[1]), "audio": _audio_noise("fan", 1)},
             {"depth": CorruptionSpec("saturation", 1, 1.0)})),
        CorruptionPreset("mixed", "every modality independently clean or any corruption family, shared by views",
                         _draw_mixed, _MIXED_SHOWCASE),
        CorruptionPreset("mixed_per_view", "mixed, drawn independently for every view", _draw_mixed,
                         _MIXED_SHOWCASE, per_view=True),
    )
}


def get_preset(name: str) -> CorruptionPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise CorruptionError(f"unknown corruption preset {name!r}; choose one of {sorted(PRESETS)}") from None

