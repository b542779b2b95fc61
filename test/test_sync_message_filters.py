"""The built-in policies emit exactly what the real message_filters emits, on the same random streams.

Skipped where message_filters is not importable: it is not on PyPI; `/work/shared/ros-tools/install.sh VENV` (or
any ROS 2 installation) provides it.
"""

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from admn_core.stream import sync as builtin
from admn_ros.msgs.conversions import ns_to_stamp

message_filters = pytest.importorskip(
    "message_filters", reason="message_filters is not installed (not on PyPI): run ../shared/ros-tools/install.sh "
                              ".venv to compare the built-in synchronizers with it")

MS = 1_000_000

# Stamps on a coarse grid (ms, with a few sub-ms offsets) so that equal stamps, ties in distance and spreads exactly
# at the slop occur often; slops include values whose float product with 1e9 is not exact (0.029 s).
stamps = st.builds(lambda ms, sub: ms * MS + sub, st.integers(0, 60), st.sampled_from([0, 0, 0, 1, 500_000]))
slops = st.sampled_from([0.0, 0.001, 0.005, 0.01, 0.029, 0.05])


@st.composite
def streams(draw):
    n_inputs = draw(st.integers(1, 4))
    arrivals = draw(st.lists(st.tuples(st.integers(0, n_inputs - 1), stamps), min_size=1, max_size=80))
    return n_inputs, draw(st.integers(1, 6)), arrivals


def emitted(build, n_inputs: int, arrivals) -> list[tuple[int, ...]]:
    """Feeds the arrivals (input, stamp) in order; -> each emitted set as the arrival numbers of its messages."""
    inputs = [builtin.SimpleFilter() for _ in range(n_inputs)]
    synchronizer = build(inputs)
    sets = []
    synchronizer.registerCallback(lambda *msgs: sets.append(tuple(m.arrival for m in msgs)))
    for arrival, (index, stamp) in enumerate(arrivals):
        inputs[index].signalMessage(SimpleNamespace(header=SimpleNamespace(stamp=ns_to_stamp(stamp)),
                                                    arrival=arrival))
    return sets


@settings(max_examples=300, deadline=None)
@given(streams(), slops)
def test_approximate_time_matches_message_filters(stream, slop):
    n_inputs, queue_size, arrivals = stream
    expected = emitted(lambda fs: message_filters.ApproximateTimeSynchronizer(fs, queue_size, slop), n_inputs,
                       arrivals)
    assert emitted(lambda fs: builtin.ApproximateTimeSynchronizer(fs, queue_size, slop), n_inputs,
                   arrivals) == expected


@settings(max_examples=200, deadline=None)
@given(streams())
def test_time_synchronizer_matches_message_filters(stream):
    n_inputs, queue_size, arrivals = stream
    expected = emitted(lambda fs: message_filters.TimeSynchronizer(fs, queue_size), n_inputs, arrivals)
    assert emitted(lambda fs: builtin.TimeSynchronizer(fs, queue_size), n_inputs, arrivals) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(stamps, min_size=1, max_size=30), st.integers(1, 8), stamps, stamps)
def test_cache_matches_message_filters(stamp_list, cache_size, first, second):
    from rclpy.time import Time

    def fill(cache_class):
        source = builtin.SimpleFilter()
        cache = cache_class(source, cache_size)
        passed = []
        cache.registerCallback(lambda msg: passed.append(msg.arrival))
        for arrival, stamp in enumerate(stamp_list):
            source.signalMessage(SimpleNamespace(header=SimpleNamespace(stamp=ns_to_stamp(stamp)), arrival=arrival))
        return cache, passed

    theirs, their_passed = fill(message_filters.Cache)
    ours, our_passed = fill(builtin.Cache)
    start, end = sorted((first, second))

    def answers(cache, at):
        label = lambda msg: None if msg is None else msg.arrival  # noqa: E731
        times = (cache.getLastestTime(), cache.getOldestTime())
        return ([m.arrival for m in cache.getInterval(at(start), at(end))], label(cache.getElemAfterTime(at(first))),
                label(cache.getElemBeforeTime(at(first))), label(cache.getLast()),
                [None if t is None else t.nanoseconds for t in times])

    assert our_passed == their_passed
    assert answers(ours, lambda ns: ns) == answers(theirs, lambda ns: Time(nanoseconds=ns,
                                                                           clock_type=theirs.cache_times[0].clock_type))


def test_out_of_order_arrival_gives_every_set_in_both():
    # The case that motivated the built-in policy's rewrite: camera frames arrive in reverse order.
    arrivals = [(0, frame * 33 * MS) for frame in reversed(range(8))] + [(1, frame * 33 * MS + 2 * MS)
                                                                         for frame in range(8)]
    expected = emitted(lambda fs: message_filters.ApproximateTimeSynchronizer(fs, 10, 0.01), 2, arrivals)
    assert len(expected) == 8
    assert emitted(lambda fs: builtin.ApproximateTimeSynchronizer(fs, 10, 0.01), 2, arrivals) == expected
