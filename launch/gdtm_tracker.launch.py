"""GDTM tracker: admn_node (perception) + thermal_monitor (/compute_budget), parameters from config/*.yaml.

    ros2 launch admn_ros gdtm_tracker.launch.py [model:=/abs/path/tiny.safetensors] [device:=cuda] \
        [config:=my_admn_node.yaml] [thermal_config:=my_thermal.yaml] [use_sim_time:=true] [namespace:=robot1] \
        [frame_id:=map] [budget_topic:=/compute_budget]

Without ros2 launch (pip-only install), `admn_bringup` starts the same nodes from the same files with the same
arguments (admn_ros/tools/bringup.py; test/test_launch_files.py keeps the two in step).

Unless FASTDDS_DEFAULT_PROFILES_FILE is already set (a user's profile is kept), every process gets the shipped
config/fastdds_large_data.xml: with Fast DDS's default 512 KB shared-memory segment a best-effort subscriber receives
almost no VGA images from another process (config/fastdds_large_data.xml explains). Camera drivers started outside
this launch file need the same variable.
`model` defaults to the shipped reference model, share/admn_ros/models/reference_tiny_rgbd.safetensors.
The `model`, `device`, `frame_id` (REP-105: `map` by default) and `use_sim_time` arguments override the values in
the YAML files. The budget topic is `compute_budget` relative to the namespace (`/robot1/compute_budget` with
`namespace:=robot1`); `budget_topic:=/compute_budget` remaps both nodes onto one budget shared across namespaces.
"""

# ruff: noqa: I001 - ruff takes `launch` (the ROS package) for this repository's launch/ folder
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from admn_ros.tools.share import REFERENCE_MODEL

PACKAGE = "admn_ros"
FASTDDS_PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
BUDGET_TOPIC = "compute_budget"


def generate_launch_description():
    share_dir = get_package_share_directory(PACKAGE)
    config_dir = os.path.join(share_dir, "config")
    model = LaunchConfiguration("model")
    device = LaunchConfiguration("device")
    config = LaunchConfiguration("config")
    thermal_config = LaunchConfiguration("thermal_config")
    use_sim_time = LaunchConfiguration("use_sim_time")
    namespace = LaunchConfiguration("namespace")
    frame_id = LaunchConfiguration("frame_id")
    budget_topic = LaunchConfiguration("budget_topic")
    sim_time = ParameterValue(use_sim_time, value_type=bool)

    return LaunchDescription([
        DeclareLaunchArgument("model", default_value=os.path.join(share_dir, "models", REFERENCE_MODEL),
                              description="path of the .safetensors model bundle (default: the shipped reference "
                                          "model)"),
        DeclareLaunchArgument("device", default_value="cpu", description="cpu | cuda | cuda:N"),
        DeclareLaunchArgument("config", default_value=os.path.join(config_dir, "admn_node.yaml"),
                              description="admn_node parameters YAML"),
        DeclareLaunchArgument("thermal_config", default_value=os.path.join(config_dir, "thermal_monitor.yaml"),
                              description="thermal_monitor parameters YAML"),
        DeclareLaunchArgument("use_sim_time", default_value="false", choices=["true", "false"],
                              description="follow /clock (bag replay, simulation)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace for both nodes and their topics"),
        DeclareLaunchArgument("frame_id", default_value="map", description="frame of the pose output (REP-105)"),
        DeclareLaunchArgument("budget_topic", default_value=BUDGET_TOPIC,
                              description="budget topic of both nodes; absolute (/compute_budget) to share one budget "
                                          "across namespaces"),
        SetEnvironmentVariable(FASTDDS_PROFILE_VARIABLE, EnvironmentVariable(
            FASTDDS_PROFILE_VARIABLE, default_value=os.path.join(config_dir, "fastdds_large_data.xml"))),
        Node(
            package=PACKAGE,
            executable="admn_node",
            name="admn_node",
            namespace=namespace,
            output="screen",
            emulate_tty=True,
            parameters=[
                config,
                {
                    "model": ParameterValue(model, value_type=str),
                    "device": ParameterValue(device, value_type=str),
                    "frame_id": ParameterValue(frame_id, value_type=str),
                    "use_sim_time": sim_time,
                },
            ],
            remappings=[(BUDGET_TOPIC, budget_topic)],
        ),
        Node(
            package=PACKAGE,
            executable="thermal_monitor",
            name="thermal_monitor",
            namespace=namespace,
            output="screen",
            emulate_tty=True,
            parameters=[thermal_config, {"use_sim_time": sim_time}],
            remappings=[(BUDGET_TOPIC, budget_topic)],
        ),
    ])
