"""The ament_python package is complete: manifest, entry points, data files, and the ROS-free core."""

import ast
import importlib
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROSDEP_CHECK = ROOT.parent / "shared" / "tools" / "rosdep-check"
FIRST_PARTY = {"admn_core", "admn_ros"}
# Import name -> rosdep key (package.xml) for the Python modules that have one in the Kilted rosdistro.
ROSDEP_KEYS = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml", "torch": "python3-torch",
               "PIL": "python3-pil", "h5py": "python3-h5py", "psutil": "python3-psutil", "pynvml": "python3-pynvml",
               "matplotlib": "python3-matplotlib", "tqdm": "python3-tqdm", "pytest": "python3-pytest",
               "hypothesis": "python3-hypothesis"}
# Import name -> requirement (requirements/*.txt) for those without a usable rosdep key.
PIP_ONLY = {"timm": "timm", "safetensors": "safetensors", "rosbags": "rosbags", "onnx": "onnx",
            "onnxruntime": "onnxruntime"}
# Keys declared for what a pip-only requirement needs: apt's torchvision matches apt's torch (timm needs it).
FOR_PIP_ONLY = {"python3-torchvision"}


def _setup_call() -> ast.Call:
    tree = ast.parse((ROOT / "setup.py").read_text())
    calls = (node for node in ast.walk(tree) if isinstance(node, ast.Call))
    return next(call for call in calls if getattr(call.func, "id", "") == "setup")


def _package_depends() -> set[str]:
    root = ElementTree.parse(ROOT / "package.xml").getroot()
    return {element.text.strip() for element in root.iter() if element.tag.endswith("depend")}


def _requirements() -> set[str]:
    names = set()
    for path in (ROOT / "requirements").glob("*.txt"):
        for line in path.read_text().splitlines():
            name = re.split(r"[\s=<>!~\[;#]", line.strip(), maxsplit=1)[0]
            if name:
                names.add(name.lower())
    return names


def _imported_modules(folders) -> dict[str, str]:
    """Top-level module -> first file importing it, for every import (also function-local ones) in `folders`."""
    modules = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    modules.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return {name: path for name, path in modules.items()
            if name not in sys.stdlib_module_names and name not in FIRST_PARTY}


def test_package_xml_is_format_3_with_the_runtime_dependencies():
    root = ElementTree.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "admn_ros"
    required = {"rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "diagnostic_msgs", "message_filters",
                "rcl_interfaces", "launch", "launch_ros", "ament_index_python", "python3-numpy", "python3-opencv",
                "python3-yaml", "python3-torch"}
    assert required <= _package_depends(), required - _package_depends()
    assert root.find("export/build_type").text == "ament_python"


def test_every_import_is_declared_in_package_xml_or_requirements():
    depends, requirements = _package_depends(), _requirements()
    undeclared = {}
    for module, path in _imported_modules(["admn_core", "admn_ros", "launch"]).items():
        if module in PIP_ONLY:
            declared = PIP_ONLY[module].lower() in requirements
        else:  # a ROS package is its own key
            declared = ROSDEP_KEYS.get(module, module) in depends
        if not declared:
            undeclared[module] = path
    assert not undeclared, f"imports without a package.xml key or a requirement (module: first importer): {undeclared}"


def test_package_xml_declares_nothing_the_code_does_not_use():
    used = set(_imported_modules(["admn_core", "admn_ros", "launch"])) | {"rclpy"}
    test_used = set(_imported_modules(["test"]))
    keys = {ROSDEP_KEYS.get(module, module) for module in used} | FOR_PIP_ONLY
    root = ElementTree.parse(ROOT / "package.xml").getroot()
    for element in root:
        if element.tag.endswith("depend") and element.tag != "test_depend":
            assert element.text in keys, f"<{element.tag}>{element.text}: not imported by the package"
    for element in root.iter("test_depend"):
        assert element.text in {ROSDEP_KEYS.get(module, module) for module in test_used}, \
            f"<test_depend>{element.text}: not used by the tests"


def _rosdep() -> str | None:
    return shutil.which("rosdep") or next((str(p) for p in [Path(sys.prefix) / "bin" / "rosdep"] if p.exists()), None)


def test_rosdep_resolves_every_key_for_the_kilted_rosdistro():
    if not ROSDEP_CHECK.is_file():
        pytest.skip(f"{ROSDEP_CHECK} (the offline rosdistro snapshot and its checker) is not on this machine")
    rosdep = _rosdep()
    if rosdep is None:
        pytest.skip("rosdep is not installed (requirements/dev.txt)")
    env = {**os.environ, "PATH": f"{Path(rosdep).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    completed = subprocess.run(["bash", str(ROSDEP_CHECK), str(ROOT)], capture_output=True, text=True, env=env,
                               timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr


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


def _console_scripts() -> dict[str, str]:
    call = _setup_call()
    entry_points = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "entry_points"))
    return dict((part.strip() for part in script.split("=")) for script in entry_points["console_scripts"])


@pytest.mark.parametrize("module", ["admn_ros.bags.live_replay", "admn_ros.bags.replay_cli", "admn_ros.tools.bringup",
                                    "admn_ros.tools.demo"])
def test_modules_the_readme_runs_are_console_scripts_with_help(module):
    assert f"{module}:main" in _console_scripts().values(), f"{module} has no console script in setup.py"
    completed = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0 and completed.stdout.startswith("usage: "), completed.stdout + completed.stderr


def test_live_replay_command_line_rejects_a_missing_bag_with_a_reason(tmp_path):
    missing = tmp_path / "no_bag"
    completed = subprocess.run([sys.executable, "-m", "admn_ros.bags.live_replay", str(missing), "--model",
                                str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "out")],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert completed.stderr.startswith("admn_live_replay: ") and str(missing) in completed.stderr


def _fake_system_site(root: Path, modules: dict[str, str | None]) -> Path:
    """A site folder standing in for a ROS install's dist-packages: module -> version of its pip metadata or None."""
    for module, version in modules.items():
        (root / module).mkdir(parents=True)
        (root / module / "__init__.py").write_text(f"__version__ = {version!r}\n")
        if version:
            info = root / f"{module}-{version}.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: {version}\n")
    return root


def _robot_install(venv: Path, system_site: Path, *options: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": getattr(sys, "_base_executable", sys.executable), "PYTHONPATH": str(system_site)}
    return subprocess.run(["bash", str(ROOT / "scripts" / "robot-install.sh"), *options, str(venv)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_robot_install_keeps_the_systems_packages_and_installs_only_the_rest(tmp_path):
    system = _fake_system_site(tmp_path / "dist-packages", {"rclpy": None, "numpy": "1.26.4", "cv2": None})
    completed = _robot_install(tmp_path / "venv", system, "--dry-run")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "include-system-site-packages = true" in (tmp_path / "venv" / "pyvenv.cfg").read_text()
    plan = tmp_path / "venv" / "admn-robot-install"
    to_install = (plan / "requirements.txt").read_text().split()
    constraints = (plan / "constraints.txt").read_text().splitlines()
    assert "numpy" not in to_install and "opencv-python-headless" not in to_install
    assert {"torch", "timm", "safetensors", "rosbags"} <= set(to_install)
    assert "numpy==1.26.4" in constraints and not any(line.startswith("numpy==2") for line in constraints)
    assert not any(line.startswith("opencv-python-headless") for line in constraints)
    assert any(line.startswith("torch==") for line in constraints), "what the system lacks keeps the project's pin"
    assert f"-c {plan / 'constraints.txt'} -r {plan / 'requirements.txt'}" in completed.stdout


def test_robot_install_refuses_without_a_ros_environment(tmp_path):
    completed = _robot_install(tmp_path / "venv", _fake_system_site(tmp_path / "site", {"numpy": "1.26.4"}))
    assert completed.returncode == 1 and "source the ROS 2 setup first" in completed.stderr
    assert not (tmp_path / "venv").exists()
