"""Training from recorded bags: the samples are the ones the node's pipeline feeds its engine, bit for bit, with the
bag's ground truth; a cache of them is reused; `admn_train_bags` turns world-written bags into a bundle that
evaluates on a held-out bag; bad bags and topics are named with exit code 2."""

import numpy as np
import pytest

from admn_core.bench import random_bundle
from admn_core.data.bag_writer import write_trajectory_bag
from admn_core.data.dataset import WorldCacheDataset
from admn_core.runtime import InferenceEngine
from admn_ros.bags.bag_dataset import CacheOptions, GroundTruth, bag_samples, write_bag_cache
from admn_ros.bags.bag_reader import BagError
from admn_ros.bags.replay_eval import evaluate_bag, read_ground_truth

from bag_fixtures import short_training
from model_fixtures import micro_config

BUDGET = 8


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    return [write_trajectory_bag(root / f"run{seed}", duration_s=1.5, seed=seed) for seed in (1, 2)]


def captured(bag, config, **options):
    samples, targets = [], []
    report = bag_samples(bag, config, lambda sample, target: (samples.append(sample), targets.append(target)),
                         **options)
    return samples, targets, report


def test_bag_samples_are_the_samples_the_evaluator_feeds_the_engine(bags):
    config = micro_config()
    engine = InferenceEngine(random_bundle(config, [BUDGET]))
    fed = []
    infer = engine.infer
    engine.infer = lambda sample, budget: (fed.append(sample), infer(sample, budget))[1]
    records = evaluate_bag(bags[0], engine, BUDGET).records
    assert records and all(record.ok for record in records)

    samples, targets, report = captured(bags[0], config)
    assert report.samples == report.sets == len(records) == len(samples) == len(fed)
    assert report.no_ground_truth == 0 and not report.not_ok
    for ours, theirs in zip(samples, fed, strict=True):
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert ours[key].dtype == theirs[key].dtype and np.array_equal(ours[key], theirs[key]), key
    # The world writes a pose at every frame stamp: interpolation lands exactly on it.
    poses = {stamp: (x, y) for stamp, x, y in read_ground_truth(bags[0], config)[0]}
    for record, target in zip(records, targets, strict=True):
        assert np.array_equal(target["position"], np.float32(poses[record.stamp_ns]))
    times = [target["time"] for target in targets]
    assert times == sorted(times) and times[0] >= 0


def test_ground_truth_is_interpolated_within_the_gap_only():
    truth = GroundTruth([(1_000_000_000, 0.0, 2.0), (1_100_000_000, 1.0, 4.0), (1_500_000_000, 9.0, 9.0)], 0.1)
    middle = truth.at(1_050_000_000)
    np.testing.assert_allclose(middle["position"], [0.5, 3.0])
    assert middle["speed"] == pytest.approx(np.hypot(1.0, 2.0) / 0.1)
    assert truth.at(1_300_000_000) is None  # 0.2 s from both poses
    assert truth.at(900_000_000) is None and truth.at(1_600_000_000) is None  # outside the poses
    assert np.array_equal(truth.at(1_500_000_000)["position"], np.float32([9.0, 9.0]))


def test_cache_holds_the_samples_and_is_reused_until_a_bag_or_option_changes(bags, tmp_path):
    config = micro_config()
    samples, targets, _ = captured(bags[0], config)
    cache, reports = write_bag_cache([bags[0]], tmp_path / "cache", config)
    assert [r.samples for r in reports] == [len(samples)]
    dataset = WorldCacheDataset(cache)
    assert len(dataset) == len(samples)
    for index in (0, len(samples) - 1):
        sample, target = dataset[index]
        assert all(np.array_equal(sample[key], samples[index][key]) for key in samples[index])
        assert np.array_equal(target["position"], targets[index]["position"])
        assert target["corruption"]["rgb"]["category"] == "clean"
    assert write_bag_cache([bags[0]], cache, config)[1] == []  # same bags and options: reused
    assert write_bag_cache([bags[0]], cache, config, CacheOptions(max_gap_s=0.05))[1] != []


def test_missing_or_wrong_ground_truth_topic_names_the_bag_and_topic(bags):
    config = micro_config()
    with pytest.raises(BagError, match=r"run1.*no ground-truth topic /robot/odom"):
        captured(bags[0], config, gt_topic="/robot/odom")
    with pytest.raises(BagError, match=r"/ground_truth/corruption has type diagnostic_msgs/msg/DiagnosticArray"):
        captured(bags[0], config, gt_topic="/ground_truth/corruption")


def test_command_exits_2_naming_the_problem(bags, tmp_path, capsys):
    from admn_ros.bags.train_cli import main

    assert main(["--bags", str(bags[0]), "--val-bags", str(tmp_path / "absent"), "--out", str(tmp_path / "run"),
                 "--quiet"]) == 2
    assert "absent: no such bag" in capsys.readouterr().err
    assert main(["--bags", str(bags[0]), "--val-bags", str(bags[1]), "--gt-topic", "/odom", "--out",
                 str(tmp_path / "run"), "--quiet"]) == 2
    assert "no ground-truth topic /odom" in capsys.readouterr().err
    for corruption, problem in (("lowlight", "only the simulated world can render"),
                                ("fog", "unknown corruption preset 'fog'")):
        assert main(["--bags", str(bags[0]), "--val-bags", str(bags[1]), "--corruption", corruption, "--out",
                     str(tmp_path / "run"), "--quiet"]) == 2
        assert problem in capsys.readouterr().err


def test_one_command_trains_a_bundle_that_evaluates_on_a_held_out_bag(bags, tmp_path):
    from admn_ros.bags.train_cli import main

    settings = tmp_path / "train.yaml"
    settings.write_text(short_training("tiny"))
    out = tmp_path / "run"
    assert main(["--bags", str(bags[0]), "--val-bags", str(bags[1]), "--train-config", str(settings),
                 "--out", str(out), "--quiet"]) == 0
    engine = InferenceEngine.from_bundle(out / "bundle.safetensors")
    assert {"admn_b6", "admn_b12", "universal"} <= set(engine.controller_infos)
    result = evaluate_bag(bags[1], engine, 6)
    errors = [record.error_cm for record in result.ok_records()]
    assert errors and len(errors) == len(result.records) and np.all(np.isfinite(errors))
    assert (out / "eval" / "results.md").is_file()
    assert main(["--bags", str(bags[1]), "--val-bags", str(bags[0]), "--train-config", str(settings),
                 "--out", str(out), "--quiet"]) == 2  # other bags: the trained stages must not be reused
