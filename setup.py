"""ament_python package `admn_ros`: installs both `admn_core` (pure Python + PyTorch) and `admn_ros` (rclpy).

Works with `colcon build` on a robot with ROS 2 Jazzy/Kilted (docs/install.md), and with `pip install -e .` in a
venv: `make venv` does that, then registers the checkout in the venv's ament index (admn_ros/tools/ament_register.py:
the marker, share/admn_ros/{package.xml,launch,config,models} and lib/admn_ros/<console scripts>, which an editable
install does not write), so `ros2 pkg prefix|run|launch admn_ros` find it.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "admn_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["admn_core", "admn_core.*", "admn_ros", "admn_ros.*"]),
    package_data={"admn_core.data": ["FORMAT.md"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        # The reference model (bundle, its metadata and model card): the default model of launch, bring-up and demo.
        (f"share/{PACKAGE}/models", glob("models/*.safetensors") + glob("models/*.json") + glob("models/*.md")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="admn_ros maintainers",
    maintainer_email="maintainers@admn-ros.dev",
    description="ADMN layer-adaptive multimodal perception for ROS 2",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "admn = admn_core.cli:main",
            "admn_node = admn_ros.nodes.admn_node:main",
            "thermal_monitor = admn_ros.nodes.thermal_monitor:main",
            "admn_bringup = admn_ros.tools.bringup:main",
            "admn_demo = admn_ros.tools.demo:main",
            "admn_node_benchmark = admn_ros.tools.benchmark_node:main",
            "admn_soak = admn_ros.tools.soak:main",
            "admn_replay_eval = admn_ros.bags.replay_cli:main",
            "admn_live_replay = admn_ros.bags.live_replay:main",
            "admn_train_bags = admn_ros.bags.train_cli:main",
        ],
    },
)
