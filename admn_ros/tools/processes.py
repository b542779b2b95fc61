"""Process plumbing shared by the nodes' entry points, the bring-up, live replay and the soak driver."""

from __future__ import annotations

import gc
import signal
import subprocess


def freeze_start_up_objects() -> int:
    """Collect once, then move every object alive now (imports, the model, the fast path's warm-up exports) out of
    the cyclic collector's reach; returns how many were frozen.

    A started admn_node holds hundreds of thousands of tracked objects, nearly all for its whole life; a full
    collection would scan them all, a stall long enough to drop sets mid-run. Frozen, a full collection scans only
    what is new since start-up."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def stop_process(process: subprocess.Popen, grace_s: float = 10.0, terminate_grace_s: float = 3.0) -> int | None:
    """SIGINT (what `ros2 launch` sends; SIGTERM would orphan nodes), then SIGTERM, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            escalate(process, terminate_grace_s)
    return process.returncode


def escalate(process: subprocess.Popen, terminate_grace_s: float = 3.0) -> None:
    """A process that ignored SIGINT: SIGTERM, and SIGKILL if that is ignored too."""
    process.terminate()
    try:
        process.wait(timeout=terminate_grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
