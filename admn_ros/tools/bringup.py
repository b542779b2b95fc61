"""admn_bringup: the pip-only twin of launch/gdtm_tracker.launch.py, for machines without `ros2 launch`; and
`node_command()`, the one way every tool (bring-up, live replay, the soak, the demo) starts a node process.

    admn_bringup [--model tiny.safetensors] [--device cuda] [--config admn_node.yaml] [--thermal-config t.yaml]
                 [--use-sim-time] [--namespace robot1] [--frame-id map] [--budget-topic /compute_budget] [--dry-run]

Starts admn_node and thermal_monitor as child processes (`python -m admn_ros.<node> --ros-args ...`) with the same
parameter files, the same overrides (model, device, frame_id, use_sim_time), the same budget-topic remapping and the
same FASTDDS_DEFAULT_PROFILES_FILE (a user's value kept, else the shipped profile) as the launch file.
Ctrl-C / SIGTERM are forwarded as SIGINT (the signal rclpy shuts down cleanly on; ros2 launch does the same);
children that do not exit within the grace period are terminated, then killed. If one node exits, the other is
stopped too and bring-up exits with the first failing code. `--dry-run` prints the commands instead.

Config files and the default model (the shipped reference model, models/reference_tiny_rgbd.safetensors) are looked
up where the launch file finds them: the package share directory (admn_ros.tools.share).

`node_command(name, params_file, overrides, namespace, remaps, env)` -> `ProcessSpec` (argv, environment) applies the
launch file's rules to one node: its shipped parameter file (or the caller's), then the overrides (`-p`, which rcl
ranks above the file), the remappings, the namespace, and the Fast DDS profile rule; `start_process(spec)` runs it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from admn_core.ros_interface import BUDGET_TOPIC
from admn_ros.tools.processes import escalate
from admn_ros.tools.share import config_file, reference_model

FASTDDS_PROFILE = "fastdds_large_data.xml"
FASTDDS_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
NODE_MODULES = {"admn_node": "admn_ros.nodes.admn_node", "thermal_monitor": "admn_ros.nodes.thermal_monitor"}
PARAMETER_FILES = {"admn_node": "admn_node.yaml", "thermal_monitor": "thermal_monitor.yaml"}  # shipped, in config/
GRACE_S = 10.0


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    env_overrides: dict[str, str] = field(default_factory=dict)

    def shell(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env_overrides.items())
        return f"{env} {shlex.join(self.argv)}".strip()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="admn_bringup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="path of the .safetensors model bundle (default: the shipped reference model, "
                                         "share/admn_ros/models/reference_tiny_rgbd.safetensors)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    parser.add_argument("--config", help="admn_node parameters YAML (default: the shipped config/admn_node.yaml)")
    parser.add_argument("--thermal-config",
                        help="thermal_monitor parameters YAML (default: the shipped config/thermal_monitor.yaml)")
    parser.add_argument("--use-sim-time", action="store_true", help="follow /clock (bag replay, simulation)")
    parser.add_argument("--namespace", default="", help="namespace for both nodes and their topics")
    parser.add_argument("--frame-id", default="map", help="frame of the pose output (REP-105; default map)")
    parser.add_argument("--budget-topic", default=BUDGET_TOPIC,
                        help="budget topic of both nodes (default: compute_budget in the namespace; /compute_budget "
                             "shares one budget across namespaces)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    return parser.parse_args(argv)


def fastdds_profile_environment() -> dict[str, str]:
    """The launch file's rule: a user's FASTDDS_DEFAULT_PROFILES_FILE is kept, else the shipped large-data profile."""
    return {FASTDDS_PROFILE_VARIABLE: os.environ.get(FASTDDS_PROFILE_VARIABLE) or str(config_file(FASTDDS_PROFILE))}


def ros_argument(value) -> str:
    """A `-p name:=value` value as rcl parses it (YAML): booleans lower-case, paths and numbers as text."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def node_command(name: str, params_file: str | Path | None = None, overrides: dict | None = None,
                 namespace: str = "", remaps: dict | None = None, env: dict | None = None,
                 python: str = sys.executable) -> ProcessSpec:
    """How node `name` (admn_node | thermal_monitor) is started outside the launch file, with the launch file's rules.

    `params_file`: None = the shipped config/<name>.yaml. `overrides`: parameter values ranked above the file.
    `remaps`: {from: to} topic remappings. `env`: variables set on top of the Fast DDS profile rule.
    Raises FileNotFoundError for a parameter file or shipped profile that does not exist."""
    if name not in NODE_MODULES:
        raise ValueError(f"unknown node {name!r}; expected one of {', '.join(NODE_MODULES)}")
    # Absolute: the log then shows a path users can check whatever the node's working directory.
    path = Path(params_file).expanduser().resolve() if params_file else config_file(PARAMETER_FILES[name])
    if not path.is_file():
        raise FileNotFoundError(f"parameter file not found: {path}")
    argv = [python, "-m", NODE_MODULES[name], "--ros-args", "-r", f"__node:={name}", "--params-file", str(path)]
    for parameter, value in (overrides or {}).items():
        argv += ["-p", f"{parameter}:={ros_argument(value)}"]
    for source, target in (remaps or {}).items():
        argv += ["-r", f"{source}:={target}"]
    if namespace.strip("/"):
        argv += ["-r", f"__ns:=/{namespace.strip('/')}"]
    return ProcessSpec(name, argv, {**fastdds_profile_environment(), **(env or {})})


def start_process(spec: ProcessSpec, log_path: str | Path | None = None) -> subprocess.Popen:
    """Start `spec` with its environment over ours, output appended to `log_path` (else our own stdout/stderr).

    Own session: a terminal Ctrl-C reaches only the parent, which stops its children with exactly one SIGINT."""
    output = open(log_path, "ab") if log_path else None
    try:
        return subprocess.Popen(spec.argv, env={**os.environ, **spec.env_overrides}, stdout=output,
                                stderr=subprocess.STDOUT if output else None, start_new_session=True)
    finally:
        if output is not None:
            output.close()


def default_model() -> Path:
    """The shipped reference model; FileNotFoundError naming the places searched and the way out."""
    try:
        return reference_model()
    except FileNotFoundError as error:
        raise FileNotFoundError(f"no model given and {error}; pass --model PATH") from error


def build_commands(args: argparse.Namespace, python: str = sys.executable) -> list[ProcessSpec]:
    common = {"namespace": args.namespace, "remaps": {BUDGET_TOPIC: args.budget_topic}, "python": python}
    model = Path(args.model).expanduser().resolve() if args.model else default_model()
    return [node_command("admn_node", args.config, {"model": model, "device": args.device, "frame_id": args.frame_id,
                                                    "use_sim_time": args.use_sim_time}, **common),
            node_command("thermal_monitor", args.thermal_config, {"use_sim_time": args.use_sim_time}, **common)]


def _stop(processes: dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + GRACE_S
    for name, process in processes.items():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"admn_bringup: {name} ignored SIGINT for {GRACE_S:.0f} s; terminating", file=sys.stderr)
            escalate(process)


def run(specs: list[ProcessSpec]) -> int:
    stop_requested = []

    def request_stop(signum, _frame):
        stop_requested.append(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes: dict[str, subprocess.Popen] = {}
    exit_code = 0
    try:
        for spec in specs:
            print(f"admn_bringup: starting {spec.name}: {spec.shell()}", flush=True)
            # Own session: a terminal Ctrl-C reaches only us, and we forward exactly one SIGINT.
            processes[spec.name] = start_process(spec)
        while not stop_requested:
            exited = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
            if exited:
                name, code = next(iter(exited.items()))
                print(f"admn_bringup: {name} exited with code {code}; stopping the others", file=sys.stderr)
                exit_code = code or 1
                break
            time.sleep(0.1)
    finally:
        _stop(processes)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = {name: p.returncode for name, p in processes.items() if p.returncode not in (0, -signal.SIGINT)}
    if failed and not exit_code:
        print(f"admn_bringup: exit codes after shutdown: {failed}", file=sys.stderr)
        exit_code = 1
    return exit_code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        specs = build_commands(args)
    except FileNotFoundError as error:
        print(f"admn_bringup: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        for spec in specs:
            print(spec.shell())
        return 0
    return run(specs)


if __name__ == "__main__":
    sys.exit(main())
