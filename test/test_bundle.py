"""Bundle round trip and the clear errors for truncated, tampered and mismatched files."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from admn_core.bench import random_bundle
from admn_core.bundle import BundleError, content_digest, load_bundle, save_bundle
from admn_core.preprocess import preprocess_batch, synthetic_sample

from model_fixtures import micro_config


@pytest.fixture
def saved(tmp_path):
    bundle = random_bundle(micro_config(), budgets=[4, 6], seed=3)
    path = save_bundle(tmp_path / "model.safetensors", bundle)
    return bundle, path


def test_round_trip_is_exact(saved):
    bundle, path = saved
    loaded = load_bundle(path)
    assert loaded.config == bundle.config
    for original, restored in [(bundle.model, loaded.model)] + [
            (bundle.controllers[n], loaded.controllers[n]) for n in bundle.controllers]:
        a, b = original.state_dict(), restored.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.controller_infos["budget_4"].budget == 4
    inputs = preprocess_batch(bundle.config, [synthetic_sample(bundle.config)])
    with torch.no_grad():
        assert torch.equal(bundle.model.eval()(inputs).mean, loaded.model(inputs).mean)


def test_truncated_file_names_the_problem(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"cut.safetensors.*(truncated|corrupt)"):
        load_bundle(cut)


def test_tampered_weights_are_detected(saved, tmp_path):
    _, path = saved
    assert_one_flipped_bit_is_detected(path, -100, tmp_path)  # inside the tensor data, header intact


def assert_one_flipped_bit_is_detected(path, offset, tmp_path):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    tampered = tmp_path / "tampered.safetensors"
    tampered.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="content_sha256"):
        load_bundle(tampered)


def test_mismatched_config_lists_the_shape_problems(saved, tmp_path):
    _, path = saved
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    config = json.loads(metadata["config"])
    config["fusion"]["dim"] = 48  # the weights were made for 32
    metadata["config"] = json.dumps(config)
    metadata["content_sha256"] = content_digest(tensors, metadata)
    mismatched = tmp_path / "mismatched.safetensors"
    save_file(tensors, str(mismatched), metadata=metadata)
    with pytest.raises(BundleError, match=r"'model' does not match its config: shape mismatch \[adapters"):
        load_bundle(mismatched)


def test_missing_unknown_and_foreign_files(saved, tmp_path):
    _, path = saved
    with pytest.raises(BundleError, match="bundle not found"):
        load_bundle(tmp_path / "absent.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign))
    with pytest.raises(BundleError, match="not an ADMN bundle"):
        load_bundle(foreign)
    with pytest.raises(BundleError, match="does not match the expected"):
        load_bundle(path, expected_sha256="0" * 64)


def test_extra_tensors_are_reported(saved, tmp_path):
    _, path = saved
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    tensors["controller.budget_9.layer_logits.0.weight"] = torch.zeros(1)
    metadata["content_sha256"] = content_digest(tensors, metadata)
    stray = tmp_path / "stray.safetensors"
    save_file(tensors, str(stray), metadata=metadata)
    with pytest.raises(BundleError, match="belong to nothing"):
        load_bundle(stray)


def test_universal_and_corruption_controllers_round_trip(tmp_path):
    from admn_core.bundle import ControllerInfo, build_controller

    config = micro_config()
    bundle = random_bundle(config, budgets=[4], seed=2)
    infos = [ControllerInfo("universal", None, kind="universal", corruption_outputs=3),
             ControllerInfo("admn_b6", 6, variant="corruption_supervised", corruption_outputs=3)]
    for info in infos:
        bundle.controllers[info.name] = build_controller(config, info)
        bundle.controller_infos[info.name] = info
    loaded = load_bundle(save_bundle(tmp_path / "kinds.safetensors", bundle))
    assert loaded.controller_infos == bundle.controller_infos
    for name, controller in bundle.controllers.items():
        a, b = controller.state_dict(), loaded.controllers[name].state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_version_1_bundles_still_load_with_their_tensor_only_hash(saved, tmp_path):
    _, path = saved
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    metadata["format_version"] = "1"
    metadata["content_sha256"] = content_digest(tensors)  # version 1: the tensors only
    old = tmp_path / "v1.safetensors"
    save_file(tensors, str(old), metadata=metadata)
    assert load_bundle(old).controller_infos["budget_6"].budget == 6
    tensors["model.fusion.norm.weight"] = tensors["model.fusion.norm.weight"] + 1
    save_file(tensors, str(old), metadata=metadata)
    with pytest.raises(BundleError, match="content_sha256"):
        load_bundle(old)


def test_half_precision_storage_loads_into_float32_modules_with_close_outputs(saved, tmp_path):
    bundle, path = saved
    half = save_bundle(tmp_path / "half.safetensors", bundle, storage_dtype=torch.float16)
    with safe_open(str(half), framework="pt") as handle:
        assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"F16"}
    assert 0.45 < half.stat().st_size / path.stat().st_size < 0.55  # the header is the same; the data halves
    loaded = load_bundle(half)
    parameters = list(loaded.model.state_dict().values()) + [
        v for controller in loaded.controllers.values() for v in controller.state_dict().values()]
    assert {v.dtype for v in parameters} == {torch.float32}
    inputs = preprocess_batch(bundle.config, [synthetic_sample(bundle.config)])
    with torch.no_grad():
        reference, output = bundle.model.eval()(inputs).mean, loaded.model(inputs).mean
    assert not torch.equal(reference, output)  # the weights really were rounded
    torch.testing.assert_close(output, reference, atol=2e-3, rtol=2e-2)


def test_half_precision_storage_keeps_integer_tensors_and_the_content_hash(saved, tmp_path):
    bundle, _ = saved
    bundle.model.register_buffer("step_count", torch.tensor([70000, 3]))  # beyond float16's exact integers
    half = save_bundle(tmp_path / "half.safetensors", bundle, storage_dtype=torch.float16)
    with safe_open(str(half), framework="pt") as handle:
        assert handle.get_tensor("model.step_count").tolist() == [70000, 3]
        assert handle.get_slice("model.fusion.norm.weight").get_dtype() == "F16"
    del bundle.model.step_count
    half = save_bundle(tmp_path / "half.safetensors", bundle, storage_dtype=torch.float16)
    assert_one_flipped_bit_is_detected(half, -3, tmp_path)  # a bit of the last stored float16 weight


def test_half_precision_storage_refuses_values_out_of_its_range(saved, tmp_path):
    bundle, _ = saved
    with torch.no_grad():
        bundle.model.fusion.norm.weight[0] = 1e6  # float16 holds at most 65504
    with pytest.raises(BundleError, match=r"fusion\.norm\.weight.*float16"):
        save_bundle(tmp_path / "half.safetensors", bundle, storage_dtype=torch.float16)
    assert not (tmp_path / "half.safetensors").exists()


def test_a_saved_bundle_is_readable_by_everyone_the_umask_allows(tmp_path):
    import os
    import stat

    previous = os.umask(0o022)
    try:
        path = save_bundle(tmp_path / "shared.safetensors", random_bundle(micro_config(), budgets=[4], seed=1))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # an installed model must be readable by the node's user
