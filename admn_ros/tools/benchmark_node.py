"""admn_node_benchmark: admn_node's overhead per synchronized set vs the model's own time, on the CPU.

    admn_node_benchmark [--preset tiny] [--model bundle.safetensors] [--budget 12] [--repeats 30] [--json out.json]
                        [--no-fast-path]

What is measured, in-process, with real sensor_msgs messages through the node's real code paths:
* sync: what the subscription callbacks do (camera + depth of every view into the frame pipeline's approximate-time
  synchronizer, one 512-sample audio chunk per view into its ring buffer, decoded on arrival) and taking the ready
  set.
* decode (Image -> numpy, colour order, depth checks), audio window, engine preprocess (resize, normalise,
  spectrogram: done by admn_core, but paid per set), publish (pose + allocation, with a matched subscriber).
* model: controller + backbones + fusion + head (the engine's own timings).
Node overhead = sync + decode + audio + preprocess + publish. Targets: <= 3 ms and <= 5 % of the model time.

Not included: DDS transport. Inside one process it cannot be separated from scheduling, so the messages are handed
to the subscription callbacks directly. rclpy's deserialization of a received message (paid on the executor thread
before the callback) is measured separately with rclpy.serialization and printed on its own line.
The worker thread is stopped and the pipeline's `process()` is called on this thread, so no thread hand-off noise is
counted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_MS = 3.0
TARGET_FRACTION = 0.05
HEIGHT, WIDTH = 480, 640
AUDIO_CHUNK = 512
FRAME_PERIOD_NS = 33_333_333


def _percentiles(values) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 90))


def _messages(node, stamp_ns: int, rng) -> tuple[list, list]:
    """One set of real messages: (key, message) pairs of the audio inputs, then of the camera/depth inputs."""
    from admn_ros.msgs.audio import numpy_to_audio_image
    from admn_ros.msgs.conversions import ns_to_stamp, numpy_to_image

    stamp = ns_to_stamp(stamp_ns)
    audio, frames = [], []
    for key, state in node.inputs.items():
        if state.kind == "audio":
            chunk = (0.1 * rng.standard_normal(AUDIO_CHUNK)).astype(np.float32)
            audio.append((key, numpy_to_audio_image(chunk, stamp=stamp)))
        elif state.kind == "rgb":
            image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            frames.append((key, numpy_to_image(image, "rgb8", stamp)))
        else:
            image = rng.integers(500, 6000, (HEIGHT, WIDTH), dtype=np.uint16)
            frames.append((key, numpy_to_image(image, "16UC1", stamp)))
    return audio, frames


def _deserialize_ms(frames, audio, repeats: int = 10) -> float:
    from rclpy.serialization import deserialize_message, serialize_message

    payloads = [(serialize_message(m), type(m)) for _, m in frames + audio]
    started = time.perf_counter()
    for _ in range(repeats):
        for data, msg_type in payloads:
            deserialize_message(data, msg_type)
    return 1e3 * (time.perf_counter() - started) / repeats


def measure(model_path: str, budget: int, repeats: int, warmup: int = 5, fast_path: bool = True) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from admn_core.ros_interface import ALLOCATION_TOPIC, POSE_TOPIC, output_topic
    from admn_ros.nodes.admn_node import AdmnNode

    context = Context()
    rclpy.init(args=[], context=context)
    namespace = f"/admn_benchmark_{os.getpid()}"
    node = AdmnNode(context=context, namespace=namespace,
                    parameter_overrides=[Parameter("model", value=model_path),
                                         Parameter("budget_override", value=budget),
                                         Parameter("fast_path", value=fast_path)])
    listener = Node("admn_benchmark_listener", context=context, namespace=namespace)
    received = []
    listener.create_subscription(PoseWithCovarianceStamped, output_topic(POSE_TOPIC, namespace), received.append, 10)
    listener.create_subscription(DiagnosticArray, output_topic(ALLOCATION_TOPIC, namespace), received.append, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + 5.0
        while node.allocation_publisher.get_subscription_count() < 1 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        node._stop.set()  # this thread calls process() itself
        node._worker.join()
        rng = np.random.default_rng(0)
        rows = []
        deserialize_ms = None
        for index in range(warmup + repeats):
            audio, frames = _messages(node, 1_000_000_000_000 + index * FRAME_PERIOD_NS, rng)
            if deserialize_ms is None:
                deserialize_ms = _deserialize_ms(frames, audio)
            started = time.perf_counter()
            for key, msg in audio:
                node.pipeline.add_audio(key, msg)
            for key, msg in frames:
                node.pipeline.add_frame(key, msg)
            pending = node.pipeline.wait_ready(0.0)  # the audio reaches the set's stamp: ready at once
            sync_ms = 1e3 * (time.perf_counter() - started)
            if pending is None:
                raise RuntimeError("the synchronizer emitted no ready set for identical stamps")
            outcome = node.pipeline.process(pending)
            if not outcome.ok:
                raise RuntimeError(f"set not processed: {outcome.status} ({outcome.reason})")
            node._publish(outcome, pending.formed)
            timings = outcome.timings
            if index >= warmup:
                rows.append({"sync_ms": sync_ms, "decode_ms": timings.decode_ms, "audio_ms": timings.audio_ms,
                             "preprocess_ms": timings.preprocess_ms, "publish_ms": timings.publish_ms,
                             "model_ms": timings.model_ms})
            executor.spin_once(timeout_sec=0)
        views = len({view for view, _ in node.inputs})
        return {"model": str(model_path), "config": node.config.name, "budget": budget, "views": views,
                "image": f"{WIDTH}x{HEIGHT}", "device": node.device, "repeats": repeats, "rows": rows,
                "deserialize_ms_per_set": deserialize_ms,
                "allocation_source": node.last_result.allocation.source,
                "inference_path": "eager" if node.engine.fast is None else "fast",
                "warmup_ms": node.warmup_ms, "warmup_budgets": node.warmup_budgets}
    finally:
        node.destroy_node()
        listener.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown(context=context)


def summarize(result: dict) -> dict:
    rows = result["rows"]
    stages = ("sync_ms", "decode_ms", "audio_ms", "preprocess_ms", "publish_ms", "model_ms")
    summary = {stage: _percentiles([r[stage] for r in rows]) for stage in stages}
    overhead = [r["sync_ms"] + r["decode_ms"] + r["audio_ms"] + r["preprocess_ms"] + r["publish_ms"] for r in rows]
    own = [o - r["preprocess_ms"] for o, r in zip(overhead, rows, strict=True)]
    summary["overhead_ms"] = _percentiles(overhead)
    summary["overhead_excluding_preprocess_ms"] = _percentiles(own)
    summary["overhead_fraction_of_model"] = summary["overhead_ms"][0] / summary["model_ms"][0]
    summary["own_fraction_of_model"] = summary["overhead_excluding_preprocess_ms"][0] / summary["model_ms"][0]
    return summary


def format_report(result: dict, summary: dict) -> str:
    def line(label, key):
        p50, p90 = summary[key]
        return f"  {label:<50} {p50:>8.3f} {p90:>8.3f}"

    overhead = summary["overhead_ms"][0]
    fraction = summary["overhead_fraction_of_model"]
    verdict = lambda ok: "OK" if ok else "MISSED"  # noqa: E731
    return "\n".join([
        f"admn_node overhead per synchronized set: {result['views']} views x (camera {result['image']} rgb8 + depth "
        f"{result['image']} 16UC1 + {AUDIO_CHUNK}-sample audio), model {result['config']}, budget {result['budget']} "
        f"({result['allocation_source']}), {result['device']}, {result['inference_path']} path, "
        f"{result['repeats']} sets; start-up warm-up {result['warmup_ms']:.0f} ms (budgets {result['warmup_budgets']})",
        f"  {'stage':<50} {'p50 ms':>8} {'p90 ms':>8}",
        line("sync (subscription callbacks, synchronizer)", "sync_ms"),
        line("decode (Image -> numpy, depth checks)", "decode_ms"),
        line("audio window", "audio_ms"),
        line("engine preprocess (resize, normalise, mel)", "preprocess_ms"),
        line("publish (pose + allocation)", "publish_ms"),
        line("NODE OVERHEAD", "overhead_ms"),
        line("  of which node code (without engine preprocess)", "overhead_excluding_preprocess_ms"),
        line("MODEL (controller + backbones + fusion + head)", "model_ms"),
        f"  node overhead {overhead:.3f} ms (target <= {TARGET_MS} ms: {verdict(overhead <= TARGET_MS)}); "
        f"{100 * fraction:.1f} % of the model time (target <= {100 * TARGET_FRACTION:.0f} %: "
        f"{verdict(fraction <= TARGET_FRACTION)})",
        f"  without engine preprocess: {summary['overhead_excluding_preprocess_ms'][0]:.3f} ms, "
        f"{100 * summary['own_fraction_of_model']:.1f} % of the model time",
        f"  not included: DDS transport; rclpy deserialization of the set's {2 * result['views'] + result['views']} "
        f"messages (executor thread, before the callbacks): {result['deserialize_ms_per_set']:.3f} ms",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="admn_node_benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", help="model preset for a random-weights bundle (default tiny)")
    parser.add_argument("--model", help="an existing bundle instead of a random one")
    parser.add_argument("--budget", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--json", help="also write the raw timings here")
    parser.add_argument("--fast-path", action=argparse.BooleanOptionalAction, default=True,
                        help="the node's fast_path parameter (default on; --no-fast-path: the eager model)")
    args = parser.parse_args(argv)
    # Keep the benchmark's nodes off the robot's network.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="admn_node_benchmark_") as scratch:
        model = args.model
        if model is None:
            from admn_core.bench import random_bundle
            from admn_core.bundle import save_bundle
            from admn_core.presets import preset_config

            model = str(save_bundle(Path(scratch) / f"{args.preset}.safetensors",
                                    random_bundle(preset_config(args.preset), [6, 8, 12, 16])))
        result = measure(model, args.budget, args.repeats, fast_path=args.fast_path)
    summary = summarize(result)
    print(format_report(result, summary))
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
