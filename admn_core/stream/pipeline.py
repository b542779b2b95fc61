"""One frame pipeline for admn_node, the bag evaluator and the demo: stamped messages in, one Outcome per set out.

    add_frame(key, msg), add_audio(key, msg)   camera/depth messages go through the synchronizer (injected:
                                               message_filters' ApproximateTimeSynchronizer or the builtin one, over
                                               input filters this object owns); audio chunks go to the assembler
    -> pending sets (stamp, {key: message})    in stamp order, at most MAX_PENDING_SETS
    -> ready                                   when every microphone's audio has reached the set's stamp (its window
                                               is then final), or when `audio_wait_s` has passed since the set formed:
                                               processed anyway, the shortfall reported per input. Ready sets are a
                                               prefix of the pending ones; `latest_only` (the node) takes the newest
                                               ready set and counts the older ready ones as dropped_stale, otherwise
                                               (the evaluator) every set is taken in order
    -> process(pending) -> Outcome             the rules below, decoding + audio windows, the last T frames of a
                                               clip model's inputs (admn_core.stream.frame_history), inference,
                                               output check

Rules, in this order, identical live and offline:
* no budget, or a budget below the model's minimum: nothing runs (skipped_budget), never rounded up;
* a set not newer than the last processed one is out_of_order, unless it is more than TIME_JUMP_BACK_S older: time
  jumped back (a looping bag, a restarted simulator), counted, and processing starts over;
* a message that cannot be decoded, or a sample the engine refuses: bad_input, naming the input;
* out of memory: retried at once at a lower budget (halfway to the minimum, repeatedly) and the budget stays capped
  there for OOM_CAP_HOLD_S; when even the minimum does not fit on a GPU the engine moves to the CPU for good; any
  other exception: failed;
* a model output that is not finite: non_finite (never published).

Injected, so that this module needs no ROS: the engine (admn_core.runtime.InferenceEngine), the `assembler` that
decodes messages (admn_ros.msgs.frame_assembly.FrameAssembler: add_audio, audio_shortfall, assemble; its errors carry
`.key` and `.reason`), `budget_for(stamp_ns) -> (budget or None, origin)`, `synchronizer_factory(filters)` (an object
with registerCallback, e.g. admn_ros.msgs.sync.make_synchronizer's handle), `clock` (time.monotonic live; the bag's log
time offline, so a recorded stream is waited on as the node waited on it) and `log(level, key, text)`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from admn_core.preprocess import InputError
from admn_core.ros_interface import NODE_DEFAULTS
from admn_core.stream.frame_history import FrameHistory
from admn_core.stream.sync import SimpleFilter
from admn_core.stream.throttled_log import ThrottledLog

TIME_JUMP_BACK_S = 1.0  # a set older than the last by more than this: a bag loop / simulator restart
OOM_CAP_HOLD_S = 30.0  # after an out-of-memory error the budget stays capped this long, then the request is retried
DEFAULT_AUDIO_WAIT_S = NODE_DEFAULTS.audio_wait_s
MAX_PENDING_SETS = 64  # sets waiting for audio hold their frames: bounded, the oldest is dropped as stale


@dataclass
class InputState:
    key: tuple[str, str]  # (view, modality)
    kind: str  # rgb | depth | audio
    topic: str  # the name the synchronizer reports (relative topic)
    resolved_topic: str = ""  # the name used in messages (fully qualified topic; defaults to `topic`)
    received: int = 0
    last_arrival: float | None = None  # clock() at the latest message
    errors: int = 0
    last_error: str = ""
    rate_problem: str | None = None  # audio: the microphone's sample-rate problem, if any
    audio_waits_expired: int = 0  # audio: sets processed before this microphone's audio reached their stamp
    audio_short_ms: float | None = None  # audio: how far its audio fell short at the latest such set (None: none)

    def __post_init__(self):
        self.resolved_topic = self.resolved_topic or self.topic


@dataclass
class PendingSet:
    stamp_ns: int
    messages: dict  # (view, modality) -> camera/depth message
    formed: float  # clock() when the synchronizer emitted the set
    audio_short: dict = field(default_factory=dict)  # key -> newest audio end stamp (None: no audio) when taken


@dataclass
class Timings:
    decode_ms: float = 0.0
    audio_ms: float = 0.0
    preprocess_ms: float = 0.0  # engine preprocessing (resize, normalise, spectrogram)
    model_ms: float = 0.0  # controller + backbones + fusion + head
    publish_ms: float = 0.0  # filled by the publisher
    end_to_end_ms: float = 0.0  # set formed -> outputs published (includes waiting), filled by the publisher


@dataclass
class Counters:
    sets_received: int = 0
    sets_processed: int = 0
    dropped_stale: int = 0
    dropped_out_of_order: int = 0
    dropped_bad_input: int = 0
    skipped_budget: int = 0
    failed: int = 0
    time_jumps: int = 0
    audio_waits_expired: int = 0
    audio_windows_missing: int = 0
    audio_samples_zero_filled: int = 0
    depth_frames_all_invalid: int = 0
    frames_rejected_oversize: int = 0
    dropped_non_finite_output: int = 0
    budget_messages: int = 0  # counted by the budget's subscriber
    oom_errors: int = 0
    oom_retries: int = 0
    device_fallbacks: int = 0


@dataclass
class Outcome:
    stamp_ns: int
    status: str = "ok"  # ok | skipped_budget | out_of_order | bad_input | failed | non_finite
    reason: str = ""
    budget: int | None = None  # requested
    budget_origin: str = ""  # where the budget came from; "+oom_cap" when an out-of-memory cap lowered it
    result: object = None  # admn_core.runtime.Result when the engine ran
    assembled: object = None  # the assembler's Assembled (decoded sample and what went wrong on the way)
    bad_key: tuple | None = None  # the input a bad_input outcome blames
    timings: Timings | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class InputFilter(SimpleFilter):
    """One input the pipeline feeds, as a message_filters filter (a synchronizer registers here)."""

    def __init__(self, topic: str):
        super().__init__()
        self.topic = topic

    def getTopic(self) -> str:
        return self.topic


def message_stamp_ns(msg) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def finite_result(result) -> bool:
    arrays = (result.position_m, result.covariance_m2, result.class_probabilities)
    return all(bool(np.all(np.isfinite(a))) for a in arrays if a is not None)


class FramePipeline:
    """See the module docstring. Thread-safe for one feeding thread and one processing thread."""

    def __init__(self, engine, assembler, budget_for: Callable, synchronizer_factory: Callable, *,
                 topics: dict | None = None, latest_only: bool = False,
                 audio_wait_s: float = DEFAULT_AUDIO_WAIT_S, clock: Callable[[], float] = time.monotonic,
                 log: Callable | None = None):
        self.engine, self.config, self.assembler = engine, engine.config, assembler
        self.budget_for, self.latest_only, self.audio_wait_s, self.clock = budget_for, latest_only, audio_wait_s, clock
        self.log = log or ThrottledLog(logging.getLogger(__name__))
        self.counters = Counters()
        self.inputs: dict[tuple[str, str], InputState] = {}
        for spec in self.config.modalities:
            for view in spec.views:
                key = (view, spec.name)
                self.inputs[key] = InputState(key, spec.kind, (topics or {}).get(key, f"{view}/{spec.name}"))
        self.frame_keys = [key for key, state in self.inputs.items() if state.kind != "audio"]
        if not self.frame_keys:
            raise ValueError(f"model {self.config.name} has no camera or depth modality: sets are formed from "
                             "synchronized camera/depth frames")
        self.filters = {key: InputFilter(self.inputs[key].topic) for key in self.frame_keys}
        if len(self.filters) == 1:
            self.synchronizer = None
            next(iter(self.filters.values())).registerCallback(self._on_set)
        else:
            self.synchronizer = synchronizer_factory(list(self.filters.values()))
            self.synchronizer.registerCallback(self._on_set)
        self.history = FrameHistory(self.config)
        self._pending: collections.deque[PendingSet] = collections.deque()
        self._condition = threading.Condition()
        self._last_stamp_ns: int | None = None
        self._oom_cap: int | None = None
        self._oom_cap_since = 0.0
        self.last_result = None
        self.last_set_time: float | None = None
        # The latest problem of each kind, for diagnostics; None when fine.
        self.budget_problem = self.inference_problem = self.device_problem = None
        self.audio_problem = self.rejected_problem = self.wait_problem = None

    @property
    def oom_cap(self) -> int | None:
        """The budget cap after an out-of-memory error (None: no cap)."""
        return self._oom_cap

    # ------------------------------------------------------------------------------------------------ inputs

    def add_frame(self, key, msg) -> None:
        """A camera/depth message; the synchronizer may form a set from it."""
        self._arrived(key)
        self.filters[key].signalMessage(msg)

    def add_audio(self, key, msg) -> str | None:
        """An audio chunk -> None, or why it was rejected (counted on the input, logged)."""
        state = self._arrived(key)
        try:
            problem = self.assembler.add_audio(key, msg)
        except Exception as error:  # one malformed chunk must never take the caller down
            reason = getattr(error, "reason", None) or f"{type(error).__name__}: {error}"
            self._bad_input(state, reason, "skipped")
            return reason
        if problem and problem != state.rate_problem:
            state.errors += 1
            state.last_error = problem
        state.rate_problem = problem
        if problem:
            self.log("warning", f"audio_rate:{state.resolved_topic}", f"{state.resolved_topic}: {problem}")
        with self._condition:
            self._condition.notify_all()
        return None

    def _arrived(self, key) -> InputState:
        state = self.inputs[key]
        state.received += 1
        state.last_arrival = self.clock()
        return state

    def _on_set(self, *messages) -> None:
        pending = PendingSet(message_stamp_ns(messages[0]), dict(zip(self.frame_keys, messages, strict=True)),
                             self.clock())
        with self._condition:
            self.counters.sets_received += 1
            self.last_set_time = pending.formed
            self._pending.append(pending)
            if len(self._pending) > MAX_PENDING_SETS:
                self._pending.popleft()
                self.counters.dropped_stale += 1
            self._condition.notify_all()

    # ------------------------------------------------------------------------------------------ ready sets

    def pending(self) -> int:
        with self._condition:
            return len(self._pending)

    def waiting_for_audio(self) -> bool:
        """The oldest pending set waits for audio that has not reached its stamp yet."""
        with self._condition:
            return bool(self._pending) and bool(self.assembler.audio_shortfall(self._pending[0].stamp_ns))

    def _is_ready(self, pending: PendingSet, now: float) -> bool:
        return now - pending.formed >= self.audio_wait_s or not self.assembler.audio_shortfall(pending.stamp_ns)

    def _take_ready(self, now: float, waited_enough: bool = False) -> PendingSet | None:
        if not self._pending or not (waited_enough or self._is_ready(self._pending[0], now)):
            return None
        if self.latest_only:  # audio and age only grow with the stamp: the ready sets are a prefix
            while len(self._pending) > 1 and self._is_ready(self._pending[1], now):
                self._pending.popleft()
                self.counters.dropped_stale += 1
        pending = self._pending.popleft()
        pending.audio_short = self.assembler.audio_shortfall(pending.stamp_ns)
        return pending

    def ready_sets(self) -> list[PendingSet]:
        """Every set ready now, oldest first (without waiting)."""
        ready = []
        with self._condition:
            while (pending := self._take_ready(self.clock())) is not None:
                ready.append(pending)
        return ready

    def drain(self) -> list[PendingSet]:
        """Every pending set, ready or not: the input ended, nothing more will arrive."""
        ready = []
        with self._condition:
            while (pending := self._take_ready(self.clock(), waited_enough=True)) is not None:
                ready.append(pending)
        return ready

    def wait_ready(self, timeout_s: float) -> PendingSet | None:
        """The oldest set once it is ready, waiting at most `timeout_s` (clock must be time.monotonic)."""
        deadline = self.clock() + timeout_s
        with self._condition:
            while True:
                now = self.clock()
                pending = self._take_ready(now)
                if pending is not None or now >= deadline:
                    return pending
                wake = min(deadline, self._pending[0].formed + self.audio_wait_s) if self._pending else deadline
                self._condition.wait(max(0.0, wake - now))

    # ------------------------------------------------------------------------------------------ processing

    def process(self, pending: PendingSet) -> Outcome:
        """Apply the rules (module docstring) to one set and run it; the Outcome says what happened."""
        budget, origin = self.budget_for(pending.stamp_ns)
        outcome = Outcome(pending.stamp_ns, budget=budget, budget_origin=origin)
        if budget is None or budget < self.engine.min_budget:
            reason = origin if budget is None else (f"budget {budget} ({origin}) is below the model's minimum "
                                                    f"{self.engine.min_budget}: no inference")
            return self._skip_budget(outcome, reason)
        self.budget_problem = None
        if not self._accept_stamp(pending.stamp_ns):
            outcome.status, outcome.reason = "out_of_order", "set not newer than the last processed one"
            return outcome
        self._report_wait(pending)
        try:
            outcome.assembled = self.assembler.assemble(pending.stamp_ns, pending.messages)
        except Exception as error:
            if getattr(error, "key", None) not in self.inputs:
                raise
            return self._reject(outcome, error.key, error.reason)
        self._report_assembly(outcome.assembled)
        sample = self.history.clip(outcome.assembled.sample)
        try:
            result, capped = self._infer_with_fallback(sample, budget)
        except InputError as error:
            return self._reject(outcome, self._key_named_in(str(error)), str(error))
        except Exception as error:  # anything else: counted and reported, the caller keeps going
            self.counters.failed += 1
            self.inference_problem = (f"inference failed for the set stamped {pending.stamp_ns / 1e9:.3f} s on "
                                      f"{self.engine.device}: {type(error).__name__}: {error}")
            self.log("error", "worker", self.inference_problem)
            outcome.status, outcome.reason = "failed", self.inference_problem
            return outcome
        outcome.result = result
        outcome.budget_origin += "+oom_cap" if capped else ""
        if not result.ran:  # the engine's own refusal (e.g. a non-integer budget): said, never published
            return self._skip_budget(outcome, result.skipped_reason or "")
        if not finite_result(result):
            self.counters.dropped_non_finite_output += 1
            self.inference_problem = (f"model output is not finite (NaN/Inf) for the set stamped "
                                      f"{pending.stamp_ns / 1e9:.3f} s at budget {result.allocation.budget_requested}"
                                      ": not published")
            self.log("error", "non_finite", self.inference_problem)
            outcome.status, outcome.reason = "non_finite", self.inference_problem
            return outcome
        if self._oom_cap is None:
            self.inference_problem = None
        assembled = outcome.assembled
        outcome.timings = Timings(assembled.decode_ms, assembled.audio_ms, result.timings_ms.get("preprocess", 0.0),
                                  result.timings_ms.get("controller", 0.0) + result.timings_ms.get("model", 0.0))
        self.last_result = result
        self.counters.sets_processed += 1
        return outcome

    def _skip_budget(self, outcome: Outcome, reason: str) -> Outcome:
        self.counters.skipped_budget += 1
        self.budget_problem = reason
        self.log("warning", "budget", reason)
        outcome.status, outcome.reason = "skipped_budget", reason
        return outcome

    def _reject(self, outcome: Outcome, key, reason: str) -> Outcome:
        self.counters.dropped_bad_input += 1
        self._bad_input(self.inputs[key], reason, "skipped")
        outcome.status, outcome.reason, outcome.bad_key = "bad_input", f"{key}: {reason}", key
        return outcome

    def _bad_input(self, state: InputState, reason: str, consequence: str) -> None:
        state.errors += 1
        state.last_error = reason
        self.log("error", f"input:{state.resolved_topic}", f"bad input on {state.resolved_topic}: {reason}; "
                                                          f"{consequence}")

    def _key_named_in(self, text: str):
        return next((key for key in self.inputs if str(key) in text), next(iter(self.inputs)))

    def _accept_stamp(self, stamp_ns: int) -> bool:
        last = self._last_stamp_ns
        if last is not None and stamp_ns <= last:
            if last - stamp_ns <= TIME_JUMP_BACK_S * 1e9:
                self.counters.dropped_out_of_order += 1
                self.log("warning", "out_of_order", f"synchronized set stamped {stamp_ns / 1e9:.3f} s is not newer "
                                                    f"than the last processed {last / 1e9:.3f} s: dropped as out of "
                                                    "order")
                return False
            self.counters.time_jumps += 1
            self.history.reset()
            self.log("info", "time_jump", f"input time jumped back {(last - stamp_ns) / 1e9:.3f} s (bag loop or "
                                          "simulator restart): starting over")
        self._last_stamp_ns = stamp_ns
        return True

    def _report_wait(self, pending: PendingSet) -> None:
        """A set taken before its audio reached the stamp: counted and named per microphone."""
        if not pending.audio_short:
            self.wait_problem = None
            return
        self.counters.audio_waits_expired += 1
        parts = []
        for key, end in pending.audio_short.items():
            state = self.inputs[key]
            state.audio_waits_expired += 1
            state.audio_short_ms = None if end is None else (pending.stamp_ns - end) / 1e6
            parts.append(f"{state.resolved_topic} (" + ("no chunk yet" if end is None else
                                                         f"{state.audio_short_ms:.1f} ms short") + ")")
        self.wait_problem = (f"audio did not reach the set stamped {pending.stamp_ns / 1e9:.3f} s within "
                             f"audio_wait_s={self.audio_wait_s}: processed without it on {', '.join(parts)}")
        self.log("warning", "audio_wait", self.wait_problem)

    def _report_assembly(self, assembled) -> None:
        """Counters, input errors and throttled warnings for what went wrong while assembling one set."""
        for key in assembled.depth_all_invalid:  # used anyway: "no return" everywhere is what ADMN is built for
            state = self.inputs[key]
            self.counters.depth_frames_all_invalid += 1
            state.errors += 1
            state.last_error = "depth frame has no valid pixel (all 0/NaN/Inf/negative)"
            self.log("warning", f"depth_invalid:{state.resolved_topic}",
                     f"{state.resolved_topic}: depth frame has no valid pixel (all 0/NaN/Inf/negative); used as "
                     "'no return' everywhere")
        for key, reason in assembled.rejected.items():
            state = self.inputs[key]
            self.counters.frames_rejected_oversize += 1
            self._bad_input(state, reason, "this modality is treated as missing for the set")
        self.rejected_problem = "; ".join(
            f"{self.inputs[key].resolved_topic}: frame rejected, modality {key[1]} of view {key[0]} treated as "
            f"missing ({reason})" for key, reason in assembled.rejected.items()) or None
        self.counters.audio_samples_zero_filled += assembled.audio_zero_filled
        self.counters.audio_windows_missing += len(assembled.audio_missing)
        texts = []
        if assembled.audio_missing:
            topics = ", ".join(self.inputs[key].resolved_topic for key in assembled.audio_missing)
            texts.append(f"no audio at or before the frame stamp on {topics}: silent window used")
        if assembled.audio_partial:
            topics = ", ".join(f"{self.inputs[key].resolved_topic} ({percent}%)"
                               for key, percent in assembled.audio_partial)
            texts.append(f"audio window mostly zero-filled (chunks missing or too short) on {topics}")
        self.audio_problem = "; ".join(texts) or None
        if texts:
            self.log("warning", "audio_missing", self.audio_problem)

    # ---------------------------------------------------------------------------------------- device faults

    def _infer_with_fallback(self, sample: dict, budget: int):
        """-> (result, capped?). Out of memory: a lower budget, then the CPU (module docstring)."""
        capped, requested = False, budget
        if self._oom_cap is not None:
            if time.monotonic() - self._oom_cap_since >= OOM_CAP_HOLD_S:
                self.log("info", "oom_lift", f"no out-of-memory error for {OOM_CAP_HOLD_S:.0f} s: lifting the "
                                             f"budget cap {self._oom_cap}")
                self._oom_cap = self.inference_problem = None
            elif budget > self._oom_cap:
                budget, capped = self._oom_cap, True
        while True:
            try:
                return self.engine.infer(sample, budget), capped
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                self.counters.oom_errors += 1
                if self.engine.device.type == "cuda":
                    torch.cuda.empty_cache()
                lower = self._lower_budget(budget)
                if lower is not None:
                    self.counters.oom_retries += 1
                    self._oom_cap, self._oom_cap_since = lower, time.monotonic()
                    self.inference_problem = (f"device out of memory on {self.engine.device} at budget {budget}: "
                                              f"retried at {lower}; budget capped at {lower} for "
                                              f"{OOM_CAP_HOLD_S:.0f} s ({type(error).__name__}: {str(error)[:200]})")
                    self.log("error", "oom", self.inference_problem)
                    budget, capped = lower, True
                    continue
                if self.engine.device.type == "cpu":
                    raise
                self._fall_back_to_cpu(error)
                budget, capped = requested, False  # the CPU has its own memory: the full request again

    def _lower_budget(self, budget: int) -> int | None:
        """A budget about halfway down to the minimum (so a few retries reach it), or None at the minimum."""
        budget, low = min(budget, self.engine.max_budget), self.engine.min_budget
        return None if budget <= low else max(low, min(budget - 1, (budget + low) // 2))

    def _fall_back_to_cpu(self, error: BaseException) -> None:
        """Move the engine to the CPU for the rest of the run (out of memory on a GPU even at the minimum budget)."""
        failed_on = self.engine.device
        self.engine.move_to("cpu")
        self._oom_cap = None
        self.counters.device_fallbacks += 1
        self.device_problem = (f"out of memory on {failed_on} even at the minimum budget {self.engine.min_budget}: "
                               f"moved the model to the CPU for the rest of this run ({type(error).__name__}: "
                               f"{str(error)[:200]})")
        self.log("error", "device_fallback", self.device_problem)
