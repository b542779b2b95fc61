"""Stage 1 (LayerDrop fine-tuning), batching and resumable checkpoints on the learnable toy set."""

import itertools

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from admn_core.models.task_model import ADMNModel
from admn_core.train.batching import BatchCollator, CorruptionTargets, task_targets
from admn_core.train.checkpoint import checkpoint_path, load_checkpoint
from admn_core.train.config import Stage1Config
from admn_core.train.stage1 import train_stage1
from admn_core.train.toy import CrashAfter, EpochRecorder, SquareDataset, toy_config

torch.set_num_threads(1)


def fresh_model(config, seed=0):
    torch.manual_seed(seed)
    return ADMNModel(config)


def test_stage1_loss_and_error_decrease():
    config = toy_config()
    model = fresh_model(config)
    history = train_stage1(model, SquareDataset(config, 96), Stage1Config(epochs=14, batch_size=16, lr=3e-3,
                                                                           progress=False),
                           val_set=SquareDataset(config, 32, seed=1))
    losses = [row["train_loss"] for row in history]
    errors = [row["val_error"] for row in history]
    assert losses[-1] < 0.5 * losses[0]
    # the position is really learnt (not only the covariance): validation error well below predicting the centre
    assert errors[-1] < 0.8 * errors[0]
    # LayerDrop warm-up follows the spec (toy: +0.1 per epoch up to 0.2)
    assert [row["layerdrop_rate"] for row in history[:3]] == [config.layerdrop.rate_at(e) for e in range(3)]


def test_frozen_blocks_stay_trainable_blocks_move():
    config = toy_config(trainable_last_blocks=2)
    model = fresh_model(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_stage1(model, SquareDataset(config, 32), Stage1Config(epochs=2, batch_size=8, lr=1e-3, progress=False))
    after = model.state_dict()
    for name in config.modality_names:
        prefix = f"backbones.{name}."
        frozen = [k for k in before if k.startswith(prefix) and not k.startswith((f"{prefix}blocks.10.",
                                                                                 f"{prefix}blocks.11."))]
        assert any("blocks.9." in k for k in frozen) and any("patch_embed" in k for k in frozen)
        for key in frozen:
            assert torch.equal(before[key], after[key]), key
        for block in (10, 11):
            weight = f"{prefix}blocks.{block}.attn.qkv.weight"
            assert not torch.equal(before[weight], after[weight]), weight
    for key in ("fusion.norm.weight", "adapters.rgb.net.0.weight", "head.mean_out.weight"):
        assert not torch.equal(before[key], after[key]), key




class _Recording(torch.utils.data.Dataset):
    """Wraps a dataset and records which indices were read (to see which set an epoch trained on)."""

    def __init__(self, dataset):
        self.dataset, self.reads = dataset, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        self.reads += 1
        return self.dataset[index]


def test_clean_warmup_trains_the_first_epochs_on_the_clean_twin():
    config = toy_config()
    corrupted, clean = _Recording(SquareDataset(config, 16)), _Recording(SquareDataset(config, 16, seed=5))
    history = train_stage1(fresh_model(config), corrupted,
                           Stage1Config(epochs=3, batch_size=8, lr=1e-3, progress=False, clean_warmup_epochs=2),
                           clean_set=clean)
    assert [row["clean"] for row in history] == [1, 1, 0]
    assert [row["layerdrop_rate"] for row in history] == [0.0, 0.0, config.layerdrop.rate_at(2)]  # off while clean
    assert clean.reads == 2 * 16 and corrupted.reads == 16
    with pytest.raises(ValueError, match="needs clean_set"):
        train_stage1(fresh_model(config), corrupted,
                     Stage1Config(epochs=2, batch_size=8, progress=False, clean_warmup_epochs=1))


@pytest.mark.parametrize("schedule", [{"lr_end_factor": 0.1}, {"warmup_cosine_fraction": 0.2}])
def test_resume_repeats_the_uninterrupted_run(tmp_path, schedule):
    config = toy_config()
    data = SquareDataset(config, 32)
    settings = Stage1Config(epochs=3, batch_size=8, lr=2e-3, progress=False, **schedule)
    full_model = fresh_model(config)
    full = train_stage1(full_model, data, settings, run_dir=tmp_path / "full")

    with pytest.raises(RuntimeError, match="simulated crash"):
        train_stage1(fresh_model(config), CrashAfter(data, 2 * len(data) + 5), settings, run_dir=tmp_path / "cut")
    assert load_checkpoint(checkpoint_path(tmp_path / "cut"), modules={"model": fresh_model(config)})["epoch"] == 1
    resumed_model = fresh_model(config, seed=123)  # different init: everything must come from the checkpoint
    resumed = train_stage1(resumed_model, data, settings, run_dir=tmp_path / "cut")

    assert len(resumed) == 3 and [row["epoch"] for row in resumed] == [0, 1, 2]
    assert resumed[2]["train_loss"] == pytest.approx(full[2]["train_loss"], rel=1e-6)
    assert resumed[2]["lr"] == pytest.approx(full[2]["lr"])
    for key, value in full_model.state_dict().items():
        torch.testing.assert_close(resumed_model.state_dict()[key], value, rtol=1e-6, atol=1e-7)
    rows = (tmp_path / "cut" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 4 and rows[0].startswith("epoch,")  # header + one row per epoch, no duplicates


def test_warmup_cosine_rises_linearly_then_decays_to_zero():
    from admn_core.train.stage1 import warmup_cosine

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = warmup_cosine(optimizer, total_steps=20, warmup_fraction=0.2)  # 4 warm-up steps, 16 cosine
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert lrs[12] == pytest.approx(0.5) and all(a >= b for a, b in itertools.pairwise(lrs[4:]))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)


def test_batching_units_and_corruption_labels():
    config = toy_config()
    data = SquareDataset(config, 8, noisy="alternate")
    batch = BatchCollator(config, CorruptionTargets(weights=()))([data[i] for i in range(8)])
    positions = np.stack([data[i][1]["position_m"] for i in range(8)])
    torch.testing.assert_close(batch.target, torch.from_numpy(positions) / config.head.position_unit_m)
    assert batch.inputs["rgb"].shape == (8, 2, 3, 16, 16)
    expected = [[float(data.noisy_modality(i) == "rgb"), float(data.noisy_modality(i) == "depth")] for i in range(8)]
    assert batch.corruption.tolist() == expected
    # the simulated world's key "position" is accepted too
    assert task_targets(config, [{"position": np.array([0.5, -1.0])}]).tolist() == [[5.0, -10.0]]


def test_corruption_targets_category_and_regression():
    world_label = {"rgb": {"value": np.float32(2.0), "severity": 2}, "depth": {"value": np.float32(0.25),
                                                                               "severity": 1},
                   "mic": {"value": float("inf"), "severity": 0}}
    regression = CorruptionTargets()
    assert regression.labels([{"corruption": world_label}]).tolist() == [[2.0, 0.25]]
    # official GDTM weighting: L1(img) + 20·L1(depth), σ̂ = sigmoid·5
    prediction = torch.zeros(1, 2)  # σ̂ = 2.5 for both
    assert regression.loss(prediction, torch.tensor([[2.0, 0.25]])).item() == pytest.approx(0.5 + 20 * 2.25)
    with pytest.raises(ValueError, match="not finite"):
        CorruptionTargets(modalities=("mic",)).labels([{"corruption": world_label}])
    assert CorruptionTargets(modalities=("mic",), fields=(("mic", "severity"),)).labels(
        [{"corruption": world_label}]).tolist() == [[0.0]]
    # AVE-style 4 classes: corrupted-or-not per modality, mixed radix (rgb major)
    category = CorruptionTargets(kind="category", modalities=("rgb", "depth"), classes=(2, 2))
    assert category.num_outputs == 4
    assert category.labels([{"corruption": world_label}, {"corruption": 3}]).tolist() == [3, 3]
    assert category.labels([{"corruption": {"rgb": {"severity": 0}, "depth": {"severity": 1}}}]).tolist() == [1]


def test_modality_dropout_blanks_exactly_one_modality_per_dropped_sample():
    from admn_core.train.batching import blank_random_modality

    config = toy_config()
    batch = BatchCollator(config)([SquareDataset(config, 64)[i] for i in range(64)])
    names = list(batch.inputs)
    assert len(names) >= 2
    always = blank_random_modality(batch.inputs, 1.0, torch.Generator().manual_seed(0))
    blanked = torch.stack([always[n].flatten(1).abs().sum(1) == 0 for n in names], 1)  # [B, M]
    untouched = torch.tensor([torch.equal(always[n][i], batch.inputs[n][i]) or bool(blanked[i, m])
                              for i in range(64) for m, n in enumerate(names)]).view(64, len(names))
    assert (blanked.sum(1) == 1).all() and untouched.all()
    assert blanked.any(0).all()  # every modality gets blanked somewhere in 64 samples
    never = blank_random_modality(batch.inputs, 0.0, torch.Generator().manual_seed(0))
    assert all(torch.equal(never[n], batch.inputs[n]) for n in names)


def test_modality_dropout_is_validated():
    with pytest.raises(Exception, match="clean_modality_dropout"):
        Stage1Config(clean_modality_dropout=1.5)


@pytest.mark.parametrize("subset", [False, True], ids=["dataset", "subset"])
def test_stage1_tells_an_epoch_aware_dataset_the_epoch(subset):
    config = toy_config()
    data = EpochRecorder(SquareDataset(config, 8))
    train_stage1(fresh_model(config), Subset(data, range(6)) if subset else data,
                 Stage1Config(epochs=3, batch_size=4, progress=False))
    assert data.epochs == [0, 1, 2]
