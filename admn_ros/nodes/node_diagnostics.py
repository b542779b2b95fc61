"""admn_node's /diagnostics: the inference status, the inputs status, silent-input hints and synchronizer drops.

Functions of the node (`admn_ros.nodes.admn_node.AdmnNode`): they read its pipeline, settings and subscriptions."""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.qos import ReliabilityPolicy

from admn_ros.msgs.sync import InputStats, SyncStats

NODE_NAME = "admn_node"
DIAGNOSTICS_PERIOD_S = 1.0
INFERENCE, INPUTS = f"{NODE_NAME}: inference", f"{NODE_NAME}: inputs"
TIMING_FIELDS = ("decode_ms", "audio_ms", "preprocess_ms", "model_ms", "publish_ms", "end_to_end_ms")


def percentiles(values, quantiles=(50, 90)) -> list[float]:
    if not values:
        return [float("nan")] * len(quantiles)
    return [float(v) for v in np.percentile(np.asarray(values, dtype=np.float64), quantiles)]


def latency_summary(timings) -> dict[str, list[float]]:
    """{field: [p50, p90, p99]} over pipeline Timings."""
    return {name: percentiles([getattr(t, name) for t in timings], (50, 90, 99)) for name in TIMING_FIELDS}


def sync_stats(node) -> SyncStats:
    pipeline = node.pipeline
    if pipeline.synchronizer is not None:
        return pipeline.synchronizer.stats()
    state = pipeline.inputs[pipeline.frame_keys[0]]
    return SyncStats("single input", sets_emitted=pipeline.counters.sets_received,
                     inputs=[InputStats(state.resolved_topic, received=state.received,
                                        last_arrival_monotonic=state.last_arrival)])


def input_problems(node, now: float) -> list[str]:
    """Silent inputs, sets that never synchronize and synchronizer drops (each also logged, throttled)."""
    return _silent_inputs(node, now) + _sync_drops(node)


def _silent_inputs(node, now: float) -> list[str]:
    problems = []
    limit = node.settings.no_input_warning_s
    for state in node.inputs.values():
        since = state.last_arrival if state.last_arrival is not None else node.started
        if now - since < limit:
            continue
        problem = f"no message on {state.resolved_topic} for {now - since:.1f} s: {_silence_hint(node, state, now)}"
        problems.append(problem)
        node.throttled("warning", f"silent:{state.resolved_topic}", problem)
    if not problems and node.pipeline.synchronizer is not None:
        last_set = node.pipeline.last_set_time if node.pipeline.last_set_time is not None else node.started
        if now - last_set >= limit:
            stamps = ", ".join(f"{s.topic}={s.last_stamp_ns / 1e9:.3f}" for s in sync_stats(node).inputs
                               if s.last_stamp_ns is not None)
            problem = (f"inputs arrive but no synchronized set for {now - last_set:.1f} s: camera/depth stamps "
                       f"differ by more than sync_slop={node.settings.sync_slop} s (last stamps: {stamps})")
            problems.append(problem)
            node.throttled("warning", "sync_silent", problem)
    return problems


def _silence_hint(node, state, now: float) -> str:
    msg_type, reliability = node.subscribed[state.key]
    expected = f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"
    try:
        publishers = node.get_publishers_info_by_topic(state.resolved_topic)
    except Exception:  # graph queries can fail during shutdown; the hint is best-effort
        publishers = []
    if not publishers:
        return ("no publisher on this topic; check the name, namespace and remapping "
                "(camera_transport/depth_transport/audio_msg_type select the topic and type)")
    types = sorted({p.topic_type for p in publishers})
    if expected not in types:
        return (f"publishers offer {', '.join(types)} but the node subscribes {expected}; "
                "set camera_transport / depth_transport / audio_msg_type to match")
    if reliability == ReliabilityPolicy.RELIABLE and any(
            p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers):
        return ("QoS mismatch: the publisher is BEST_EFFORT but the subscription is RELIABLE (incompatible: "
                "nothing is delivered); set input_qos:=sensor_data (or fix the qos_overrides parameter)")
    if node.executor_late is not None and now - node.executor_late[0] < node.settings.no_input_warning_s:
        return (f"the node itself was busy: its {DIAGNOSTICS_PERIOD_S:.0f} s diagnostics timer ran "
                f"{node.executor_late[1]:.1f} s late, so arrived messages waited in its queues "
                f"({node.counters.budget_messages} compute_budget callbacks so far; a budget publisher flooding?)")
    return ("a compatible publisher exists but nothing arrives: large images over best-effort need the Fast DDS "
            "profile in EVERY process (FASTDDS_DEFAULT_PROFILES_FILE=<share>/admn_ros/config/"
            "fastdds_large_data.xml, set by the launch file and admn_bringup) or input_qos:=reliable")


def _sync_drops(node) -> list[str]:
    """Per topic, out-of-order or duplicate stamps the synchronizer saw since the last check."""
    problems = []
    for stats in sync_stats(node).inputs:
        disorder = (stats.out_of_order or 0, stats.duplicates or 0)
        previous = node.last_sync_counts.get(stats.topic, (0, 0))
        node.last_sync_counts[stats.topic] = disorder
        if disorder[0] <= previous[0] and disorder[1] <= previous[1]:
            continue
        state = next((s for s in node.inputs.values() if s.topic == stats.topic), None)
        topic = state.resolved_topic if state else stats.topic
        reason = (f"{disorder[0] - previous[0]} out-of-order and {disorder[1] - previous[1]} duplicate "
                  "stamp(s) arrived at the synchronizer")
        if state is not None:
            # A late arrival is kept and may still match (message_filters' policy), but a stream out of order is a
            # fault of its publisher worth counting, as a duplicate is.
            state.errors += disorder[0] - previous[0] + disorder[1] - previous[1]
            state.last_error = reason
        problems.append(f"{topic}: {reason}")
        node.throttled("warning", f"disorder:{topic}", f"{topic}: {reason}")
    return problems


def inference_status(node) -> DiagnosticStatus:
    pipeline, engine = node.pipeline, node.engine
    budget, origin = node.current_budget()
    status = DiagnosticStatus(name=INFERENCE, hardware_id=str(node.model_path))
    typos = [text for level, text in node.parameter_problems if level == "error"]
    problem = node.device_problem or pipeline.inference_problem or "; ".join(typos)
    if problem:
        status.level, status.message = DiagnosticStatus.ERROR, problem
    elif pipeline.budget_problem:
        status.level, status.message = DiagnosticStatus.WARN, pipeline.budget_problem
    else:
        status.level, status.message = DiagnosticStatus.OK, f"budget {budget} ({origin})"
    pairs = [("model", node.config.name), ("device", node.device), ("precision", node.param("precision")),
             ("inference_path", "eager" if engine.fast is None else "fast"),
             ("budget", str(budget)), ("budget_origin", origin),
             ("budget_min", str(engine.min_budget)), ("budget_max", str(engine.max_budget)),
             ("trained_budgets", ",".join(map(str, engine.trained_budgets)))]
    if node.last_result is not None:
        allocation = node.last_result.allocation
        pairs += [("allocation_source", allocation.source), ("budget_used", str(allocation.budget_used))]
        pairs += [(f"active_blocks.{name}", ",".join(map(str, blocks)))
                  for name, blocks in allocation.active_blocks().items()]
    latency = latency_summary(node.recent_timings())
    for name in ("model_ms", "preprocess_ms", "end_to_end_ms"):
        p50, p90, p99 = latency[name]
        pairs += [(f"{name}_p50", f"{p50:.2f}"), (f"{name}_p90", f"{p90:.2f}"), (f"{name}_p99", f"{p99:.2f}")]
    pairs += [(name, str(value)) for name, value in node.counters.__dict__.items()]
    pairs += [("oom_budget_cap", "none" if pipeline.oom_cap is None else str(pipeline.oom_cap)),
              ("pending_sets", str(pipeline.pending())),
              ("warmup_ms", f"{node.warmup_ms:.1f}"), ("warmup_budgets", ",".join(map(str, node.warmup_budgets))),
              ("warmup_problem", node.warmup_problem or "")]
    pairs += [(f"parameter_problem.{index}", text) for index, (_, text) in enumerate(node.parameter_problems)]
    pairs.append(("qoi_estimate", "unavailable (the engine does not expose controller QoI)"))
    status.values = [KeyValue(key=k, value=v) for k, v in pairs]
    return status


def inputs_status(node, now: float, problems: list[str]) -> DiagnosticStatus:
    pipeline = node.pipeline
    status = DiagnosticStatus(name=INPUTS, hardware_id=node.param("input_qos"))
    current = (pipeline.wait_problem, pipeline.audio_problem, pipeline.rejected_problem)
    problems = [*problems, *(text for text in current if text)]
    problems += [f"{state.resolved_topic}: {state.rate_problem}" for state in node.inputs.values()
                 if state.rate_problem]
    status.level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
    status.message = "; ".join(problems) if problems else "inputs arriving"
    stats = sync_stats(node)
    pairs = stats.as_key_values(now) + [(f"{s.topic}.queued", str(s.queued)) for s in stats.inputs]
    for state in node.inputs.values():
        age = "never" if state.last_arrival is None else f"{now - state.last_arrival:.3f}"
        pairs += [(f"{state.resolved_topic}.messages", str(state.received)),
                  (f"{state.resolved_topic}.last_arrival_s_ago", age),
                  (f"{state.resolved_topic}.errors", str(state.errors)),
                  (f"{state.resolved_topic}.last_error", state.last_error)]
    for key, ring in pipeline.assembler.rings.items():
        state = node.inputs[key]
        short = "none" if state.audio_short_ms is None else f"{state.audio_short_ms:.1f}"
        pairs += [(f"{state.resolved_topic}.chunks_buffered", str(len(ring))),
                  (f"{state.resolved_topic}.chunks_rejected", str(ring.rejected)),
                  (f"{state.resolved_topic}.audio_waits_expired", str(state.audio_waits_expired)),
                  (f"{state.resolved_topic}.audio_short_ms", short)]
    status.values = [KeyValue(key=k, value=v) for k, v in pairs]
    return status
