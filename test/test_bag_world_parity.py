"""Train/serve parity by construction: a world recording written as a bag and read back through admn_node's frame
pipeline (the bag dataset) gives the recording's own samples, labels and targets bit for bit, and Stage 1 trained on
either cache with one seed gives the same metrics."""

import numpy as np
import pytest
import torch

from admn_core.data.bag_writer import write_trajectory_bag
from admn_core.data.cache import SampleCacheWriter, WorldCache
from admn_core.data.dataset import WorldCacheDataset
from admn_core.data.trajectory_recording import Episode, TrajectoryRecording, trajectory_samples
from admn_core.data.world import World, WorldConfig
from admn_core.models.task_model import ADMNModel
from admn_core.train.config import Stage1Config
from admn_core.train.stage1 import train_stage1
from admn_ros.bags.bag_dataset import cache_views, write_bag_cache

from model_fixtures import micro_config

START_S = 1_700_000_000.0
DURATION_S, SEED = 1.2, 5
# Short episodes so that labelled corruptions of every camera kind and the microphone fall inside 1.2 s.
EPISODES = (Episode(0.2, 0.6, "rgb", "lowlight", 100.0, ramp=True), Episode(0.7, 1.0, "depth", "dropout", 1.0),
            Episode(0.3, 1.1, "audio", "fan", -10.0, ("node_2",)))


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """(bag cache through the node's pipeline, cache of the recording's own samples), same model config."""
    root = tmp_path_factory.mktemp("parity")
    config = micro_config()
    world_config = WorldConfig.from_model_config(config)
    bag = write_trajectory_bag(root / "bag", DURATION_S, SEED, world_config=world_config, start_time_s=START_S,
                               episodes=EPISODES)
    bag_cache, _ = write_bag_cache([bag], root / "bag_cache", config)

    recording = TrajectoryRecording(World(world_config), DURATION_S, SEED, episodes=EPISODES)
    kept = set(WorldCache(bag_cache).arrays["time"].tolist())  # float32: the sets the synchronizer formed
    writer = SampleCacheWriter(root / "world_cache", cache_views(config),
                               tuple((spec.name, spec.kind) for spec in config.modalities), {"recording": SEED})
    for sample, target in trajectory_samples(recording, START_S):
        if float(np.float32(target["time"])) in kept:
            writer.add(sample, target)
    return WorldCache(bag_cache), WorldCache(writer.finish()), config


def test_the_bag_path_gives_the_recordings_samples_labels_and_targets_bit_for_bit(caches):
    from_bag, from_world = caches[:2]
    assert len(from_bag) == len(from_world) >= round(DURATION_S * 15) - 2
    assert from_bag.arrays.keys() == from_world.arrays.keys()
    # heading and speed are the only exceptions: a bag's poses give them only as the motion between two poses
    # (bag_dataset.GroundTruth), the world knows them exactly; no training stage reads them.
    for key, array in from_bag.arrays.items():
        if key in ("heading", "speed"):
            continue
        other = from_world.arrays[key]
        assert array.dtype == other.dtype and np.array_equal(array, other), f"{key} differs"
    # The episodes' labels came through the bag's corruption topic, not as clean.
    rgb, depth, mic = (from_bag.arrays[("label", name, "category_id")] for name in ("rgb", "depth", "mic"))
    assert rgb.max() > 0 and depth.max() > 0
    assert mic[:, 1].max() > 0 and mic[:, 0].max() == 0  # the fan episode is on node_2 only


def test_stage1_with_one_seed_gives_the_same_metrics_on_either_cache(caches, one_torch_thread):
    from_bag, from_world, config = caches

    def stage1(cache):
        torch.manual_seed(0)
        model = ADMNModel(config)
        history = train_stage1(model, WorldCacheDataset(cache.root), Stage1Config(
            epochs=2, batch_size=6, lr=1e-3, clean_warmup_epochs=0, progress=False, seed=0),
            val_set=WorldCacheDataset(cache.root))
        return history, model.state_dict()

    (bag_history, bag_weights), (world_history, world_weights) = stage1(from_bag), stage1(from_world)
    def metrics(history):
        return [{name: value for name, value in row.items() if name != "seconds"} for row in history]

    assert metrics(bag_history) == metrics(world_history) and len(bag_history) == 2
    assert all(torch.equal(bag_weights[name], world_weights[name]) for name in bag_weights)
