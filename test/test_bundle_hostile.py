"""Hostile bundles: edited metadata, malformed JSON and odd paths are refused with a BundleError that names the
file and the field, before any module is built and without allocating what the edited config claims.

Each hostile file is a real bundle of a micro model rewritten with the safetensors library; edits are re-signed
with the bundle's own digest, so the refusal comes from validation, not from the content hash.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from admn_core.bench import random_bundle
from admn_core.bundle import BundleError, content_digest, load_bundle, save_bundle
from admn_core.cli import main as admn_main

from model_fixtures import micro_config

# Memory a refused load may take in the capped child process: the config edits below claim tens of GB.
ADDRESS_SPACE_HEADROOM = 1 << 30
PYTHON_HEAP_LIMIT = 64 << 20


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    bundle = random_bundle(micro_config(fusion_pooling="flatten"), budgets=[4], seed=1)
    return save_bundle(tmp_path_factory.mktemp("bundles") / "good.safetensors", bundle)


def rewrite(source: Path, target: Path, edit_metadata=None, resign: bool = True) -> Path:
    with safe_open(str(source), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    if edit_metadata:
        edit_metadata(metadata)
    if resign:
        metadata["content_sha256"] = content_digest(tensors, metadata)
    save_file(tensors, str(target), metadata=metadata)
    return target


def edit_config(change):
    def edit(metadata):
        config = json.loads(metadata["config"])
        change(config)
        metadata["config"] = json.dumps(config)
    return edit


def every_modality(**values):
    def change(config):
        for spec in config["modalities"]:
            spec.update(values)
    return change


def first_modality(**values):
    def change(config):
        config["modalities"][0].update(values)
    return change


# name -> (config edit, pattern the BundleError must match). Each would build a model of gigabytes or more.
ALLOCATION_CASES = {
    "depth_million": (every_modality(depth=10**6), r"modalities\[0\].*depth must be in \[1, 64\], got 1000000"),
    "embed_dim_30000": (first_modality(embed_dim=30000), r"modalities\[0\].*embed_dim must be in \[1, 8192\]"),
    "embed_dim_billion": (first_modality(embed_dim=10**9), r"modalities\[0\].*embed_dim must be in \[1, 8192\]"),
    "views_100k": (first_modality(views=[str(i) for i in range(10**5)]),
                   r"modalities\[0\].*views: at most 64 views, got 100000"),
    # Within every bound, but 12 blocks 8192 wide are ~10^10 parameters: refused from the header's shapes.
    "embed_dim_8192": (first_modality(embed_dim=8192),
                       r"'model' does not match its config: .*the config describes [\d,]+ parameters, "
                       r"the file holds [\d,]+"),
}


@pytest.fixture(scope="module")
def capped_loads(good, tmp_path_factory):
    """Load every allocation case (and the good bundle, as a control) in a child process whose address space is
    capped at its size after imports plus 1 GiB → {case: (outcome, Python heap peak in bytes)}."""
    directory = tmp_path_factory.mktemp("hostile")
    paths = {"good": str(good)}
    for name, (change, _) in ALLOCATION_CASES.items():
        paths[name] = str(rewrite(good, directory / f"{name}.safetensors", edit_config(change)))
    script = textwrap.dedent(f"""
        import json, re, resource, sys, tracemalloc
        from admn_core.bundle import BundleError, load_bundle

        mapped = int(re.search(r"VmSize:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        cap = mapped + {ADDRESS_SPACE_HEADROOM}
        resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
        results = {{}}
        for name, path in json.loads(sys.argv[1]).items():
            tracemalloc.start()
            try:
                load_bundle(path)
                outcome = "loaded"
            except BundleError as error:
                outcome = "BundleError: " + str(error)
            except BaseException as error:
                outcome = type(error).__name__ + ": " + str(error)[:500]
            results[name] = (outcome, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        print(json.dumps(results))
    """)
    completed = subprocess.run([sys.executable, "-c", script, json.dumps(paths)], capture_output=True, text=True,
                               timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status to cap memory")
def test_the_memory_cap_admits_a_legitimate_bundle(capped_loads):
    assert capped_loads["good"][0] == "loaded"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status to cap memory")
@pytest.mark.parametrize("case", sorted(ALLOCATION_CASES))
def test_inflated_config_is_refused_before_allocating(capped_loads, case):
    outcome, python_peak = capped_loads[case]
    _, pattern = ALLOCATION_CASES[case]
    assert outcome.startswith("BundleError: "), outcome
    assert f"{case}.safetensors" in outcome
    assert re.search(pattern, outcome), outcome
    assert python_peak < PYTHON_HEAP_LIMIT, f"{case}: Python heap peaked at {python_peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("change, pattern", [
    (first_modality(patch_size=0), r"modalities\[0\].*patch_size must be in \[1, "),
    (first_modality(patch_size=5), r"not divisible by patch_size 5"),
    (first_modality(num_heads=0), r"num_heads must be in \["),
    (first_modality(mlp_ratio=float("nan")), r"modalities\[0\]\.mlp_ratio: expected a finite number, got nan"),
    (first_modality(input_size=[-16, 16]), r"input_size must be in \[1, "),
    (lambda config: config["fusion"].update(depth=0), r"fusion.*depth must be in \[1, 64\], got 0"),
    (lambda config: config["head"].update(task="classification", num_classes=10**7),
     r"head.*num_classes must be in \[0, 100000\]"),
    (lambda config: config["controller"].update(stem_kernels=[3, 3, 300]), r"controller stem.*too small for kernels"),
    (lambda config: config.update(modalities=config["modalities"] * 7), r"at most 16 modalities, got 21"),
], ids=["patch_size_0", "patch_not_dividing", "heads_0", "mlp_ratio_nan", "negative_input", "fusion_depth_0",
        "classes_10M", "stem_too_large", "modalities_21"])
def test_out_of_range_config_values_name_the_field(good, tmp_path, change, pattern):
    bad = rewrite(good, tmp_path / "bad.safetensors", edit_config(change))
    with pytest.raises(BundleError, match=pattern) as raised:
        load_bundle(bad)
    assert str(bad) in str(raised.value)


@pytest.mark.parametrize("controllers, pattern", [
    ([{"name": "budget_4", "budget": 4, "corruption_outputs": 10**9}],
     r"controllers\[0\].*corruption_outputs must be in \[0, 100000\]"),
    ([{"name": 4, "budget": 4}], r"controllers\[0\]\.name: expected a string"),
    ([{"name": "a.b", "budget": 4}], r"controllers\[0\].*name 'a.b'"),
    ([{"name": "budget_4", "budget": 4}] * 2, r"duplicate controller name 'budget_4'"),
    ([7], r"controllers\[0\]: expected a mapping"),
    ({"name": "budget_4"}, r"controllers: expected a list"),
], ids=["corruption_outputs_1e9", "name_not_a_string", "name_with_dot", "duplicate", "not_a_mapping", "not_a_list"])
def test_invalid_controller_list_names_the_field(good, tmp_path, controllers, pattern):
    def edit(metadata):
        metadata["controllers"] = json.dumps(controllers)

    bad = rewrite(good, tmp_path / "controllers.safetensors", edit)
    with pytest.raises(BundleError, match=pattern):
        load_bundle(bad)


@pytest.mark.parametrize("key", ["config", "controllers"])
def test_deeply_nested_json_is_a_bundle_error_not_a_recursion_error(good, tmp_path, key):
    def edit(metadata):
        metadata[key] = "[" * 100_000 + "]" * 100_000

    bad = rewrite(good, tmp_path / "nested.safetensors", edit)
    with pytest.raises(BundleError, match=rf"nested.safetensors.*{key}.*nested deeper than 32"):
        load_bundle(bad)


def test_oversized_config_json_is_refused(good, tmp_path):
    def edit(metadata):
        config = json.loads(metadata["config"])
        config["name"] = "x" * (2 << 20)
        metadata["config"] = json.dumps(config)

    bad = rewrite(good, tmp_path / "huge.safetensors", edit)
    with pytest.raises(BundleError, match=r"config: JSON of \d+ characters exceeds the limit of 1048576"):
        load_bundle(bad)


def test_content_hash_covers_the_config_and_the_format_version(good, tmp_path):
    def shift_the_mean_box(metadata):  # shapes unchanged: only the hash can tell
        config = json.loads(metadata["config"])
        config["head"]["mean_half_range"] = [150.0, 150.0]
        metadata["config"] = json.dumps(config)

    edited = rewrite(good, tmp_path / "edited.safetensors", shift_the_mean_box, resign=False)
    with pytest.raises(BundleError, match="config or tensor contents do not match the recorded content_sha256"):
        load_bundle(edited)
    extra = rewrite(good, tmp_path / "extra.safetensors", lambda m: m.update({"extra.note": "x"}), resign=False)
    with pytest.raises(BundleError, match="content_sha256"):
        load_bundle(extra)
    assert load_bundle(rewrite(good, tmp_path / "resigned.safetensors", shift_the_mean_box)).config.head \
        .mean_half_range == (150.0, 150.0)


def test_a_symlink_loop_is_named(tmp_path):
    (tmp_path / "a.safetensors").symlink_to(tmp_path / "b.safetensors")
    (tmp_path / "b.safetensors").symlink_to(tmp_path / "a.safetensors")
    with pytest.raises(BundleError, match=r"a.safetensors: symlink loop"):
        load_bundle(tmp_path / "a.safetensors")


def test_a_directory_is_named(tmp_path):
    (tmp_path / "model.safetensors").mkdir()
    with pytest.raises(BundleError, match=r"model.safetensors: is a directory"):
        load_bundle(tmp_path / "model.safetensors")


def test_a_fifo_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    errors = []
    worker = threading.Thread(target=lambda: errors.append(_error_of(lambda: load_bundle(fifo))), daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # blocked in open(): release it by opening the other end, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("loading a FIFO blocked")
    assert "pipe.safetensors: not a regular file" in errors[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_named(good, tmp_path):
    locked = tmp_path / "locked.safetensors"
    locked.write_bytes(good.read_bytes())
    locked.chmod(0)
    with pytest.raises(BundleError, match=r"locked.safetensors: not readable"):
        load_bundle(locked)


@pytest.mark.parametrize("content", [b"", b"hello, this is not a model\n", b"\xff" * 8 + b"{}"],
                         ids=["empty", "text", "huge_header_length"])
def test_a_file_that_is_not_safetensors_is_named(tmp_path, content):
    path = tmp_path / "other.safetensors"
    path.write_bytes(content)
    with pytest.raises(BundleError, match=r"other.safetensors: not a readable safetensors file"):
        load_bundle(path)


def _error_of(action) -> str:
    try:
        action()
    except BundleError as error:
        return str(error)
    return "no error"


@pytest.mark.parametrize("edit, pattern", [
    (lambda m: m.update(config="[" * 100_000), r"nested deeper than 32"),
    (lambda m: m.pop("config"), r"metadata lacks 'config'"),
    (lambda m: m.update(controllers="[1]"), r"controllers\[0\]: expected a mapping"),
    (edit_config(first_modality(patch_size=0)), r"patch_size must be in"),
], ids=["nested", "no_config", "controller_not_a_mapping", "patch_size_0"])
def test_info_on_a_hostile_bundle_prints_the_error_and_exits_2(good, tmp_path, capsys, edit, pattern):
    bad = rewrite(good, tmp_path / "hostile.safetensors", edit)
    assert admn_main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("admn info: error: ") and "hostile.safetensors" in err
    assert re.search(pattern, err), err


def test_info_on_a_directory_exits_2(tmp_path, capsys):
    assert admn_main(["info", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
