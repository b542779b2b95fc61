"""Classification on a dataset of one's own in AVE's raw layout: reader → preset → `admn train --dataset` → bundle.

The dataset is generated here: per class a coloured shape in the frames and a tone during the annotated event,
with custom category names (not AVE's), so nothing can come from AVE's hard-coded list.
"""

import json
import wave

import numpy as np
import pytest
import torch
from PIL import Image

from admn_core.allocation import layer_costs, mask_cost
from admn_core.config import ConfigError, ModelConfig
from admn_core.cost import block_flops, count_flops, model_flops
from admn_core.data.readers import AVEReader
from admn_core.data.readers.sources import open_split
from admn_core.models.task_model import ADMNModel
from admn_core.preprocess import InputError, preprocess_batch
from admn_core.presets import preset_config, with_classes

CLASSES = ("zero", "one", "two")
COLOURS = ((220, 40, 40), (40, 200, 60), (50, 70, 230))
TONES_HZ = (300.0, 900.0, 2100.0)
RATE = 16000
CLIP_S = 3


def _write_wav(path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(RATE)
        handle.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def write_ave_dataset(root, clips_per_class: dict[str, int], seed: int = 0, size: int = 32):
    """AVE's extracted layout: <split>Set.txt + Annotations.txt, New_Data/<id>.wav and New_Data/<id>/{1..8}.png.
    Class k: a square of colour k at a random place in every frame; a tone of TONES_HZ[k] only during the
    annotated event (1 s of a 3 s clip, elsewhere faint noise), so audio from the clip's end would be silence."""
    rng = np.random.default_rng(seed)
    (root / "New_Data").mkdir(parents=True)
    every = []
    for split, per_class in clips_per_class.items():
        lines = ["Category&VideoID&Quality&StartTime&EndTime"]
        for index in range(per_class * len(CLASSES)):
            label = index % len(CLASSES)
            video = f"{split}{index:03d}"
            start = int(rng.integers(0, CLIP_S))
            lines.append(f"{CLASSES[label]}&{video}&good&{start}&{start + 1}")
            folder = root / "New_Data" / video
            folder.mkdir()
            for k in range(1, 9):
                frame = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
                y, x = rng.integers(0, size // 2, 2)
                frame[y:y + size // 2, x:x + size // 2] = COLOURS[label]
                Image.fromarray(frame).save(folder / f"{k}.png")
            t = np.arange(CLIP_S * RATE) / RATE
            audio = 0.003 * rng.standard_normal(t.size)
            event = (t >= start) & (t < start + 1)
            audio[event] += 0.3 * np.sin(2 * np.pi * TONES_HZ[label] * t[event] + rng.uniform(0, 6.3))
            _write_wav(root / "New_Data" / f"{video}.wav", audio)
        (root / f"{split}Set.txt").write_text("\n".join(lines) + "\n")
        every += lines[1:]
    (root / "Annotations.txt").write_text("\n".join(["Category&VideoID&Quality&StartTime&EndTime", *every]) + "\n")
    return root


@pytest.fixture(scope="module")
def small_ave(tmp_path_factory):
    return write_ave_dataset(tmp_path_factory.mktemp("own_ave"), {"train": 12, "val": 2, "test": 6})


def test_reader_takes_custom_classes_from_the_annotations(small_ave):
    reader = AVEReader(small_ave, split="test")
    assert reader.classes == ("one", "two", "zero")  # sorted: the same indices for every split
    target = reader[0][1]
    assert target["category"] == "zero" and target["label"] == reader.classes.index("zero")
    explicit = AVEReader(small_ave, split="test", classes=CLASSES)
    assert explicit[0][1]["label"] == 0
    with pytest.raises(Exception, match=r"line 2: unknown AVE category 'zero'.*classes="):
        AVEReader(small_ave, split="test", classes=("one", "two"))


def test_clip_audio_is_the_window_around_the_event(small_ave):
    config = preset_config("tiny_ave")
    audio_spec = config.modality("audio")
    whole = AVEReader(small_ave, split="test")[0][0][("clip", "audio")]
    assert whole.shape == (CLIP_S * RATE,)
    event = open_split("ave", small_ave, "test", with_classes(config, 3))[0][0][("clip", "audio")]
    assert event.shape == (int(round(audio_spec.audio_window_seconds * RATE)),)
    assert np.sqrt(np.mean(event ** 2)) > 0.15  # the tone (RMS 0.21), not the faint noise around it
    centred = AVEReader(small_ave, split="test", audio_seconds=0.5, audio_anchor="clip",
                           clip_seconds=CLIP_S)[0][0][("clip", "audio")]
    np.testing.assert_array_equal(centred, whole[int(1.25 * RATE):int(1.75 * RATE)])


def test_multi_frame_preset_preprocesses_every_frame_with_one_mask(small_ave):
    config = with_classes(preset_config("tiny_ave"), 3)
    rgb = config.modality("rgb")
    sample, _ = open_split("ave", small_ave, "test", config)[0]
    inputs = preprocess_batch(config, [sample, sample])
    assert inputs["rgb"].shape == (2, rgb.frames, 3, *rgb.input_size)  # [B, V·T, C, H, W]
    with pytest.raises(InputError, match=r"takes 8 frames"):
        preprocess_batch(config, [{**sample, ("clip", "rgb"): sample[("clip", "rgb")][:3]}])
    one_frame = config.to_dict()
    one_frame["modalities"][0]["frames"] = 1
    single = ModelConfig.from_dict(one_frame)
    with pytest.raises(InputError, match=r"8 frames: a multi-frame modality needs `frames: 8`"):
        preprocess_batch(single, [sample])
    model = ADMNModel(config).eval()
    # one mask row per sample drives all 8 frames: a frame's features never depend on another sample's mask
    masks = torch.ones(2, 2, 12, dtype=torch.bool)
    masks[1, 0, 1:] = False
    with torch.no_grad():
        both = model(inputs, masks)
        alone = model({k: v[1:] for k, v in inputs.items()}, masks[1:])
    torch.testing.assert_close(both[1:], alone, rtol=1e-4, atol=1e-5)
    # the cost model counts every frame, as torch's counter does
    counted = count_flops(lambda: model({k: v[:1] for k, v in inputs.items()}, masks[:1]))
    assert model_flops(config, masks[0], include_controller=False).total == counted
    reduced = model_flops(config, masks[1], include_controller=False).blocks
    assert reduced == (rgb.frames * block_flops(rgb) + 12 * block_flops(config.modality("audio")))


def test_frames_bounds_and_audio_is_one_spectrogram():
    data = preset_config("tiny_ave").to_dict()
    data["modalities"][0]["frames"] = 0
    with pytest.raises(ConfigError, match=r"frames must be in \[1, 256\]"):
        ModelConfig.from_dict(data)
    data["modalities"][0]["frames"] = 8
    data["modalities"][1]["frames"] = 2
    with pytest.raises(ConfigError, match=r"audio modality is one spectrogram"):
        ModelConfig.from_dict(data)


def test_preset_and_reader_must_agree(small_ave):
    with pytest.raises(ConfigError, match=r"has no modality 'audio'"):
        open_split("ave", small_ave, "test", preset_config("tiny_mmfi"))


def test_paper_ave_unequal_costs_follow_the_flops():
    config = preset_config("paper_ave")
    assert [spec.layer_cost for spec in config.modalities] == [3, 1]  # paper Table 4: a vision block = 3 audio
    assert config.modality("rgb").frames == 8 and config.modality("audio").input_size == (128, 1024)


@pytest.mark.slow
def test_admn_train_on_own_ave_dataset_to_bundle(small_ave, tmp_path):
    from admn_core.cli import main
    from admn_core.runtime import InferenceEngine

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stage1: {epochs: 8, batch_size: 6, lr: 0.001}\n"
                      "controller: {epochs: 2, warmup_epochs: 1, batch_size: 6, universal_epochs: 1}\n"
                      "progress: false\n")
    out = tmp_path / "run"
    assert main(["train", "--dataset", "ave", "--root", str(small_ave), "--corruption", "rain_noise",
                 "--train-config", str(recipe), "--out", str(out), "--budgets", "6", "12", "--threads", "1"]) == 0
    results = json.loads((out / "rain_noise" / "eval" / "results.json").read_text())
    assert results["classes"] == ["one", "two", "zero"] and results["preset"] == "tiny_ave"
    for method, row in results["detail"].items():
        for budget, cell in row.items():
            if method != "Upper Bound":
                assert cell["max_cost"] <= int(budget), (method, budget, cell)

    engine = InferenceEngine.from_bundle(out / "bundle.safetensors")
    assert engine.config.head.num_classes == 3 and engine.config.modality("rgb").frames == 8
    assert {"admn_b6", "admn_b12", "universal"} <= set(engine.controller_infos)
    test = open_split("ave", small_ave, "test", engine.config)  # clean held-out clips
    full = engine.max_budget
    correct = 0
    for index in range(len(test)):
        sample, target = test[index]
        result = engine.infer(sample, full)
        correct += int(np.argmax(result.class_probabilities) == target["label"])
        for budget in (6, 12):
            allocation = engine.infer(sample, budget).allocation
            assert allocation.budget_used <= budget
            assert int(mask_cost(torch.as_tensor(allocation.mask)[None], layer_costs(engine.config))) <= budget
    assert correct / len(test) > 1 / len(CLASSES) + 0.2  # chance is 1/3

    # The node's frame pipeline, fed the clip as a camera streams it (one frame per message) and its event audio as
    # a microphone chunk, answers as the engine does on the reader's sample.
    sample, _ = test[0]
    outcomes = node_path_outcomes(engine, sample, budget=12)
    assert [outcome.status for outcome in outcomes] == ["ok"] * 8
    np.testing.assert_allclose(outcomes[-1].result.class_probabilities,
                               engine.infer(sample, 12).class_probabilities, atol=1e-5)


def node_path_outcomes(engine, sample, budget):
    from admn_core.stream.pipeline import FramePipeline
    from admn_ros.msgs.audio import numpy_to_audio_image
    from admn_ros.msgs.conversions import ns_to_stamp, numpy_to_image
    from admn_ros.msgs.frame_assembly import FrameAssembler, synchronizer_factory

    pipeline = FramePipeline(engine, FrameAssembler(engine.config), lambda stamp: (budget, "fixed"),
                             synchronizer_factory(0.05, 10, "builtin"))
    frames, audio = sample[("clip", "rgb")], sample[("clip", "audio")]
    stamps = [1_000_000_000 + index * 125_000_000 for index in range(len(frames))]  # 8 frames a second
    pipeline.add_audio(("clip", "audio"), numpy_to_audio_image(audio, stamp=ns_to_stamp(stamps[-1])))
    for stamp, frame in zip(stamps, frames, strict=True):
        pipeline.add_frame(("clip", "rgb"), numpy_to_image(np.ascontiguousarray(frame), "rgb8", ns_to_stamp(stamp)))
    return [pipeline.process(pending) for pending in pipeline.drain()]


def test_gdtm_reader_fits_the_gdtm_presets(tmp_path):
    pytest.importorskip("h5py")
    from test_readers_gdtm import NODES, write_split

    write_split(tmp_path / "test")
    data = preset_config("tiny").to_dict()  # rgb + depth + mic per node, localization; the fixture's nodes
    for modality in data["modalities"]:
        modality["views"] = list(NODES)
    config = ModelConfig.from_dict(data)
    reader = open_split("gdtm", tmp_path, "test", config)
    sample, target = reader[0]
    assert sample[("node_1", "mic")].shape == (config.modality("mic").audio_window_samples,)
    inputs = preprocess_batch(config, [sample])
    assert all(tuple(tensor.shape[:2]) == (1, len(NODES)) for tensor in inputs.values())
    assert "position" in target
    with pytest.raises(ConfigError, match=r"has no modality 'audio'"):
        open_split("ave", tmp_path, "test", config)


def test_mmfi_reader_fits_tiny_mmfi(tmp_path):
    from test_readers_ave_mmfi import _mmfi_sequence

    _mmfi_sequence(tmp_path, "S08", "A03", 32)
    config = preset_config("tiny_mmfi")
    sample, target = open_split("mmfi", tmp_path, "test", config)[0]
    inputs = preprocess_batch(config, [sample])
    assert {name: tuple(t.shape[:3]) for name, t in inputs.items()} == {"rgb": (1, 15, 3), "depth": (1, 15, 1)}
    with torch.no_grad():
        assert ADMNModel(config).eval()(inputs).shape == (1, 27) and target["label"] == 2
