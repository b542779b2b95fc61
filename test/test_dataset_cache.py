"""The on-disk world cache and the torch Datasets over it."""

import json

import numpy as np
import pytest
from torch.utils.data import DataLoader

from admn_core.data.cache import FORMAT_VERSION, WorldCache, write_cache
from admn_core.data.dataset import WorldCacheDataset, WorldDataset
from admn_core.data.errors import CacheFormatError
from admn_core.data.world import World


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return write_cache(tmp_path_factory.mktemp("cache") / "world", 6, "mixed", seed=3)


def test_round_trip_equals_fresh_generation(cache_dir):
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION and manifest["num_samples"] == 6
    dataset = WorldCacheDataset(cache_dir)
    world = World()
    for index in (0, 5):
        sample, target = dataset[index]
        expected, expected_target = world.generate(index, "mixed", seed=3)
        assert list(sample) == list(expected)
        for key in expected:
            np.testing.assert_array_equal(sample[key], expected[key])
        np.testing.assert_array_equal(target["position"], expected_target["position"])
        for modality, label in expected_target["corruption"].items():
            assert target["corruption"][modality]["category"] == label["category"]
            np.testing.assert_array_equal(target["corruption"][modality]["view_value"], label["view_value"])


def test_parallel_generation_writes_the_same_cache(cache_dir, tmp_path):
    parallel = write_cache(tmp_path / "parallel", 6, "mixed", seed=3, workers=2)
    for path in sorted((cache_dir / "arrays").iterdir()):
        np.testing.assert_array_equal(np.load(path), np.load(parallel / "arrays" / path.name))


def test_arrays_are_memory_mapped_not_loaded(cache_dir):
    cache = WorldCache(cache_dir)
    assert isinstance(cache.arrays[("node_1", "rgb")], np.memmap)


def test_dataloader_collates_samples_and_targets(cache_dir):
    sample, target = next(iter(DataLoader(WorldCacheDataset(cache_dir), batch_size=3)))
    assert tuple(sample[("node_2", "rgb")].shape) == (3, 64, 64, 3)
    assert tuple(target["position"].shape) == (3, 2)
    assert tuple(target["corruption"]["depth"]["view_severity"].shape) == (3, 3)


def test_on_the_fly_dataset_matches_the_world():
    dataset = WorldDataset(4, "blur", seed=2)
    sample, _ = dataset[1]
    expected, _ = World().generate(1, "blur", seed=2)
    np.testing.assert_array_equal(sample[("node_3", "rgb")], expected[("node_3", "rgb")])
    with pytest.raises(IndexError):
        dataset[4]


def test_bad_caches_raise_errors_naming_the_file(cache_dir, tmp_path):
    with pytest.raises(CacheFormatError, match=r"manifest\.json"):
        WorldCache(tmp_path)
    with pytest.raises(CacheFormatError, match="already exists"):
        write_cache(cache_dir, 2)

    broken = tmp_path / "broken"
    write_cache(broken, 2, "clean")
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(CacheFormatError, match="format_version 99"):
        WorldCache(broken)

    (broken / "manifest.json").write_text(json.dumps(manifest))
    (broken / "arrays" / "node_2__depth.npy").write_bytes(b"not numpy")
    with pytest.raises(CacheFormatError, match=r"node_2__depth\.npy"):
        WorldCache(broken).sample(0)
