"""Approximate-time synchronization with message_filters' API, plus a built-in implementation.

message_filters is not installable from PyPI, so `make_synchronizer()` uses it when importable and otherwise this
module's `ApproximateTimeSynchronizer`; `SynchronizerHandle.implementation` says which one runs, and `stats()`
reports counters for diagnostics with either (message_filters cannot report drops: those read None).

API (same as message_filters): `Subscriber(node, msg_type, topic, qos_profile=10, **kwargs)`,
`ApproximateTimeSynchronizer(fs, queue_size, slop, allow_headerless=False)`, `registerCallback(cb, *args)`; the
callback receives one message per input, in input order. Our `Subscriber` also feeds message_filters' synchronizers.

Policy of the built-in synchronizer, checked on every arrival:

* Each input keeps a queue of at most `queue_size` messages ordered by `header.stamp`; the oldest falls out first.
* A newly arrived message (the pivot) is matched with one queued message from every other input so that the
  stamp spread (max - min) is minimal; the set is emitted if the spread <= slop. Because every set is examined when
  its last member arrives, sets are emitted as soon as they are complete, as message_filters does.
* After emitting, the emitted messages and every older queued message are removed (never emitted twice, and sets
  come out in stamp order). Queued messages that can no longer be part of any set are dropped and counted.
* Per input, a stamp older than the previous one is dropped as out-of-order and an equal one as a duplicate, unless it
  is older by more than `time_jump_threshold` seconds: that is time jumping back (a looping bag, a restarted
  simulator), so all queues are reset and counting starts again.
* Headerless messages are dropped and counted unless `allow_headerless`, in which case they are stamped with the
  subscribing node's clock (sim time aware, unlike message_filters, which uses a fresh wall clock).
* Exceptions raised by a registered callback are logged and counted instead of killing the executor.
* Thread-safe: one re-entrant lock covers the queues and the callback (so outputs keep stamp order).
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

BUILTIN = "admn_ros.sync"
MESSAGE_FILTERS = "message_filters"

_log = logging.getLogger(__name__)


class SimpleFilter:
    def __init__(self):
        self.callbacks: dict[int, tuple[Callable, tuple]] = {}
        self._next_connection = 0

    def registerCallback(self, cb: Callable, *args) -> int:
        connection = self._next_connection
        self._next_connection += 1
        self.callbacks[connection] = (cb, args)
        return connection

    def signalMessage(self, *msg) -> None:
        for cb, args in list(self.callbacks.values()):
            cb(*(msg + args))


class Subscriber(SimpleFilter):
    """A ROS subscription as a filter: `Subscriber(node, msg_type, topic, qos_profile=10, **kwargs)`."""

    def __init__(self, node, msg_type, topic: str, qos_profile=10, **kwargs):
        super().__init__()
        self.node = node
        self.topic = topic
        self.sub = node.create_subscription(msg_type, topic, self.callback, qos_profile, **kwargs)

    def callback(self, msg) -> None:
        self.signalMessage(msg)

    def getTopic(self) -> str:
        return self.topic

    def __getattr__(self, key):
        # Serve the rclpy Subscription API (e.g. .topic_name, .destroy) like message_filters does.
        if key == "sub":
            raise AttributeError(key)
        return getattr(self.sub, key)


@dataclass
class InputStats:
    topic: str
    received: int = 0
    queued: int = 0
    dropped_overflow: int = 0
    dropped_unmatched: int = 0
    out_of_order: int = 0
    duplicates: int = 0
    headerless: int = 0
    last_arrival_monotonic: float | None = None
    last_stamp_ns: int | None = None

    @property
    def dropped(self) -> int | None:
        parts = (self.dropped_overflow, self.dropped_unmatched, self.out_of_order, self.duplicates, self.headerless)
        return None if None in parts else sum(parts)  # None: message_filters backend, drops are not observable


@dataclass
class SyncStats:
    implementation: str
    sets_emitted: int = 0
    time_jumps: int = 0
    callback_errors: int = 0
    last_set_stamp_ns: int | None = None
    last_set_monotonic: float | None = None
    inputs: list[InputStats] = field(default_factory=list)

    def as_key_values(self, now_monotonic: float | None = None) -> list[tuple[str, str]]:
        """Flat strings for diagnostic_msgs/KeyValue."""
        now = time.monotonic() if now_monotonic is None else now_monotonic
        pairs = [("sync_implementation", self.implementation), ("sets_emitted", str(self.sets_emitted)),
                 ("time_jumps", str(self.time_jumps)), ("callback_errors", str(self.callback_errors))]
        for stats in self.inputs:
            age = "never" if stats.last_arrival_monotonic is None else f"{now - stats.last_arrival_monotonic:.3f}"
            pairs += [(f"{stats.topic}.received", str(stats.received)),
                      (f"{stats.topic}.dropped", "unknown" if stats.dropped is None else str(stats.dropped)),
                      (f"{stats.topic}.seconds_since_arrival", age)]
        return pairs


def _topic_of(input_filter, index: int) -> str:
    get_topic = getattr(input_filter, "getTopic", None)
    try:
        return str(get_topic()) if get_topic else f"input_{index}"
    except Exception:  # a filter without a topic (e.g. a Cache) still gets a name
        return f"input_{index}"


def _stamp_ns(stamp) -> int:
    if hasattr(stamp, "nanoseconds"):  # rclpy.time.Time
        return int(stamp.nanoseconds)
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class ApproximateTimeSynchronizer(SimpleFilter):
    """message_filters-compatible approximate-time synchronizer (policy in the module docstring)."""

    implementation = BUILTIN

    def __init__(self, fs: Sequence, queue_size: int, slop: float, allow_headerless: bool = False,
                 time_jump_threshold: float = 1.0):
        super().__init__()
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if slop < 0:
            raise ValueError(f"slop must be >= 0 seconds, got {slop}")
        if len(fs) < 2:
            raise ValueError(f"an approximate-time synchronizer needs at least 2 inputs, got {len(fs)}")
        self.queue_size = int(queue_size)
        self.slop_ns = round(slop * 1e9)
        self.allow_headerless = allow_headerless
        self.time_jump_threshold_ns = round(time_jump_threshold * 1e9)
        self.lock = threading.RLock()
        self._stats = SyncStats(BUILTIN)
        self.connectInput(fs)

    @property
    def slop(self) -> float:
        return self.slop_ns / 1e9

    @slop.setter
    def slop(self, seconds: float) -> None:
        # Runtime-tunable (e.g. from a parameter callback).
        if seconds < 0:
            raise ValueError(f"slop must be >= 0 seconds, got {seconds}")
        with self.lock:
            self.slop_ns = round(seconds * 1e9)

    def connectInput(self, fs: Sequence) -> None:
        self._inputs = list(fs)
        self._stamps: list[list[int]] = [[] for _ in fs]
        self._messages: list[list] = [[] for _ in fs]
        self._last_stamp: list[int | None] = [None for _ in fs]
        self._stats.inputs = [InputStats(_topic_of(f, i)) for i, f in enumerate(fs)]
        self.input_connections = [f.registerCallback(self.add, i) for i, f in enumerate(fs)]

    def stats(self) -> SyncStats:
        with self.lock:
            for stats, stamps in zip(self._stats.inputs, self._stamps, strict=True):
                stats.queued = len(stamps)
            return SyncStats(**{**self._stats.__dict__, "inputs": [InputStats(**s.__dict__)
                                                                  for s in self._stats.inputs]})

    def reset(self) -> None:
        with self.lock:
            for index in range(len(self._inputs)):
                self._stamps[index].clear()
                self._messages[index].clear()
                self._last_stamp[index] = None

    def add(self, msg, my_queue_index: int) -> None:
        stamp = self._message_stamp_ns(msg, my_queue_index)
        with self.lock:
            stats = self._stats.inputs[my_queue_index]
            stats.received += 1
            stats.last_arrival_monotonic = time.monotonic()
            if stamp is None:
                stats.headerless += 1
                return
            if not self._accept_stamp(my_queue_index, stamp):
                return
            stats.last_stamp_ns = stamp
            self._stamps[my_queue_index].append(stamp)
            self._messages[my_queue_index].append(msg)
            if len(self._stamps[my_queue_index]) > self.queue_size:
                del self._stamps[my_queue_index][0], self._messages[my_queue_index][0]
                stats.dropped_overflow += 1
            chosen = self._best_set(my_queue_index, stamp)
            if chosen is not None:
                self._emit(chosen)
            self._drop_unmatchable()

    def _message_stamp_ns(self, msg, index: int) -> int | None:
        header = getattr(msg, "header", None)
        if header is not None and hasattr(header, "stamp"):
            return _stamp_ns(header.stamp)
        if not self.allow_headerless:
            return None
        node = getattr(self._inputs[index], "node", None)
        return node.get_clock().now().nanoseconds if node is not None else time.time_ns()

    def _accept_stamp(self, index: int, stamp: int) -> bool:
        stats = self._stats.inputs[index]
        last = self._last_stamp[index]
        if last is not None and stamp < last - self.time_jump_threshold_ns:
            self.reset()
            self._stats.time_jumps += 1
        elif last is not None and stamp < last:
            stats.out_of_order += 1
            return False
        elif last is not None and stamp == last:
            stats.duplicates += 1
            return False
        self._last_stamp[index] = stamp
        return True

    def _best_set(self, pivot_index: int, pivot: int) -> list[int] | None:
        """Queue positions (one per input) of the minimal-spread set containing the pivot, if spread <= slop."""
        windows = []
        for index, stamps in enumerate(self._stamps):
            if index == pivot_index:
                windows.append(None)
                continue
            lo = bisect.bisect_left(stamps, pivot - self.slop_ns)
            hi = bisect.bisect_right(stamps, pivot + self.slop_ns)
            if lo == hi:
                return None
            windows.append((lo, hi))
        # The best set's earliest stamp is the pivot or some candidate at or before it: try each as the lower bound
        # and take, per input, the earliest candidate at or after it (which minimises the set's latest stamp).
        lower_bounds = {pivot}
        for index, window in enumerate(windows):
            if window is not None:
                lower_bounds.update(s for s in self._stamps[index][window[0]:window[1]] if s <= pivot)
        best, best_key = None, None
        for lower in sorted(lower_bounds):
            positions, newest, oldest, distance = [], pivot, pivot, 0
            for index, window in enumerate(windows):
                if window is None:
                    positions.append(len(self._stamps[index]) - 1)
                    continue
                position = bisect.bisect_left(self._stamps[index], lower, window[0], window[1])
                if position == window[1]:
                    break
                stamp = self._stamps[index][position]
                positions.append(position)
                newest, oldest, distance = max(newest, stamp), min(oldest, stamp), distance + abs(stamp - pivot)
            else:
                key = (newest - oldest, distance)
                if newest - oldest <= self.slop_ns and (best_key is None or key < best_key):
                    best, best_key = positions, key
        return best

    def _emit(self, positions: list[int]) -> None:
        messages = [self._messages[index][position] for index, position in enumerate(positions)]
        for index, position in enumerate(positions):
            self._stats.inputs[index].dropped_unmatched += position  # older than the emitted one: can never match
            del self._stamps[index][:position + 1], self._messages[index][:position + 1]
        self._stats.sets_emitted += 1
        self._stats.last_set_stamp_ns = _stamp_ns(messages[0].header.stamp) if hasattr(messages[0], "header") else None
        self._stats.last_set_monotonic = time.monotonic()
        try:
            self.signalMessage(*messages)
        except Exception as error:  # a failing user callback must not take down the executor
            self._stats.callback_errors += 1
            _log.exception("synchronized callback raised %s", error)

    def _drop_unmatchable(self) -> None:
        # An input's future stamps are > its last stamp; a queued message with nothing within slop in some other input,
        # now or later, can never be part of a set.
        for index, stamps in enumerate(self._stamps):
            while stamps and self._is_unmatchable(index, stamps[0]):
                del stamps[0], self._messages[index][0]
                self._stats.inputs[index].dropped_unmatched += 1

    def _is_unmatchable(self, index: int, stamp: int) -> bool:
        for other, stamps in enumerate(self._stamps):
            if other == index:
                continue
            last = self._last_stamp[other]
            if last is None or last <= stamp + self.slop_ns:
                continue
            lo = bisect.bisect_left(stamps, stamp - self.slop_ns)
            if lo == len(stamps) or stamps[lo] > stamp + self.slop_ns:
                return True
        return False


def message_filters_available() -> bool:
    try:
        import message_filters  # noqa: F401
    except ImportError:
        return False
    return True


class _MessageFiltersStats:
    """Counts arrivals and sets around a message_filters synchronizer (which keeps no counters itself)."""

    def __init__(self, inputs: Sequence):
        self.lock = threading.Lock()
        self.stats = SyncStats(MESSAGE_FILTERS, inputs=[InputStats(_topic_of(f, i)) for i, f in enumerate(inputs)])
        for index, input_filter in enumerate(inputs):
            input_filter.registerCallback(self.on_arrival, index)

    def on_arrival(self, msg, index: int) -> None:
        with self.lock:
            stats = self.stats.inputs[index]
            stats.received += 1
            stats.last_arrival_monotonic = time.monotonic()
            if hasattr(msg, "header"):
                stats.last_stamp_ns = _stamp_ns(msg.header.stamp)

    def on_set(self, *messages) -> None:
        with self.lock:
            self.stats.sets_emitted += 1
            self.stats.last_set_monotonic = time.monotonic()
            if hasattr(messages[0], "header"):
                self.stats.last_set_stamp_ns = _stamp_ns(messages[0].header.stamp)

    def snapshot(self) -> SyncStats:
        with self.lock:
            inputs = [InputStats(**s.__dict__) for s in self.stats.inputs]
            for stats in inputs:
                stats.dropped_overflow = stats.dropped_unmatched = stats.out_of_order = None
                stats.duplicates = stats.headerless = None
            return SyncStats(**{**self.stats.__dict__, "inputs": inputs})


class SynchronizerHandle:
    """What `make_synchronizer` returns: the synchronizer, its implementation name and `stats()` for both kinds."""

    def __init__(self, synchronizer, implementation: str, external_stats: _MessageFiltersStats | None = None):
        self.synchronizer = synchronizer
        self.implementation = implementation
        self._external_stats = external_stats

    def registerCallback(self, cb: Callable, *args) -> int:
        if self._external_stats is None:
            return self.synchronizer.registerCallback(cb, *args)

        def counted(*messages):
            self._external_stats.on_set(*messages)
            cb(*messages)

        return self.synchronizer.registerCallback(counted, *args)

    def stats(self) -> SyncStats:
        if self._external_stats is not None:
            return self._external_stats.snapshot()
        return self.synchronizer.stats()


def make_synchronizer(inputs: Sequence, queue_size: int, slop: float, allow_headerless: bool = False,
                      backend: str = "auto", time_jump_threshold: float = 1.0) -> SynchronizerHandle:
    """Approximate-time synchronizer over `inputs`; backend 'auto' (message_filters if importable), 'builtin' or
    'message_filters'."""
    if backend not in ("auto", "builtin", MESSAGE_FILTERS):
        raise ValueError(f"sync backend must be 'auto', 'builtin' or 'message_filters', got {backend!r}")
    if backend == MESSAGE_FILTERS or (backend == "auto" and message_filters_available()):
        import message_filters  # raises ImportError with the module name when explicitly requested but absent

        external = _MessageFiltersStats(inputs)
        synchronizer = message_filters.ApproximateTimeSynchronizer(list(inputs), queue_size, slop,
                                                                   allow_headerless=allow_headerless)
        return SynchronizerHandle(synchronizer, MESSAGE_FILTERS, external)
    synchronizer = ApproximateTimeSynchronizer(inputs, queue_size, slop, allow_headerless=allow_headerless,
                                               time_jump_threshold=time_jump_threshold)
    return SynchronizerHandle(synchronizer, BUILTIN)
