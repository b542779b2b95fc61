"""The ament_python package is complete: manifest, entry points, data files, and the ROS-free core."""

import ast
import importlib
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_call() -> ast.Call:
    tree = ast.parse((ROOT / "setup.py").read_text())
    calls = (node for node in ast.walk(tree) if isinstance(node, ast.Call))
    return next(call for call in calls if getattr(call.func, "id", "") == "setup")


def test_package_xml_is_format_3_with_the_runtime_dependencies():
    root = ElementTree.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "admn_ros"
    depends = {element.text for element in root.iter() if element.tag.endswith("depend")}
    required = {"rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "diagnostic_msgs", "message_filters",
                "cv_bridge", "python3-numpy", "python3-opencv", "python3-yaml", "python3-torch", "ament_python"}
    assert required <= depends, required - depends
    assert root.find("export/build_type").text == "ament_python"


def test_console_scripts_resolve_to_callables():
    call = _setup_call()
    entry_points = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "entry_points"))
    for script in entry_points["console_scripts"]:
        name, target = (part.strip() for part in script.split("="))
        module_name, function_name = target.split(":")
        assert callable(getattr(importlib.import_module(module_name), function_name)), name


def test_ament_resource_marker_and_script_dirs_exist():
    assert (ROOT / "resource" / "admn_ros").is_file()
    setup_cfg = (ROOT / "setup.cfg").read_text()
    assert "install_scripts=$base/lib/admn_ros" in setup_cfg and "script_dir=$base/lib/admn_ros" in setup_cfg


def test_admn_core_never_imports_ros():
    forbidden = re.compile(r"^\s*(import|from)\s+(rclpy|sensor_msgs|std_msgs|geometry_msgs|diagnostic_msgs|"
                           r"message_filters|cv_bridge|rosgraph_msgs|builtin_interfaces)\b", re.MULTILINE)
    offenders = [str(path) for path in (ROOT / "admn_core").rglob("*.py") if forbidden.search(path.read_text())]
    assert offenders == []


def test_no_hard_coded_cuda_calls():
    offenders = [str(path) for folder in ("admn_core", "admn_ros") for path in (ROOT / folder).rglob("*.py")
                 if ".cuda()" in path.read_text()]
    assert offenders == []
