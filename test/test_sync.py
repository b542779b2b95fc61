"""Synchronizers and Cache: message_filters' policies, the diagnostics layer, threads, and rclpy loopback.

test_sync_message_filters.py compares the outputs with the real message_filters on random streams."""

import random
import threading
from collections import Counter
from types import SimpleNamespace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from admn_core.stream.sync import Stamp
from admn_ros.msgs.conversions import ns_to_stamp, stamp_to_ns
from admn_ros.msgs.sync import (
    BUILTIN,
    ApproximateTimeSynchronizer,
    Cache,
    SimpleFilter,
    TimeSynchronizer,
    make_synchronizer,
    message_filters_available,
)

from ros_fixtures import ros_context, spin_until, unique_name  # noqa: F401 - pytest fixture

MS = 1_000_000


class FakeInput(SimpleFilter):
    def __init__(self, topic):
        super().__init__()
        self.topic = topic

    def getTopic(self):
        return self.topic

    def feed(self, stamp_ns, label=None):
        msg = SimpleNamespace(header=SimpleNamespace(stamp=ns_to_stamp(stamp_ns)), label=label)
        self.signalMessage(msg)
        return msg


def build(n_inputs=2, queue_size=10, slop=0.02, time_jump_threshold=None):
    """Inputs, the built-in synchronizer inside the diagnostics layer, and the stamps of every emitted set."""
    inputs = [FakeInput(f"in{i}") for i in range(n_inputs)]
    handle = make_synchronizer(inputs, queue_size, slop, backend="builtin", time_jump_threshold=time_jump_threshold)
    sets = []
    handle.registerCallback(lambda *msgs: sets.append(tuple(stamp_to_ns(m.header.stamp) for m in msgs)))
    return inputs, handle, sets


def test_pairs_streams_with_a_constant_offset():
    (camera, depth), sync, sets = build(slop=0.01)
    for frame in range(30):
        camera.feed(frame * 33 * MS)
        depth.feed(frame * 33 * MS + 3 * MS)
    assert sets == [(f * 33 * MS, f * 33 * MS + 3 * MS) for f in range(30)]
    assert sync.stats().sets_emitted == 30


def test_chooses_the_closest_candidate_and_keeps_the_others_queued():
    (camera, depth), sync, sets = build(slop=0.02)
    depth.feed(92 * MS)
    depth.feed(102 * MS)
    camera.feed(100 * MS)
    assert sets == [(100 * MS, 102 * MS)]
    stats = sync.stats()
    assert stats.inputs[1].queued == 1 and stats.inputs[1].dropped == 0  # depth@92 waits for a partner


def test_spread_must_be_strictly_below_slop():
    (a, b), _, sets = build(slop=0.010)
    a.feed(0)
    b.feed(10 * MS - 1)  # spread 1 ns under slop
    a.feed(100 * MS)
    b.feed(110 * MS)  # spread == slop: message_filters requires max - min < slop
    assert sets == [(0, 10 * MS - 1)]


def test_a_slop_of_zero_matches_nothing():
    (a, b), _, sets = build(slop=0.0)
    a.feed(5 * MS)
    b.feed(5 * MS)
    assert sets == []


def test_a_message_is_never_emitted_twice():
    (a, b), _, sets = build(slop=0.02)
    a.feed(0)
    b.feed(1 * MS)
    b.feed(5 * MS)  # would match a@0 again
    assert sets == [(0, 1 * MS)]


def test_closest_candidates_first_over_three_inputs():
    (a, b, c), _, sets = build(n_inputs=3, slop=0.03)
    a.feed(0)
    a.feed(20 * MS)
    b.feed(18 * MS)
    c.feed(21 * MS)  # a's candidates by distance to 21: 20 then 0; (20, 18, 21) spans 3 ms < slop
    assert sets == [(20 * MS, 18 * MS, 21 * MS)]


def test_first_combination_within_slop_in_candidate_order():
    # Not the minimal spread: the candidate lists are tried in order, closest-to-the-new-stamp first, input by input.
    (a, b, c), _, sets = build(n_inputs=3, slop=0.01)
    a.feed(1 * MS)
    b.feed(2 * MS)
    b.feed(9 * MS)
    c.feed(6 * MS)  # a: [1]; b by distance to 6: 9 (3 ms), 2 (4 ms); (1, 9, 6) spans 8 ms < 10: chosen over (1, 2, 6)
    assert sets == [(1 * MS, 9 * MS, 6 * MS)]


def test_queue_size_bounds_each_input():
    (a, _b), sync, _ = build(queue_size=5)
    for frame in range(20):
        a.feed(frame * MS)
    stats = sync.stats().inputs[0]
    assert stats.queued == 5 and stats.dropped_overflow == 15 and stats.received == 20


def test_an_overflowing_queue_drops_its_oldest_stamp_even_when_it_just_arrived():
    (a, b), sync, sets = build(queue_size=2, slop=0.005)
    a.feed(100 * MS)
    a.feed(200 * MS)
    a.feed(50 * MS)  # the oldest of three: dropped on arrival
    b.feed(51 * MS)
    b.feed(101 * MS)
    assert sets == [(100 * MS, 101 * MS)]
    assert sync.stats().inputs[0].dropped_overflow == 1


def test_late_and_duplicate_stamps():
    (a, b), sync, sets = build(slop=0.005)
    a.feed(100 * MS, label="first")
    a.feed(90 * MS)  # late: kept, it still finds its partner
    second = a.feed(100 * MS, label="second")  # same stamp: replaces the queued a@100
    got = []
    sync.registerCallback(lambda *msgs: got.append(msgs))
    b.feed(91 * MS)
    b.feed(101 * MS)
    stats = sync.stats().inputs
    assert sets == [(90 * MS, 91 * MS), (100 * MS, 101 * MS)]
    assert got[1][0] is second
    assert (stats[0].out_of_order, stats[0].duplicates, stats[0].dropped) == (1, 1, 1)


def test_scrambled_arrival_yields_the_sets_of_in_order_arrival():
    # Frames 100 ms apart, per-input offsets within 5 ms, slop 20 ms: every message has exactly one partner set.
    frames, offsets = 40, (0, 3 * MS, 5 * MS)
    arrivals = [(index, frame * 100 * MS + offset) for frame in range(frames) for index, offset in enumerate(offsets)]
    expected = [tuple(frame * 100 * MS + offset for offset in offsets) for frame in range(frames)]
    for seed in range(5):
        scrambled = random.Random(seed).sample(arrivals, len(arrivals))
        inputs, _, sets = build(n_inputs=3, queue_size=len(arrivals), slop=0.02)
        for index, stamp in scrambled:
            inputs[index].feed(stamp)
        assert sorted(sets) == expected


def test_scrambled_arrival_within_each_input():
    # Each camera sends its frames in a shuffled order (e.g. two publisher threads); depth arrives in order.
    (camera, depth), _, sets = build(queue_size=50, slop=0.01)
    frames = list(range(30))
    for frame in random.Random(1).sample(frames, len(frames)):
        camera.feed(frame * 33 * MS)
    for frame in frames:
        depth.feed(frame * 33 * MS + 2 * MS)
    assert sets == [(frame * 33 * MS, frame * 33 * MS + 2 * MS) for frame in frames]


def test_time_jumping_back_resets_and_keeps_synchronizing():
    (a, b), sync, sets = build(slop=0.01, time_jump_threshold=1.0)
    for frame in range(5):
        a.feed(60_000 * MS + frame * 33 * MS + 1 * MS)
        b.feed(60_000 * MS + frame * 33 * MS + 50 * MS)  # never within slop: they fill the queues
    for frame in range(5):  # the bag loops back to t = 0
        a.feed(frame * 33 * MS)
        b.feed(frame * 33 * MS + 2 * MS)
    stats = sync.stats()
    assert stats.time_jumps == 1 and stats.sets_emitted == 5
    assert sets == [(frame * 33 * MS, frame * 33 * MS + 2 * MS) for frame in range(5)]
    assert [s.dropped_reset for s in stats.inputs] == [5, 5]


@pytest.mark.parametrize("backend", ["builtin", "message_filters"])
def test_the_reset_works_around_either_backend(backend):
    if backend == "message_filters" and not message_filters_available():
        pytest.skip("message_filters is not installed (not on PyPI; ../shared/ros-tools/install.sh provides it)")
    inputs = [FakeInput("a"), FakeInput("b")]
    handle = make_synchronizer(inputs, 3, 0.01, backend=backend, time_jump_threshold=1.0)
    sets = []
    handle.registerCallback(lambda *msgs: sets.append(tuple(stamp_to_ns(m.header.stamp) for m in msgs)))
    for frame in range(3):
        inputs[0].feed(60_000 * MS + frame * 33 * MS)
        inputs[1].feed(60_000 * MS + frame * 33 * MS + 50 * MS)
    inputs[0].feed(0)
    inputs[1].feed(2 * MS)
    assert sets == [(0, 2 * MS)] and handle.stats().time_jumps == 1


def test_without_the_reset_stale_stamps_block_a_full_queue():
    # The policy alone: after the jump every new stamp is the oldest of its full queue and is dropped on arrival.
    (a, b), _, sets = build(queue_size=3, slop=0.01, time_jump_threshold=None)
    for frame in range(3):
        a.feed(60_000 * MS + frame * 33 * MS)
        b.feed(60_000 * MS + frame * 33 * MS + 50 * MS)
    for frame in range(5):
        a.feed(frame * 33 * MS)
        b.feed(frame * 33 * MS + 2 * MS)
    assert sets == []


def test_the_builtin_class_resets_on_its_own_when_asked():
    a, b = FakeInput("a"), FakeInput("b")
    sync = ApproximateTimeSynchronizer([a, b], 3, 0.01, time_jump_threshold=1.0)
    sets = []
    sync.registerCallback(lambda *msgs: sets.append(msgs))
    for frame in range(3):
        a.feed(60_000 * MS + frame * 33 * MS)
        b.feed(60_000 * MS + frame * 33 * MS + 50 * MS)
    a.feed(0)
    b.feed(2 * MS)
    assert len(sets) == 1 and [len(q) for q in sync.queues] == [0, 0]


def test_headerless_messages_are_counted_or_stamped_by_the_given_clock():
    (_, depth), sync, _ = build()
    depth.signalMessage(SimpleNamespace(data=1))
    assert sync.stats().inputs[1].headerless == 1

    a, b = FakeInput("a"), FakeInput("b")
    clock_ns = [5 * MS]
    sync2 = ApproximateTimeSynchronizer([a, b], 10, 0.01, allow_headerless=True, clock=lambda: clock_ns[0])
    got = []
    sync2.registerCallback(lambda *m: got.append(m))
    a.feed(4 * MS)
    b.signalMessage(SimpleNamespace(data=2))  # stamped 5 ms: within slop of a@4
    clock_ns[0] = 50 * MS
    a.feed(20 * MS)
    b.signalMessage(SimpleNamespace(data=3))  # stamped 50 ms: too far from a@20
    assert [(m[0].header.stamp.sec, m[1].data) for m in got] == [(0, 2)]
    assert list(sync2.queues[1]) == [50 * MS]


@pytest.mark.ros
def test_headerless_stamps_follow_the_node_clock(ros_context):  # noqa: F811 - fixture
    from rclpy.clock import ClockType
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    node = Node("sync_sim_time", context=ros_context,
                parameter_overrides=[Parameter("use_sim_time", Parameter.Type.BOOL, True)])
    try:
        a, b = FakeInput("a"), FakeInput("b")
        b.node = node  # what Subscriber exposes
        handle = make_synchronizer([a, b], 10, 0.01, allow_headerless=True, backend="builtin")
        got = []
        handle.registerCallback(lambda *m: got.append(m))
        assert node.get_clock().clock_type == ClockType.ROS_TIME
        a.feed(0)  # sim time before any /clock message reads 0
        b.signalMessage(SimpleNamespace(data=7))
        assert [m[1].data for m in got] == [7]
    finally:
        node.destroy_node()


def test_a_failing_callback_is_counted_not_raised():
    (a, b), sync, _ = build()
    sync.registerCallback(lambda *m: 1 / 0)
    a.feed(0)
    b.feed(MS)
    a.feed(40 * MS)
    b.feed(41 * MS)
    assert sync.stats().callback_errors == 2 and sync.stats().sets_emitted == 2


def test_invalid_construction():
    with pytest.raises(ValueError, match="queue_size"):
        ApproximateTimeSynchronizer([FakeInput("a"), FakeInput("b")], 0, 0.1)
    with pytest.raises(ValueError, match="slop"):
        ApproximateTimeSynchronizer([FakeInput("a"), FakeInput("b")], 5, -1)
    with pytest.raises(ValueError, match="cache_size"):
        Cache(FakeInput("a"), 0)


def test_slop_is_tunable_in_seconds_or_as_a_duration():
    from rclpy.duration import Duration

    (a, b), handle, sets = build(slop=0.001)
    a.feed(0)
    b.feed(5 * MS)
    handle.synchronizer.slop = 0.01
    a.feed(100 * MS)
    b.feed(105 * MS)
    handle.synchronizer.slop = Duration(seconds=0.002)
    a.feed(200 * MS)
    b.feed(205 * MS)
    assert sets == [(100 * MS, 105 * MS)] and handle.synchronizer.slop == 0.002


def test_stats_for_diagnostics():
    (a, b), sync, _ = build()
    a.feed(0)
    b.feed(MS)
    values = dict(sync.stats().as_key_values())
    assert values["sync_implementation"] == BUILTIN and values["sets_emitted"] == "1"
    assert values["in0.received"] == "1" and values["in1.dropped"] == "0"
    assert float(values["in0.seconds_since_arrival"]) < 5


def test_time_synchronizer_emits_exact_matches_in_stamp_order():
    a, b = FakeInput("a"), FakeInput("b")
    sync = TimeSynchronizer([a, b], 2)
    sets = []
    sync.registerCallback(lambda *msgs: sets.append(tuple(stamp_to_ns(m.header.stamp) for m in msgs)))
    a.feed(30 * MS)
    a.feed(10 * MS)
    a.feed(20 * MS)  # a overflows: its oldest stamp, 10 ms, goes
    b.feed(10 * MS)
    b.feed(20 * MS + 1)  # 1 ns apart: no match
    b.signalMessage(SimpleNamespace(data="no header"))
    b.feed(20 * MS)  # b overflows: 10 ms goes; then 20 ms is common
    b.feed(30 * MS)
    assert sets == [(20 * MS, 20 * MS), (30 * MS, 30 * MS)]
    assert [dict(d) for d in sync.drop_counts()] == [{"overflow": 1}, {"overflow": 1, "headerless": 1}]


def test_time_synchronizer_emits_every_stamp_now_common_smallest_first():
    a, b = FakeInput("a"), FakeInput("b")
    sync = TimeSynchronizer([a, b], 10)
    sets = []
    sync.registerCallback(lambda *msgs: sets.append(stamp_to_ns(msgs[0].header.stamp)))
    for stamp in (3, 1, 2):
        a.feed(stamp * MS)
    b.feed(2 * MS)
    sync.add(SimpleNamespace(header=SimpleNamespace(stamp=ns_to_stamp(1 * MS))), sync.queues[1])
    assert sets == [2 * MS, 1 * MS]


def cached(stamps_ms, cache_size):
    source = FakeInput("camera")
    cache = Cache(source, cache_size=cache_size)
    passed = []
    cache.registerCallback(passed.append)
    messages = [source.feed(stamp * MS, label=stamp) for stamp in stamps_ms]
    return cache, messages, passed


def test_cache_keeps_the_last_messages_in_arrival_order():
    cache, messages, passed = cached([10, 30, 20, 40], cache_size=3)
    assert passed == messages
    assert [m.label for m in cache.cache_msgs] == [30, 20, 40]
    assert (cache.getOldestTime(), cache.getLatestTime()) == (Stamp(30 * MS), Stamp(40 * MS))
    assert cache.getLastestTime() == cache.getLatestTime()  # message_filters' spelling


def test_cache_queries_scan_in_arrival_order():
    cache, _, _ = cached([10, 30, 20, 25], cache_size=10)
    labels = lambda msgs: [m.label for m in msgs]  # noqa: E731
    assert labels(cache.getInterval(Stamp(15 * MS), ns_to_stamp(30 * MS))) == [30, 20, 25]
    assert cache.getElemAfterTime(15 * MS).label == 30  # earliest arrival stamped at or after 15 ms
    assert cache.getElemBeforeTime(26 * MS).label == 25  # latest arrival stamped at or before 26 ms
    assert cache.getElemAfterTime(31 * MS) is None and cache.getElemBeforeTime(9 * MS) is None
    assert cache.getLast().label == 30  # the first arrival at or after the newest arrival's stamp (25 ms)
    with pytest.raises(ValueError, match="from_stamp <= to_stamp"):
        cache.getInterval(2, 1)


def test_cache_empty_and_headerless():
    source = FakeInput("mic")
    cache = Cache(source, cache_size=2)
    assert (cache.getLatestTime(), cache.getOldestTime(), cache.getLast()) == (None, None, None)
    source.signalMessage(SimpleNamespace(data=1))
    assert cache.cache_msgs == [] and cache.headerless_dropped == 1
    stamped = Cache(source, cache_size=2, allow_headerless=True, clock=lambda: 7 * MS)
    source.signalMessage(SimpleNamespace(data=2))
    assert stamped.getLatestTime() == Stamp(7 * MS) and stamped.getLast().data == 2


def test_make_synchronizer_reports_its_backend():
    inputs = [FakeInput("a"), FakeInput("b")]
    handle = make_synchronizer(inputs, 10, 0.02)
    expected = "message_filters" if message_filters_available() else BUILTIN
    assert handle.implementation == expected
    got = []
    handle.registerCallback(lambda *m: got.append(m))
    inputs[0].feed(0)
    inputs[1].feed(MS)
    assert len(got) == 1 and handle.stats().sets_emitted == 1
    if not message_filters_available():
        with pytest.raises(ImportError):
            make_synchronizer(inputs, 10, 0.02, backend="message_filters")
    with pytest.raises(ValueError, match="backend"):
        make_synchronizer(inputs, 10, 0.02, backend="exact")


def test_concurrent_inputs_keep_the_invariants():
    inputs, _, sets = build(n_inputs=3, queue_size=20, slop=0.004)
    offsets = (0, 1 * MS, 2 * MS)
    frame_barrier = threading.Barrier(3)  # keep producers roughly in step, as real sensors are; order within a frame
    # is left to the scheduler

    def produce(index):
        for frame in range(300):
            frame_barrier.wait()
            inputs[index].feed(frame * 10 * MS + offsets[index])

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert_invariants(sets, slop_ns=4 * MS)
    assert len(sets) == 300


def assert_invariants(sets, slop_ns):
    for emitted in sets:
        assert max(emitted) - min(emitted) < slop_ns
    for index in range(len(sets[0]) if sets else 0):
        stamps = [s[index] for s in sets]
        assert len(stamps) == len(set(stamps))  # each stamp of an input at most once


@settings(max_examples=60, deadline=None)
@example(events=[(0, 0), (1, 0), (2, 0), (2, 0), (0, 0), (1, 0)], queue_size=1, slop_ms=1)  # every input repeats
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(-20, 50)), min_size=1, max_size=120),
       st.integers(1, 8), st.integers(0, 30))
def test_random_streams_keep_the_invariants(events, queue_size, slop_ms):
    inputs, sync, sets = build(n_inputs=3, queue_size=queue_size, slop=slop_ms / 1000)
    clocks = [1000 * MS] * 3
    fed = [Counter() for _ in range(3)]
    for index, step_ms in events:  # each input's stamps move by a random step: repeats and late stamps included
        clocks[index] += step_ms * MS
        inputs[index].feed(clocks[index])
        fed[index][clocks[index]] += 1
    for emitted in sets:
        assert max(emitted) - min(emitted) < slop_ms * MS
    # Each message is emitted at most once. A stamp an input repeats may be emitted once per message, as
    # message_filters does (every input repeating one stamp gives the same set twice; the node drops the second
    # as not newer than the last processed set).
    for index in range(3):
        assert not Counter(emitted[index] for emitted in sets) - fed[index]
    stats = sync.stats()
    assert stats.sets_emitted == len(sets)
    for stats_in in stats.inputs:
        assert stats_in.queued <= queue_size
        assert stats_in.received == stats_in.queued + stats_in.dropped + len(sets)


@pytest.mark.ros
def test_rclpy_loopback_synchronizes_image_and_depth(ros_context):  # noqa: F811 - fixture
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from admn_ros.msgs.sync import Subscriber

    prefix = "/" + unique_name("sync")
    publisher_node = Node("sync_publisher", context=ros_context)
    listener = Node("sync_listener", context=ros_context)
    # TRANSIENT_LOCAL history on both ends: a reader that matches a writer a moment late still gets every frame,
    # so the test does not depend on discovery timing.
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    rgb_pub = publisher_node.create_publisher(Image, f"{prefix}/camera/image_raw", qos)
    depth_pub = publisher_node.create_publisher(Image, f"{prefix}/depth/image_raw", qos)
    subscribers = [Subscriber(listener, Image, f"{prefix}/camera/image_raw", qos_profile=qos),
                   Subscriber(listener, Image, f"{prefix}/depth/image_raw", qos_profile=qos)]
    handle = make_synchronizer(subscribers, queue_size=10, slop=0.01)
    pairs = []
    handle.registerCallback(lambda rgb, depth: pairs.append((stamp_to_ns(rgb.header.stamp),
                                                             stamp_to_ns(depth.header.stamp), rgb.encoding,
                                                             depth.encoding)))
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(publisher_node)
    executor.add_node(listener)
    assert spin_until(executor, lambda: rgb_pub.get_subscription_count() and depth_pub.get_subscription_count())

    for frame in range(10):
        rgb = Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(12))
        rgb.header.stamp = ns_to_stamp(1_000 * MS + frame * 33 * MS)
        depth = Image(height=2, width=2, encoding="16UC1", step=4, data=bytes(8))
        depth.header.stamp = ns_to_stamp(1_000 * MS + frame * 33 * MS + 3 * MS)
        rgb_pub.publish(rgb)
        depth_pub.publish(depth)
        executor.spin_once(timeout_sec=0.01)
    assert spin_until(executor, lambda: len(pairs) >= 10, timeout_s=5), handle.stats()
    assert [p[:2] for p in pairs] == [(1_000 * MS + f * 33 * MS, 1_003 * MS + f * 33 * MS) for f in range(10)]
    assert pairs[0][2:] == ("rgb8", "16UC1")
    stats = handle.stats()
    assert [s.topic for s in stats.inputs] == [f"{prefix}/camera/image_raw", f"{prefix}/depth/image_raw"]
    assert all(s.received == 10 for s in stats.inputs)
    executor.shutdown()


def test_message_filters_backend_is_wrapped_with_counters(monkeypatch):
    # Where message_filters is not installed, a module with the same constructor signature and no drop counters
    # stands in to check the wrapper that adds arrival/set counters (drops read None).
    import sys
    import types

    class WithoutDropCounts(ApproximateTimeSynchronizer):
        drop_counts = None

    stub = types.ModuleType("message_filters")
    stub.ApproximateTimeSynchronizer = WithoutDropCounts
    monkeypatch.setitem(sys.modules, "message_filters", stub)
    inputs = [FakeInput("a"), FakeInput("b")]
    handle = make_synchronizer(inputs, 10, 0.02)
    assert handle.implementation == "message_filters"
    got = []
    handle.registerCallback(lambda *m: got.append(m))
    inputs[0].feed(0)
    inputs[1].feed(MS)
    inputs[1].feed(500 * MS)
    stats = handle.stats()
    assert len(got) == 1 and stats.sets_emitted == 1
    assert [s.received for s in stats.inputs] == [1, 2] and stats.inputs[0].dropped is None
    assert dict(stats.as_key_values())["a.dropped"] == "unknown"
