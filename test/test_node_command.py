"""One way to start a node (admn_ros.tools.bringup.node_command) used by every tool, and the ROS names and defaults
defined
once (admn_core.ros_interface) agreeing with the node, its shipped parameter file and the offline evaluator."""

import inspect
from pathlib import Path

import pytest
import yaml
from rclpy.node import Node

from admn_core.ros_interface import (
    ALLOCATION_TOPIC,
    BUDGET_TOPIC,
    COMPRESSED_TRANSPORTS,
    NODE_DEFAULTS,
    POSE_TOPIC,
    output_topic,
    sensor_topic,
)
from admn_ros.bags import live_replay
from admn_ros.tools import bringup, demo, soak
from admn_ros.tools.share import config_file

from model_fixtures import micro_config
from ros_fixtures import ros_context  # noqa: F401 - pytest fixture

PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"


def _ros_arguments(spec: bringup.ProcessSpec) -> tuple[list[str], list[str], dict, dict]:
    """(interpreter part, parameter files, -p overrides, -r remappings) of a node's argv."""
    argv = spec.argv
    start = argv.index("--ros-args")
    flags = list(zip(argv[start + 1::2], argv[start + 2::2], strict=True))
    assert {flag for flag, _ in flags} <= {"--params-file", "-p", "-r"}, argv

    def pairs(wanted):
        return dict(value.split(":=", 1) for flag, value in flags if flag == wanted)

    return argv[:start], [value for flag, value in flags if flag == "--params-file"], pairs("-p"), pairs("-r")


def _commands_of_every_tool() -> dict:
    """Each tool's node command(s), for one set of its own options."""
    bringup_args = bringup.parse_args(["--model", "m.safetensors", "--namespace", "robot1", "--use-sim-time"])
    return {
        "bringup": bringup.build_commands(bringup_args),
        "live_replay": [live_replay.node_spec("m.safetensors", "robot1", parameters={"budget_override": 8})],
        "soak": [soak.node_spec(soak.SoakConfig(budget=6, device="cuda"), Path("/b/tiny.safetensors"), "/soak_1")],
        "demo": [demo.thermal_command(Path("/p/profile.yaml"), 40.0)],
    }


def test_every_tool_starts_its_nodes_with_the_shipped_file_its_options_and_the_shipped_dds_profile(monkeypatch):
    monkeypatch.delenv(PROFILE_VARIABLE, raising=False)
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    model = str(Path("m.safetensors").resolve())
    expected = {  # tool -> [(node, overrides, remappings)]
        "bringup": [("admn_node", {"model": model, "device": "cpu", "frame_id": "map", "use_sim_time": "true"},
                     {BUDGET_TOPIC: BUDGET_TOPIC, "__ns": "/robot1"}),
                    ("thermal_monitor", {"use_sim_time": "true"}, {BUDGET_TOPIC: BUDGET_TOPIC, "__ns": "/robot1"})],
        "live_replay": [("admn_node", {"model": model, "use_sim_time": "true", "budget_override": "8"},
                         {"__ns": "/robot1"})],
        "soak": [("admn_node", {"model": "/b/tiny.safetensors", "device": "cuda", "input_qos": "sensor_data",
                                "budget_override": "6", "sync_queue_size": "10", "torch_threads": "0"},
                  {"__ns": "/soak_1"})],
        "demo": [("thermal_monitor", {"source": "scripted", "profile_file": "/p/profile.yaml",
                                      "sample_period_s": "0.25", "publish_period_s": "1.0",
                                      "recover_interval_s": "1.6", "use_sim_time": "true"}, {})],
    }
    for tool, specs in _commands_of_every_tool().items():
        assert len(specs) == len(expected[tool]), tool
        for spec, (name, overrides, remaps) in zip(specs, expected[tool], strict=True):
            interpreter, files, given, remapped = _ros_arguments(spec)
            assert interpreter[1:] == ["-m", f"admn_ros.nodes.{name}"], tool
            assert files == [str(config_file(f"{name}.yaml"))], f"{tool} does not apply {name}'s shipped file"
            assert given == overrides, tool
            assert remapped == {"__node": name, **remaps}, tool
            assert spec.env_overrides[PROFILE_VARIABLE] == str(config_file("fastdds_large_data.xml")), tool
    assert _commands_of_every_tool()["live_replay"][0].env_overrides["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"


def test_every_tool_keeps_a_users_dds_profile_and_discovery_range(monkeypatch, tmp_path):
    user_profile = str(tmp_path / "my_profile.xml")
    monkeypatch.setenv(PROFILE_VARIABLE, user_profile)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET")
    commands = _commands_of_every_tool()
    for tool, specs in commands.items():
        assert {spec.env_overrides[PROFILE_VARIABLE] for spec in specs} == {user_profile}, tool
    assert commands["live_replay"][0].env_overrides["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"


def test_node_command_takes_a_users_parameter_file_and_refuses_unknown_nodes_and_missing_files(tmp_path):
    own = tmp_path / "my_thermal.yaml"
    own.write_text("/**/thermal_monitor:\n  ros__parameters:\n    hysteresis_c: 2.0\n")
    _, files, _, _ = _ros_arguments(bringup.node_command("thermal_monitor", own))
    assert files == [str(own)]
    with pytest.raises(FileNotFoundError, match=r"parameter file not found: .*nope\.yaml"):
        bringup.node_command("admn_node", tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="unknown node 'camera_driver'; expected one of admn_node, thermal_monitor"):
        bringup.node_command("camera_driver")
    assert bringup.main(["--model", "m.safetensors", "--config", str(tmp_path / "nope.yaml"), "--dry-run"]) == 2


def test_the_node_subscribes_to_the_sensor_topics_named_once():
    from admn_ros.msgs.frame_assembly import input_topics

    config = micro_config(views=("node_1", "node_2"))
    for camera, depth in (("raw", "raw"), ("compressed", "compressedDepth")):
        topics = {topic.key: topic.topic for topic in input_topics(config, camera, depth)}
        transports = {"rgb": camera, "depth": depth, "audio": "raw"}
        assert topics == {(view, spec.name): sensor_topic(spec.kind, view, transports[spec.kind])
                          for spec in config.modalities for view in spec.views}
    assert set(COMPRESSED_TRANSPORTS.values()) == {"compressed", "compressedDepth"}
    with pytest.raises(ValueError, match="unknown sensor kind 'lidar'"):
        sensor_topic("lidar", "node_1")


@pytest.mark.parametrize("namespace", ["", "robot1"])
def test_output_topic_is_the_name_a_node_publishes_its_private_topic_under(ros_context, namespace):  # noqa: F811
    from diagnostic_msgs.msg import DiagnosticArray

    node = Node("admn_node", namespace=namespace, context=ros_context)
    try:
        for private in (POSE_TOPIC, ALLOCATION_TOPIC):
            publisher = node.create_publisher(DiagnosticArray, private, 1)
            assert output_topic(private, namespace) == publisher.topic_name
    finally:
        node.destroy_node()


def test_node_defaults_are_what_the_node_declares_ships_and_the_evaluator_uses():
    from admn_core.stream.pipeline import DEFAULT_AUDIO_WAIT_S
    from admn_ros.bags.replay_eval import BudgetSource, evaluate_bag
    from admn_ros.nodes.admn_node import PARAMETERS

    defaults = vars(NODE_DEFAULTS)
    shipped = next(iter(yaml.safe_load(config_file("admn_node.yaml").read_text()).values()))["ros__parameters"]
    assert {name: shipped[name] for name in defaults} == defaults
    assert {name: PARAMETERS[name][0] for name in defaults} == defaults
    evaluator = inspect.signature(evaluate_bag).parameters
    assert {name: evaluator[name].default for name in ("sync_slop", "sync_queue_size", "audio_wait_s")} == {
        name: defaults[name] for name in ("sync_slop", "sync_queue_size", "audio_wait_s")}
    assert BudgetSource.parse("bag").default == NODE_DEFAULTS.default_budget
    assert DEFAULT_AUDIO_WAIT_S == NODE_DEFAULTS.audio_wait_s
