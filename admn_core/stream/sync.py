"""message_filters' Python synchronization policies and API, in pure Python (no ROS import).

`SimpleFilter`, `Cache`, `TimeSynchronizer` and `ApproximateTimeSynchronizer` have the constructor arguments,
methods and outputs of the classes of the same names in ROS 2's `message_filters` Python package: on the same input
streams they emit the same sets in the same order (test/test_sync_message_filters.py checks this against the real
package). A message's stamp is `msg.header.stamp` (builtin_interfaces/Time, rclpy's Time, or anything with
`sec`/`nanosec` or `nanoseconds`), compared in integer nanoseconds.

Where they differ from message_filters, on purpose:

* Headerless messages (`allow_headerless=True`) are stamped by the `clock` given to the constructor (a callable
  returning a stamp). `admn_ros.msgs.sync.make_synchronizer` passes the subscribing node's ROS clock, which follows
  /clock under use_sim_time; message_filters calls `ROSClock().now()` on a clock attached to no node, which reads
  the system time even under use_sim_time. The default `clock` here is the system time, as there.
* A headerless message given to `TimeSynchronizer`, or to the others without `allow_headerless`, is logged once per
  input and counted; message_filters logs every one (and `TimeSynchronizer` raises AttributeError).
* Queues are guarded by a re-entrant lock and a set leaves its queues before its callbacks run, so a callback may feed
  the synchronizer again (message_filters' plain Lock deadlocks there).
* Invalid sizes and a negative slop raise ValueError at construction; message_filters accepts them and never emits
  (a Cache of size 0 keeps nothing).
* `Cache` reports times as `Stamp` (integer nanoseconds) rather than rclpy's Time, and `getInterval` with
  from_stamp > to_stamp raises ValueError (an assert there). Stamps compare by value whatever their clock type.
* Every message dropped by the policy is counted per input and reason (`drop_counts()`).

`SynchronizerHandle` is an optional layer over either implementation (anything with message_filters' shape:
`queues`, `lock`, `registerCallback`): diagnostics (`stats()`), callback exceptions logged instead of propagating
into the executor, and a reset of all queues when an input's stamps jump back (a looping bag, a restarted simulator).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

BUILTIN = "admn_core.stream.sync"

NS_PER_S = 1_000_000_000
DROP_REASONS = ("overflow", "duplicate", "headerless")

_log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class Stamp:
    """A point in time in integer nanoseconds (what `Cache` reports; rclpy's Time has the same `nanoseconds`)."""

    nanoseconds: int


def to_nanoseconds(stamp) -> int:
    """Integer nanoseconds of a stamp: an int, anything with `nanoseconds` (rclpy Time, `Stamp`) or `sec`/`nanosec`."""
    if isinstance(stamp, int):
        return stamp
    if hasattr(stamp, "nanoseconds"):
        return int(stamp.nanoseconds)
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def seconds_to_nanoseconds(seconds) -> int:
    """A duration in seconds (or anything with `nanoseconds`, such as rclpy's Duration) as rclpy's Duration counts it:
    the float product truncated, so a slop converts to exactly the nanoseconds message_filters compares against."""
    if hasattr(seconds, "nanoseconds"):
        return int(seconds.nanoseconds)
    return int(seconds * NS_PER_S)


def header_stamp(msg) -> int | None:
    """`msg.header.stamp` in nanoseconds, or None for a message without one (message_filters' test for a header)."""
    if not hasattr(msg, "header") or not hasattr(msg.header, "stamp"):
        return None
    return to_nanoseconds(msg.header.stamp)


def wall_clock() -> int:
    """The system time in nanoseconds: what message_filters stamps headerless messages with."""
    return time.time_ns()


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise ValueError(problem)


class StampOrder:
    """The newest stamp seen per input; classifies each arrival as "in_order", "late" (older than its input's newest)
    or "jump" (older by more than `threshold` seconds: time went back, so every input starts afresh)."""

    def __init__(self, n_inputs: int, threshold: float | None):
        self.threshold_ns = None if threshold is None else seconds_to_nanoseconds(threshold)
        self.newest: list[int | None] = [None] * n_inputs

    def observe(self, index: int, stamp: int) -> str:
        newest = self.newest[index]
        if newest is not None and self.threshold_ns is not None and stamp < newest - self.threshold_ns:
            self.newest = [None] * len(self.newest)
            self.newest[index] = stamp
            return "jump"
        if newest is not None and stamp < newest:
            return "late"
        self.newest[index] = stamp
        return "in_order"


def clear_queues(synchronizer) -> list[int]:
    """Empties every queue of a synchronizer with message_filters' shape (`queues`, `lock`) -> messages dropped."""
    with synchronizer.lock:
        cleared = [len(queue) for queue in synchronizer.queues]
        for queue in synchronizer.queues:
            queue.clear()
    return cleared


class SimpleFilter:
    """A message source: `registerCallback(cb, *args)` -> connection id; `signalMessage(*msg)` calls
    `cb(*msg, *args)` for every registered callback, in registration order."""

    def __init__(self):
        self.callbacks: dict[int, tuple[Callable, tuple]] = {}

    def registerCallback(self, cb: Callable, *args) -> int:
        connection = len(self.callbacks)
        self.callbacks[connection] = (cb, args)
        return connection

    def signalMessage(self, *msg) -> None:
        for cb, args in list(self.callbacks.values()):
            cb(*(msg + args))


class Cache(SimpleFilter):
    """The last `cache_size` messages of an input, in arrival order, queryable by stamp; passes every stored message on.

    Queries compare stamps in nanoseconds and scan in arrival order (not stamp order, as message_filters does):
    `getElemAfterTime(t)` is the earliest-arrived message stamped at or after t, `getElemBeforeTime(t)` the
    latest-arrived one at or before t, `getInterval(a, b)` every message stamped in [a, b], `getLatestTime()` /
    `getOldestTime()` the stamps of the newest / oldest arrival, `getLast()` the earliest-arrived message stamped at
    or after the newest arrival's stamp. Times are returned as `Stamp`; a query accepts any stamp `to_nanoseconds`
    reads.
    """

    def __init__(self, f, cache_size: int = 1, allow_headerless: bool = False, clock: Callable = wall_clock):
        super().__init__()
        _require(cache_size >= 1, f"cache_size must be >= 1, got {cache_size}")
        self.cache_size = int(cache_size)
        self.allow_headerless = allow_headerless
        self.clock = clock
        self.cache_msgs: list = []
        self.cache_times: list[Stamp] = []
        self.headerless_dropped = 0
        self.connectInput(f)

    def connectInput(self, f) -> None:
        self.incoming_connection = f.registerCallback(self.add)

    def add(self, msg) -> None:
        stamp = header_stamp(msg)
        if stamp is None:
            if not self.allow_headerless:
                self.headerless_dropped += 1
                if self.headerless_dropped == 1:
                    _log.warning("Cache drops messages without header.stamp (pass allow_headerless=True to stamp "
                                 "them on arrival)")
                return
            stamp = to_nanoseconds(self.clock())
        self.cache_msgs.append(msg)
        self.cache_times.append(Stamp(stamp))
        if len(self.cache_msgs) > self.cache_size:
            del self.cache_msgs[0], self.cache_times[0]
        self.signalMessage(msg)

    def _stamped(self):
        return zip(self.cache_msgs, (t.nanoseconds for t in self.cache_times), strict=True)

    def getInterval(self, from_stamp, to_stamp) -> list:
        start, end = to_nanoseconds(from_stamp), to_nanoseconds(to_stamp)
        _require(start <= end, f"getInterval needs from_stamp <= to_stamp, got {start} > {end} ns")
        return [msg for msg, t in self._stamped() if start <= t <= end]

    def getElemAfterTime(self, stamp):
        target = to_nanoseconds(stamp)
        return next((msg for msg, t in self._stamped() if t >= target), None)

    def getElemBeforeTime(self, stamp):
        target = to_nanoseconds(stamp)
        older = [msg for msg, t in self._stamped() if t <= target]
        return older[-1] if older else None

    def getLatestTime(self) -> Stamp | None:
        return self.cache_times[-1] if self.cache_times else None

    getLastestTime = getLatestTime  # message_filters' spelling

    def getOldestTime(self) -> Stamp | None:
        return self.cache_times[0] if self.cache_times else None

    def getLast(self):
        latest = self.getLatestTime()
        return None if latest is None else self.getElemAfterTime(latest)


class TimeSynchronizer(SimpleFilter):
    """Emits one message per input, in input order, when every input holds a message with the same stamp.

    Policy (message_filters' `TimeSynchronizer`): each input keeps a queue keyed by stamp in nanoseconds, at most
    `queue_size` entries; a message with a stamp already queued on its input replaces the queued one; when a queue
    overflows its smallest stamp is dropped (possibly the message that just arrived). After each arrival every stamp
    present in all queues is emitted, smallest first, and leaves the queues. Messages never leave a queue otherwise:
    arrival order within an input does not matter.
    """

    def __init__(self, fs: Sequence, queue_size: int):
        super().__init__()
        _require(len(fs) >= 1, "a synchronizer needs at least one input")
        _require(queue_size >= 1, f"queue_size must be >= 1, got {queue_size}")
        self.queue_size = int(queue_size)
        self.lock = threading.RLock()
        self._drops = [Counter() for _ in fs]
        self.connectInput(fs)

    def connectInput(self, fs: Sequence) -> None:
        self.queues: list[dict[int, object]] = [{} for _ in fs]
        self.input_connections = [f.registerCallback(self.add, queue, index)
                                  for index, (f, queue) in enumerate(zip(fs, self.queues, strict=True))]

    def drop_counts(self) -> list[Counter]:
        """Per input: messages the policy discarded without emitting them, by reason (see `DROP_REASONS`)."""
        with self.lock:
            return [Counter(drops) for drops in self._drops]

    def add(self, msg, my_queue: dict, my_queue_index: int | None = None) -> None:
        stamp = self._stamp(msg, my_queue)
        if stamp is None:
            return
        with self.lock:
            self._enqueue(msg, stamp, my_queue)
            common = set(my_queue).intersection(*self.queues)
            for shared in sorted(common):
                if all(shared in queue for queue in self.queues):  # a callback may have fed and emitted it already
                    self._emit([shared] * len(self.queues))

    def _stamp(self, msg, my_queue: dict) -> int | None:
        stamp = header_stamp(msg)
        if stamp is None:
            self._drop_headerless(my_queue)
        return stamp

    def _drop_headerless(self, my_queue: dict) -> None:
        index = self._index_of(my_queue)
        with self.lock:
            self._drops[index]["headerless"] += 1
            first = self._drops[index]["headerless"] == 1
        if first:
            _log.warning("%s input %d drops messages without header.stamp (ApproximateTimeSynchronizer and Cache "
                         "stamp them on arrival with allow_headerless=True)", type(self).__name__, index)

    def _index_of(self, my_queue: dict) -> int:
        return next(index for index, queue in enumerate(self.queues) if queue is my_queue)

    def _enqueue(self, msg, stamp: int, my_queue: dict) -> None:
        index = self._index_of(my_queue)
        if stamp in my_queue:
            self._drops[index]["duplicate"] += 1
        my_queue[stamp] = msg
        while len(my_queue) > self.queue_size:
            del my_queue[min(my_queue)]
            self._drops[index]["overflow"] += 1

    def _emit(self, stamps: list[int]) -> None:
        """Removes the set (one stamp per queue) from the queues, then passes its messages on."""
        messages = [queue.pop(stamp) for queue, stamp in zip(self.queues, stamps, strict=True)]
        self.signalMessage(*messages)


class ApproximateTimeSynchronizer(TimeSynchronizer):
    """Emits one message per input, in input order, whose stamps lie within `slop` seconds of each other.

    Policy (message_filters' Python `ApproximateTimeSynchronizer`), on each arrival of a message stamped t on input i:

    1. It enters input i's queue (keyed by stamp; a message with a stamp already queued replaces it in place); while
       the queue holds more than `queue_size` messages the smallest stamp is dropped, possibly the new message, and
       then nothing is emitted.
    2. For every other input the candidates are its queued stamps s with |s - t| <= slop, ordered by |s - t| (ties in
       queue insertion order). If some input has none, nothing is emitted.
    3. Combinations of one candidate per other input are tried in lexicographic order of the candidate lists (the
       last input varies fastest); the first whose stamps together with t span strictly less than slop
       (max - min < slop) is emitted and leaves the queues. At most one set is emitted per arrival.

    Queued messages leave only by step 1 or 3, so a late message on one input still matches as long as its partners
    are queued: arrival order within an input does not change which sets are emitted. The slop converts to
    nanoseconds as rclpy's Duration does (truncating), and a slop of 0 matches nothing (the span must be < slop).
    Headerless messages are dropped unless `allow_headerless`, which stamps them with `clock()` on arrival.

    `time_jump_threshold` (seconds; None, the default, keeps the policy exact) clears every queue when an input's
    stamp falls that far behind its newest one; `SynchronizerHandle` offers the same for any implementation.
    """

    def __init__(self, fs: Sequence, queue_size: int, slop: float, allow_headerless: bool = False,
                 clock: Callable = wall_clock, time_jump_threshold: float | None = None):
        self.slop_ns = 0
        self.allow_headerless = allow_headerless
        self.clock = clock
        if time_jump_threshold is not None:  # watches the inputs before the policy does: a jump clears queues first
            self._order = StampOrder(len(fs), time_jump_threshold)
            for index, input_filter in enumerate(fs):
                input_filter.registerCallback(self._watch_time, index)
        super().__init__(fs, queue_size)
        self.slop = slop

    @property
    def slop(self) -> float:
        """Seconds; assignable at run time, as seconds or an rclpy Duration (which message_filters stores)."""
        return self.slop_ns / NS_PER_S

    @slop.setter
    def slop(self, value) -> None:
        slop_ns = seconds_to_nanoseconds(value)
        _require(slop_ns >= 0, f"slop must be >= 0 seconds, got {value}")
        with self.lock:
            self.slop_ns = slop_ns

    def _watch_time(self, msg, index: int) -> None:
        stamp = header_stamp(msg)
        if stamp is not None and self._order.observe(index, stamp) == "jump":
            clear_queues(self)

    def _stamp(self, msg, my_queue: dict) -> int | None:
        stamp = header_stamp(msg)
        if stamp is not None:
            return stamp
        if self.allow_headerless:
            return to_nanoseconds(self.clock())
        self._drop_headerless(my_queue)
        return None

    def add(self, msg, my_queue: dict, my_queue_index: int | None = None) -> None:
        stamp = self._stamp(msg, my_queue)
        if stamp is None:
            return
        with self.lock:
            self._enqueue(msg, stamp, my_queue)
            if my_queue_index is not None and stamp not in my_queue:
                return  # the new message was the oldest of an overflowing queue
            searched = [index for index in range(len(self.queues)) if index != my_queue_index]
            candidates = [self._candidates(self.queues[index], stamp) for index in searched]
            fixed = () if my_queue_index is None else (stamp,)
            chosen = self._first_within_slop(candidates, fixed)
            if chosen is None:
                return
            stamps = dict(zip(searched, chosen, strict=True))
            if my_queue_index is not None:
                stamps[my_queue_index] = stamp
            self._emit([stamps[index] for index in range(len(self.queues))])

    def _candidates(self, queue: dict, stamp: int) -> list[int]:
        near = [s for s in queue if abs(s - stamp) <= self.slop_ns]
        return sorted(near, key=lambda s: abs(s - stamp))

    def _first_within_slop(self, candidates: list[list[int]], fixed: tuple, picked: tuple = ()) -> tuple | None:
        """The lexicographically first pick of one stamp per candidate list whose stamps, with `fixed`, span < slop.

        A depth-first search in list order that abandons a prefix once its span reaches slop (adding stamps never
        narrows a span) meets the combinations in the order of trying the full product, so it finds the same one."""
        chosen = fixed + picked
        if chosen and max(chosen) - min(chosen) >= self.slop_ns:
            return None
        if len(picked) == len(candidates):
            return picked
        for stamp in candidates[len(picked)]:
            found = self._first_within_slop(candidates, fixed, (*picked, stamp))
            if found is not None:
                return found
        return None


@dataclass
class InputStats:
    """One synchronizer input as diagnostics see it. Drop counts read None where the implementation hides them
    (message_filters); `out_of_order` counts arrivals stamped before the newest earlier one (kept, not dropped)."""

    topic: str
    received: int = 0
    queued: int = 0
    dropped_overflow: int | None = 0
    duplicates: int | None = 0
    headerless: int | None = 0
    dropped_reset: int = 0
    out_of_order: int = 0
    last_arrival_monotonic: float | None = None
    last_stamp_ns: int | None = None

    @property
    def dropped(self) -> int | None:
        parts = (self.dropped_overflow, self.duplicates, self.headerless, self.dropped_reset)
        return None if None in parts else sum(parts)


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


def topic_of(input_filter, index: int) -> str:
    """The input's topic (`getTopic()`, as a Subscriber has), else `input_<index>`."""
    get_topic = getattr(input_filter, "getTopic", None)
    try:
        return str(get_topic()) if get_topic else f"input_{index}"
    except Exception:  # a filter without a topic of its own (e.g. a Cache) still gets a name
        return f"input_{index}"


class SynchronizerHandle:
    """A synchronizer with message_filters' shape plus the layer a long-running node wants around it.

    `SynchronizerHandle(inputs, build, implementation, time_jump_threshold)` watches `inputs`, then calls
    `build(inputs)` for the synchronizer (so its own callbacks run first on every arrival). On top of the policy:

    * `stats()` -> `SyncStats`: arrivals, queue lengths, out-of-order arrivals, sets, time jumps and callback errors
      per input; the policy's drop counts where the synchronizer reports them (`drop_counts()`), None otherwise.
    * `registerCallback(cb, *args)`: an exception raised by `cb` is logged and counted instead of propagating into
      the subscription (and killing the executor).
    * A stamp older than the newest one seen on its input by more than `time_jump_threshold` seconds means time
      jumped back (a looping bag, a restarted simulator): every queue is cleared before the message enters, since
      the policy would otherwise keep the stale future stamps and drop each new message as the oldest. None disables.
    """

    def __init__(self, inputs: Sequence, build: Callable[[list], object], implementation: str,
                 time_jump_threshold: float | None = None):
        self.implementation = implementation
        self._lock = threading.Lock()
        self._stats = SyncStats(implementation, inputs=[InputStats(topic_of(f, i)) for i, f in enumerate(inputs)])
        self._order = StampOrder(len(inputs), time_jump_threshold)
        for index, input_filter in enumerate(inputs):
            input_filter.registerCallback(self._on_arrival, index)
        self.synchronizer = build(list(inputs))
        self.synchronizer.registerCallback(self._on_set)

    def registerCallback(self, cb: Callable, *args) -> int:
        def guarded(*messages):
            try:
                cb(*messages)
            except Exception:
                with self._lock:
                    self._stats.callback_errors += 1
                _log.exception("synchronized callback %s raised", getattr(cb, "__qualname__", cb))

        return self.synchronizer.registerCallback(guarded, *args)

    def stats(self) -> SyncStats:
        drop_counts = getattr(self.synchronizer, "drop_counts", None)
        drops = drop_counts() if drop_counts else None
        with self.synchronizer.lock:
            queued = [len(queue) for queue in self.synchronizer.queues]
        with self._lock:
            inputs = [replace(stats, queued=length) for stats, length in zip(self._stats.inputs, queued, strict=True)]
            snapshot = replace(self._stats, inputs=inputs)
        for index, stats in enumerate(inputs):
            for name, reason in zip(("dropped_overflow", "duplicates", "headerless"), DROP_REASONS, strict=True):
                setattr(stats, name, None if drops is None else drops[index][reason])
        return snapshot

    def _on_arrival(self, msg, index: int) -> None:
        stamp = header_stamp(msg)
        with self._lock:
            stats = self._stats.inputs[index]
            stats.received += 1
            stats.last_arrival_monotonic = time.monotonic()
            if stamp is None:
                return
            stats.last_stamp_ns = stamp
            order = self._order.observe(index, stamp)
            stats.out_of_order += int(order == "late")
            self._stats.time_jumps += int(order == "jump")
        if order == "jump":  # outside our lock: the synchronizer takes its lock and then ours (in _on_set)
            cleared = clear_queues(self.synchronizer)
            with self._lock:
                for stats, count in zip(self._stats.inputs, cleared, strict=True):
                    stats.dropped_reset += count

    def _on_set(self, *messages) -> None:
        with self._lock:
            self._stats.sets_emitted += 1
            self._stats.last_set_monotonic = time.monotonic()
            self._stats.last_set_stamp_ns = header_stamp(messages[0])
