"""Stage-2 controllers on a frozen toy task model: supervision, selection gradients, ADMN_AE, universal controller."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Subset

from admn_core.allocation import layer_costs, maximum_budget, minimum_budget, select_layers
from admn_core.bundle import ControllerInfo
from admn_core.models.controller import QoIController
from admn_core.models.task_model import ADMNModel
from admn_core.models.universal_controller import UniversalController, build_universal_controller
from admn_core.train.autoencoder import ENCODER_PARTS, pretrain_autoencoder
from admn_core.train.batching import BatchCollator, CorruptionTargets
from admn_core.train.config import AutoencoderConfig, ControllerTrainConfig, Stage1Config, UniversalTrainConfig
from admn_core.train.controllers import allocations, new_controller, train_controller
from admn_core.train.stage1 import train_stage1
from admn_core.train.toy import CrashAfter, EpochRecorder, SquareDataset, toy_config
from admn_core.train.universal import train_universal_controller

torch.set_num_threads(1)
TARGETS = CorruptionTargets(weights=())  # toy σ ∈ {0, 1} for both modalities, equal weights


@pytest.fixture(scope="module")
def stage1_model():
    """A Stage-1 model that uses whichever modality is clean (trained on samples where either one is noise)."""
    config = toy_config()
    torch.manual_seed(0)
    model = ADMNModel(config)
    train_stage1(model, SquareDataset(config, 128, noisy="alternate"),
                 Stage1Config(epochs=30, batch_size=16, lr=3e-3, progress=False))
    return model


def batch_inputs(config, dataset, count):
    return BatchCollator(config)([dataset[i] for i in range(count)]).inputs


@pytest.mark.parametrize(("noisy", "informative"), [("depth", "rgb"), ("rgb", "depth")])
def test_corruption_supervised_controller_prefers_the_clean_modality(stage1_model, noisy, informative):
    """Every seed's trained controller gives the clean modality the chosen blocks, and that choice is what lowers the
    task loss (the same blocks moved to the noisy modality cost more). lr 2e-3: at higher rates some seeds'
    allocations drifted back to an even split in the last epochs."""
    config = stage1_model.config
    budget = 4  # block 0 of each modality + 2 chosen blocks
    index = config.modality_names.index(informative)
    held_out = BatchCollator(config)([SquareDataset(config, 32, noisy=noisy, seed=100)[i] for i in range(32)])
    first_epoch_blocks, last_epoch_blocks = [], []
    for seed in (0, 1, 2):
        settings = ControllerTrainConfig(epochs=8, batch_size=16, lr=2e-3, progress=False, seed=seed)
        torch.manual_seed(seed)
        controller, history = train_controller(stage1_model, SquareDataset(config, 64, noisy=noisy, seed=seed),
                                               budget, settings, corruption=TARGETS,
                                               controller=new_controller(stage1_model, settings, TARGETS))
        assert history[0]["warmup"] == 1.0 and "task_loss" not in history[0]  # corruption-only first epoch
        assert history[-1]["corruption_loss"] < 0.5 * history[0]["corruption_loss"]
        masks = allocations(config, controller, held_out.inputs, budget)  # [B, M, depth]
        counts = masks.sum(-1).float().mean(0)
        assert counts[index] > counts[1 - index] and counts.sum().item() == budget, (seed, counts.tolist())
        with torch.no_grad():
            chosen, mirrored = (stage1_model.loss(stage1_model(held_out.inputs, m), held_out.target).item()
                                for m in (masks, masks.flip(1)))
        assert chosen < mirrored, (seed, chosen, mirrored)
        first_epoch_blocks.append(history[1][f"blocks_{informative}"])
        last_epoch_blocks.append(history[-1][f"blocks_{informative}"])
    # Training-time (Gumbel) allocations move towards the clean modality.
    assert sum(last_epoch_blocks) > sum(first_epoch_blocks), (first_epoch_blocks, last_epoch_blocks)


@pytest.mark.parametrize("straight_through", [True, False])
def test_selection_paths_pass_gradients_to_the_controller(straight_through):
    config = toy_config()
    torch.manual_seed(0)
    model, controller = ADMNModel(config), QoIController(config)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    data = SquareDataset(config, 8)
    batch = BatchCollator(config)([data[i] for i in range(8)])
    logits, _ = controller(batch.inputs)
    budget = 7
    masks = select_layers(logits, budget, layer_costs(config), training=True, straight_through=straight_through,
                          generator=torch.Generator().manual_seed(0))
    assert masks.requires_grad
    assert torch.equal(masks.detach().sum(dim=(1, 2)), torch.full((8,), float(budget)))  # forward value: exact 0/1
    model.loss(model(batch.inputs, masks), batch.target).backward()
    for name in ("layer_logits.2.weight", "layer_logits.0.weight", "stems.rgb.proj.weight", "cls"):
        grad = dict(controller.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_task_only_and_plain_st_variants(stage1_model):
    config = stage1_model.config
    data = SquareDataset(config, 32, noisy="depth")
    task_only, history = train_controller(stage1_model, data, 6, ControllerTrainConfig(
        variant="task_only", epochs=2, batch_size=16, progress=False))
    assert task_only.corruption_head is None
    assert all("corruption_loss" not in row and row["warmup"] == 0.0 for row in history)  # no warm-up, task only
    plain, history = train_controller(stage1_model, data, 6, ControllerTrainConfig(
        variant="plain_st", epochs=2, batch_size=16, progress=False), corruption=TARGETS)
    assert plain.corruption_head is not None and "task_loss" in history[1] and "corruption_loss" in history[1]


def test_autoencoder_variant_trains_only_the_layer_mlp(stage1_model):
    config = stage1_model.config
    data = SquareDataset(config, 32, noisy="alternate")
    autoencoder, ae_history = pretrain_autoencoder(config, data, AutoencoderConfig(
        epochs=4, batch_size=16, lr=3e-3, progress=False))
    assert ae_history[-1]["recon_loss"] < ae_history[0]["recon_loss"]
    controller, history = train_controller(stage1_model, data, 5, ControllerTrainConfig(
        variant="autoencoder", epochs=2, batch_size=16, progress=False), autoencoder=autoencoder)
    encoder = autoencoder.encoder.state_dict()
    for key, value in controller.state_dict().items():
        if key.split(".", 1)[0] in ENCODER_PARTS:
            assert torch.equal(value, encoder[key]), key  # transferred and frozen
    assert not torch.equal(controller.state_dict()["layer_logits.2.weight"], encoder["layer_logits.2.weight"])
    trainable = {name for name, p in controller.named_parameters() if p.requires_grad}
    assert trainable == {"layer_logits.0.weight", "layer_logits.2.weight"}
    assert controller.corruption_head is None and "task_loss" in history[0]


def test_universal_controller_obeys_every_integer_budget():
    config = toy_config()
    torch.manual_seed(0)
    controller = UniversalController(config, corruption_outputs=2).eval()
    data = SquareDataset(config, 4, noisy="alternate")
    inputs = batch_inputs(config, data, 4)
    costs = layer_costs(config)
    logits_by_budget = {}
    for budget in range(minimum_budget(config), maximum_budget(config) + 1):
        logits, corruption = controller(inputs, budget)
        assert corruption.shape == (4, 2)
        logits_by_budget[budget] = logits
        hard = select_layers(logits, budget, costs)
        assert hard.sum(dim=(1, 2)).tolist() == [budget] * 4
        assert hard[:, :, 0].all()
        soft = select_layers(logits, budget, costs, training=True, generator=torch.Generator().manual_seed(budget))
        assert soft.detach().sum(dim=(1, 2)).tolist() == [float(budget)] * 4
    assert not torch.allclose(logits_by_budget[3], logits_by_budget[20])  # the budget really conditions the logits
    with pytest.raises(TypeError, match="needs the budget"):
        controller(inputs)


def test_universal_controller_trains_and_rebuilds_from_bundle_info(stage1_model, tmp_path):
    config = stage1_model.config
    data = SquareDataset(config, 32, noisy="depth")
    settings = UniversalTrainConfig(epochs=2, batch_size=8, progress=False, budget_min=3, budget_max=10)
    controller, history = train_universal_controller(stage1_model, data, settings, corruption=TARGETS,
                                                     val_set=SquareDataset(config, 16, noisy="depth", seed=1))
    for budget in (3, 6, 10):  # validation at the range's ends and middle, each within its budget
        assert history[-1][f"val{budget}_cost"] == budget
    save_file({k: v.contiguous() for k, v in controller.state_dict().items()}, str(tmp_path / "u.safetensors"))
    info = ControllerInfo(name="universal", budget=None, kind="universal", variant="corruption_supervised",
                          corruption_outputs=TARGETS.num_outputs)
    rebuilt = build_universal_controller(config, info)
    rebuilt.load_state_dict(load_file(str(tmp_path / "u.safetensors")), strict=True)
    inputs = batch_inputs(config, data, 4)
    for budget in (4, 9):
        torch.testing.assert_close(allocations(config, rebuilt, inputs, budget),
                                   allocations(config, controller, inputs, budget))




def test_controller_resume_repeats_the_uninterrupted_run(stage1_model, tmp_path):
    """Optimizer, LinearLR, Gumbel draws and data order all continue exactly after an interruption."""
    config = stage1_model.config
    data = SquareDataset(config, 32, noisy="depth")
    settings = ControllerTrainConfig(epochs=3, batch_size=8, progress=False)

    def run(run_dir, dataset, seed=5):
        torch.manual_seed(seed)
        controller = new_controller(stage1_model, settings, TARGETS)
        return train_controller(stage1_model, dataset, 5, settings, corruption=TARGETS, controller=controller,
                                run_dir=run_dir)

    full, full_history = run(tmp_path / "full", data)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "cut", CrashAfter(data, 2 * len(data) + 3))
    resumed, resumed_history = run(tmp_path / "cut", data, seed=99)
    assert [row["epoch"] for row in resumed_history] == [0, 1, 2]
    for key in ("loss", "task_loss", "corruption_loss", "lr"):
        assert resumed_history[2][key] == pytest.approx(full_history[2][key], rel=1e-6), key
    torch.testing.assert_close(resumed.state_dict(), full.state_dict(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("after_warmup", [False, True])
def test_lr_schedule_starts_after_the_warmup_when_asked(stage1_model, after_warmup):
    data = SquareDataset(stage1_model.config, 16, noisy="depth")
    settings = ControllerTrainConfig(epochs=5, warmup_epochs=2, batch_size=16, lr=1e-3, lr_end_factor=0.1,
                                     lr_schedule_after_warmup=after_warmup, progress=False)
    _, history = train_controller(stage1_model, data, 4, settings, corruption=TARGETS)
    learning_rates = [row["lr"] for row in history]
    assert [row["warmup"] for row in history] == [1.0, 1.0, 0.0, 0.0, 0.0]
    # LinearLR(1 → 0.1, total_iters=n) stepped once per epoch: factors 1, 1 − 0.9/n, 1 − 1.8/n, ...
    if after_warmup:  # full LR through the warm-up, then the decay over the 3 task epochs
        expected = [1e-3, 1e-3, 1e-3, 7e-4, 4e-4]
    else:  # [code GDTM] one decay over all 5 epochs
        expected = [1e-3, 8.2e-4, 6.4e-4, 4.6e-4, 2.8e-4]
    assert learning_rates == pytest.approx(expected, rel=1e-6)


def test_lr_schedule_after_warmup_needs_task_epochs():
    with pytest.raises(ValueError, match="task epochs after the warm-up"):
        ControllerTrainConfig(epochs=2, warmup_epochs=2, lr_schedule_after_warmup=True)
    ControllerTrainConfig(variant="task_only", epochs=2, warmup_epochs=2, lr_schedule_after_warmup=True)  # no warm-up


def test_freeze_encoder_after_warmup_trains_only_the_layer_mlp_after_the_warmup(stage1_model, tmp_path):
    config = stage1_model.config
    data = SquareDataset(config, 32, noisy="depth")
    settings = ControllerTrainConfig(epochs=4, warmup_epochs=2, batch_size=16, lr=5e-3, progress=False,
                                     freeze_encoder_after_warmup=True)
    torch.manual_seed(2)
    controller = new_controller(stage1_model, settings, TARGETS)
    initial = {k: v.clone() for k, v in controller.state_dict().items()}
    warm_only = ControllerTrainConfig(epochs=2, warmup_epochs=2, batch_size=16, lr=5e-3, progress=False)
    torch.manual_seed(2)
    reference = new_controller(stage1_model, warm_only, TARGETS)
    reference, _ = train_controller(stage1_model, data, 4, warm_only, corruption=TARGETS, controller=reference)
    controller, history = train_controller(stage1_model, data, 4, settings, corruption=TARGETS,
                                           controller=controller, run_dir=tmp_path / "run")
    assert [row["warmup"] for row in history] == [1.0, 1.0, 0.0, 0.0]
    assert "task_loss" in history[2] and "task_loss" not in history[1]
    after = controller.state_dict()
    warmed = reference.state_dict()
    for key in after:
        if key.startswith("layer_logits"):  # trained on the task loss after the warm-up only
            assert torch.equal(warmed[key], initial[key]) and not torch.equal(after[key], initial[key]), key
        else:  # the encoder and corruption head: exactly as the warm-up left them
            assert torch.equal(after[key], warmed[key]), key
            if key.startswith(("stems", "encoder", "corruption_head")) and key.endswith("weight"):
                assert not torch.equal(after[key], initial[key]), key
    assert all(parameter.requires_grad for parameter in controller.parameters())
    assert (tmp_path / "run" / "warmup").is_dir() and (tmp_path / "run" / "task").is_dir()
    # Resuming the finished run retrains nothing and returns the same weights.
    again, _ = train_controller(stage1_model, data, 4, settings, corruption=TARGETS,
                                controller=new_controller(stage1_model, settings, TARGETS), run_dir=tmp_path / "run")
    assert all(torch.equal(value, after[key]) for key, value in again.state_dict().items())


def train_per_budget_controller(model, data):
    train_controller(model, data, 4, ControllerTrainConfig(epochs=3, batch_size=4, progress=False), corruption=TARGETS)


def train_universal(model, data):
    train_universal_controller(model, data, UniversalTrainConfig(epochs=3, batch_size=4, progress=False, budget_min=3,
                                                                 budget_max=6), corruption=TARGETS)


def train_autoencoder(model, data):
    pretrain_autoencoder(model.config, data, AutoencoderConfig(epochs=3, batch_size=4, progress=False))


@pytest.mark.parametrize("train", [train_per_budget_controller, train_universal, train_autoencoder])
@pytest.mark.parametrize("subset", [False, True], ids=["dataset", "subset"])
def test_controller_training_tells_an_epoch_aware_dataset_the_epoch(stage1_model, train, subset):
    """A new corruption draw every epoch (FreshCorruptionDataset), also through the Subset of a train_limit."""
    data = EpochRecorder(SquareDataset(stage1_model.config, 8, noisy="alternate"))
    train(stage1_model, Subset(data, range(6)) if subset else data)
    assert data.epochs == [0, 1, 2]
