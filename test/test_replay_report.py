"""ADMN against a baseline (Naive Allocation) on the same frames and budgets: pairing, grouping and the tables."""

from admn_ros.bags.replay_eval import FrameRecord
from admn_ros.bags.replay_report import compare_to_baseline, format_baseline_comparison, pair_with_baseline


def record(stamp, budget, error, episode="clean", blocks=(4, 2), status="ok"):
    return FrameRecord(stamp, status=status, budget=budget, error_cm=error, episode=episode, t_s=stamp / 10,
                       active_blocks={"rgb": list(range(blocks[0])), "depth": list(range(blocks[1]))})


def test_pairs_join_on_stamp_and_budget_and_skip_unscored_or_unanswered_frames():
    admn = [record(1, 8, 10.0), record(2, 8, 12.0), record(3, 6, 20.0), record(4, 6, None),
            record(5, 6, 30.0, status="skipped_budget")]
    naive = [record(1, 8, 15.0), record(2, 6, 99.0), record(3, 6, 25.0), record(4, 6, 40.0), record(5, 6, 50.0),
             record(3, 8, 1.0)]
    pairs = pair_with_baseline(admn, naive)
    assert [(a.stamp_ns, b.error_cm) for a, b in pairs] == [(1, 15.0), (3, 25.0)]


def test_comparison_groups_by_episode_and_budget_with_ratio_saved_centimetres_and_blocks():
    admn = [record(1, 8, 10.0, "rgb:lowlight", (2, 6)), record(2, 8, 20.0, "rgb:lowlight", (4, 4)),
            record(3, 16, 30.0, "rgb:lowlight", (8, 8)), record(4, 16, 40.0, "clean", (10, 6))]
    naive = [record(1, 8, 20.0), record(2, 8, 40.0), record(3, 16, 30.0), record(4, 16, 20.0)]
    comparison = compare_to_baseline(admn, naive)
    lowlight_8 = comparison["per_episode_budget"][("rgb:lowlight", 8)]
    assert lowlight_8["n"] == 2 and lowlight_8["admn"] == 15.0 and lowlight_8["baseline"] == 30.0
    assert lowlight_8["ratio"] == 0.5 and lowlight_8["saved_cm"] == 15.0
    assert lowlight_8["blocks"] == {"rgb": 3.0, "depth": 5.0}
    lowlight = comparison["per_episode"]["rgb:lowlight"]
    assert lowlight["n"] == 3 and lowlight["admn"] == 20.0 and lowlight["baseline"] == 30.0
    assert comparison["overall"]["n"] == 4 and comparison["overall"]["admn"] == 25.0
    assert comparison["overall"]["baseline"] == 27.5
    assert list(comparison["per_episode"]) == ["rgb:lowlight", "clean"], "episodes in the order the bag shows them"
    assert comparison["paired"] == 4 and comparison["scored"] == 4


def test_tables_show_each_episode_and_budget_and_the_pooled_lines():
    admn = [record(1, 36, 10.0, "clean", (12, 12)), record(2, 8, 20.0, "rgb:lowlight", (1, 6)),
            record(3, 6, 30.0, "rgb:lowlight", (1, 4)), record(4, 8, 5.0, "rgb:lowlight", (1, 6))]
    naive = [record(1, 36, 10.0), record(2, 8, 40.0), record(3, 6, 45.0)]
    text = format_baseline_comparison(compare_to_baseline(admn, naive), "Naive Allocation")
    lines = text.splitlines()
    assert "3 of 4" in lines[0] and "vs Naive Allocation on" in lines[0]
    header = next(line for line in lines if line.lstrip().startswith("episode") and "budget" in line)
    for column in ("n", "ADMN", "Naive", "ratio", "saved", "rgb", "depth"):
        assert column in header.split()
    lowlight_rows = [line.split() for line in lines if line.startswith("rgb:lowlight")]
    assert lowlight_rows[:2] == [["rgb:lowlight", "8", "1", "20.0", "40.0", "0.50", "20.0", "1.0", "6.0"],
                                 ["rgb:lowlight", "6", "1", "30.0", "45.0", "0.67", "15.0", "1.0", "4.0"]]
    pooled = lowlight_rows[2]
    assert pooled[:6] == ["rgb:lowlight", "2", "25.0", "42.5", "0.59", "17.5"]
    assert any(line.split()[:2] == ["all", "3"] for line in lines)


def test_no_common_frame_says_so_instead_of_an_empty_table():
    comparison = compare_to_baseline([record(1, 8, 10.0)], [record(1, 6, 12.0)])
    assert comparison["paired"] == 0
    assert "no frame" in format_baseline_comparison(comparison, "Naive")


def test_ratio_against_a_perfect_baseline_is_not_a_division_error():
    comparison = compare_to_baseline([record(1, 8, 10.0)], [record(1, 8, 0.0)])
    assert comparison["overall"]["ratio"] == float("inf")
    assert "inf" in format_baseline_comparison(comparison, "Naive")
