"""The launch file, setup.py's console scripts, config/*.yaml, the nodes' declared parameters and admn_bringup agree.

launch/gdtm_tracker.launch.py is read with `ast` for the structure. The YAML files are loaded by real rcl (a node
with --params-file), in the root namespace and in a namespace, as ros2 launch would pass them. Where the upstream
ROS 2 command-line tools are at hand (../shared/ros-tools, installed into a tools venv layered over this one and
cached in pytest's cache folder), real `ros2 pkg`, `ros2 run` and `ros2 launch` run against the package registered
by admn_ros.tools.ament_register, as `make venv` does.
"""

import ast
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rclpy.node import Node
from rclpy.parameter import Parameter

from admn_core.bench import random_bundle
from admn_core.bundle import save_bundle
from admn_ros.nodes.admn_node import PARAMETERS, AdmnNode, validate_parameter
from admn_ros.tools import bringup
from admn_ros.tools.ament_register import console_scripts as installed_console_scripts
from admn_ros.tools.ament_register import register
from admn_ros.tools.share import REFERENCE_MODEL

from model_fixtures import micro_config
from ros_fixtures import isolate_ros_environment, ros_context, spin_until, unique_name  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILE = ROOT / "launch" / "gdtm_tracker.launch.py"
CONFIG_DIR = ROOT / "config"
ROS_PARAMETERS = {"use_sim_time"}  # declared by every rclpy node


def _call_name(call: ast.Call) -> str:
    return call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")


def _calls(tree, name):
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and _call_name(node) == name]


def _kwargs(call: ast.Call) -> dict:
    return {kw.arg: kw.value for kw in call.keywords}


def _constant_strings(node) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


@pytest.fixture(scope="module")
def launch_tree():
    return ast.parse(LAUNCH_FILE.read_text())


def _bindings(tree) -> dict[str, str]:
    """Simple names bound in the launch file: NAME = "constant" -> constant, x = LaunchConfiguration("arg") -> arg."""
    bindings = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                bindings[node.targets[0].id] = value.value
            elif isinstance(value, ast.Call) and _call_name(value) == "LaunchConfiguration":
                bindings[node.targets[0].id] = value.args[0].value
    return bindings


@pytest.fixture(scope="module")
def launch_nodes(launch_tree):
    """name -> {'executable', 'package', 'parameter_files' (launch argument names), 'overrides' (dict keys)}."""
    bindings = _bindings(launch_tree)

    def value(node):
        return node.value if isinstance(node, ast.Constant) else bindings[node.id]

    nodes = {}
    for call in _calls(launch_tree, "Node"):
        kwargs = _kwargs(call)
        files, overrides = [], []
        for item in kwargs["parameters"].elts:
            if isinstance(item, ast.Dict):
                overrides += [key.value for key in item.keys]
            else:  # a name bound to LaunchConfiguration("<argument>")
                files.append(value(item))
        nodes[value(kwargs["name"])] = {"executable": value(kwargs["executable"]),
                                        "package": value(kwargs["package"]),
                                        "parameter_files": files, "overrides": overrides}
    return nodes


@pytest.fixture(scope="module")
def launch_arguments(launch_tree):
    """argument name -> default value's string constants (e.g. the YAML file name), bound names resolved."""
    bindings = _bindings(launch_tree)

    def strings(node):
        if isinstance(node, ast.Name) and node.id in bindings:
            return [bindings[node.id]]
        return _constant_strings(node)

    return {call.args[0].value: strings(_kwargs(call).get("default_value", ast.Constant(None)))
            for call in _calls(launch_tree, "DeclareLaunchArgument")}


@pytest.fixture(scope="module")
def console_scripts():
    tree = ast.parse((ROOT / "setup.py").read_text())
    entry_points = next(kw.value for call in _calls(tree, "setup") for kw in call.keywords if kw.arg == "entry_points")
    scripts = ast.literal_eval(entry_points)["console_scripts"]
    return {name.strip(): target.strip() for name, target in (line.split("=") for line in scripts)}


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("bundle") / "micro.safetensors"
    return str(save_bundle(path, random_bundle(micro_config(), budgets=[6])))


def _declared_parameters(context, name, bundle_path) -> set[str]:
    if name == "admn_node":
        node = AdmnNode(context=context, parameter_overrides=[Parameter("model", value=bundle_path)])
    else:
        from admn_ros.nodes.thermal_monitor import ThermalMonitorNode

        node = ThermalMonitorNode(context=context, parameter_overrides=[Parameter("source", value="scripted")])
    try:
        return set(node.list_parameters([], 0).names) - {"start_type_description_service"}
    finally:
        node.destroy_node()


def test_launch_executables_are_console_scripts_with_a_main(launch_nodes, console_scripts):
    import importlib

    assert set(launch_nodes) == {"admn_node", "thermal_monitor"}
    for node in launch_nodes.values():
        assert node["package"] == "admn_ros"
        assert node["executable"] in console_scripts, f"{node['executable']} is not in setup.py console_scripts"
        module, function = console_scripts[node["executable"]].split(":")
        assert callable(getattr(importlib.import_module(module), function))
    for script in ("admn_bringup", "admn_node_benchmark"):
        module, function = console_scripts[script].split(":")
        assert callable(getattr(importlib.import_module(module), function))


def test_launch_arguments_and_default_files(launch_arguments, launch_nodes, launch_tree):
    assert set(launch_arguments) == {"model", "device", "config", "thermal_config", "use_sim_time", "namespace",
                                     "frame_id", "budget_topic"}
    assert launch_arguments["frame_id"] == ["map"], "REP-105: poses in the map frame by default"
    assert launch_arguments["budget_topic"] == ["compute_budget"], "relative: one budget per namespace by default"
    assert "models" in launch_arguments["model"], "model defaults to the shipped reference model"
    assert "admn_node.yaml" in launch_arguments["config"]
    assert "thermal_monitor.yaml" in launch_arguments["thermal_config"]
    for name in ("admn_node.yaml", "thermal_monitor.yaml", "fastdds_large_data.xml"):
        assert (CONFIG_DIR / name).is_file()
    assert launch_nodes["admn_node"]["parameter_files"] == ["config"]
    assert launch_nodes["thermal_monitor"]["parameter_files"] == ["thermal_config"]
    env = _calls(launch_tree, "SetEnvironmentVariable")
    assert len(env) == 1 and _bindings(launch_tree)[env[0].args[0].id] == "FASTDDS_DEFAULT_PROFILES_FILE"
    assert "fastdds_large_data.xml" in _constant_strings(env[0].args[1])
    assert "get_package_share_directory" in LAUNCH_FILE.read_text()


def test_launch_overrides_and_yaml_keys_are_declared_parameters(ros_context, launch_nodes, bundle_path):  # noqa: F811
    files = {"admn_node": CONFIG_DIR / "admn_node.yaml", "thermal_monitor": CONFIG_DIR / "thermal_monitor.yaml"}
    for name, path in files.items():
        declared = _declared_parameters(ros_context, name, bundle_path)
        assert set(launch_nodes[name]["overrides"]) <= declared, name
        document = yaml.safe_load(path.read_text())
        (values,) = [section["ros__parameters"] for section in document.values()]
        unknown = set(values) - declared
        assert not unknown, f"{path.name}: parameters the node does not declare: {sorted(unknown)}"
    admn_values = next(iter(yaml.safe_load(files["admn_node"].read_text()).values()))["ros__parameters"]
    assert set(admn_values) == set(PARAMETERS), "admn_node.yaml should list every parameter"
    for key, value in admn_values.items():
        assert type(value) is type(PARAMETERS[key][0]), f"{key}: YAML {value!r} has the wrong type for ROS"
        assert validate_parameter(key, value) is None


@pytest.mark.parametrize(("name", "namespace"), [
    ("admn_node", ""), ("admn_node", "robot1"), ("thermal_monitor", ""),
    ("thermal_monitor", "robot1"),
])
def test_yaml_files_apply_in_the_root_namespace_and_in_a_namespace(ros_context, name, namespace):  # noqa: F811
    path = CONFIG_DIR / f"{name}.yaml"
    node = Node(name, context=ros_context, namespace=namespace, automatically_declare_parameters_from_overrides=True,
                cli_args=["--ros-args", "--params-file", str(path)])
    try:
        document = yaml.safe_load(path.read_text())
        (values,) = [section["ros__parameters"] for section in document.values()]
        assert set(values) <= set(node.list_parameters([], 0).names), f"{path.name} not applied to {namespace!r}"
    finally:
        node.destroy_node()


def test_bringup_builds_the_same_nodes_files_and_overrides_as_the_launch_file(launch_nodes, console_scripts,
                                                                              launch_arguments, launch_tree):
    args = bringup.parse_args(["--model", "m.safetensors", "--device", "cuda", "--namespace", "robot1",
                               "--use-sim-time", "--budget-topic", "/compute_budget"])
    specs = {spec.name: spec for spec in bringup.build_commands(args, python="python3")}
    assert set(specs) == set(launch_nodes)
    for name, spec in specs.items():
        argv = spec.argv
        assert argv[:3] == ["python3", "-m", console_scripts[launch_nodes[name]["executable"]].split(":")[0]]
        assert argv[3] == "--ros-args" and "__ns:=/robot1" in argv and f"__node:={name}" in argv
        params_file = Path(argv[argv.index("--params-file") + 1])
        file_argument = launch_nodes[name]["parameter_files"][0]
        assert params_file.name in launch_arguments[file_argument] and params_file.is_file()
        overrides = {argv[i + 1].split(":=")[0]: argv[i + 1].split(":=")[1] for i, a in enumerate(argv) if a == "-p"}
        assert set(overrides) == set(launch_nodes[name]["overrides"])
        assert overrides["use_sim_time"] == "true"
        assert argv[argv.index("compute_budget:=/compute_budget") - 1] == "-r"
        assert Path(spec.env_overrides["FASTDDS_DEFAULT_PROFILES_FILE"]).name == "fastdds_large_data.xml"
        assert Path(spec.env_overrides["FASTDDS_DEFAULT_PROFILES_FILE"]).is_file()
    overrides = specs["admn_node"].argv
    assert f"model:={Path('m.safetensors').resolve()}" in overrides and "device:=cuda" in overrides
    assert "frame_id:=map" in overrides


def test_bringup_keeps_a_users_fastdds_profile_and_sets_the_shipped_one_otherwise(monkeypatch, tmp_path):
    args = bringup.parse_args(["--model", "m.safetensors"])
    user_profile = str(tmp_path / "my_profile.xml")
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", user_profile)
    assert {spec.env_overrides["FASTDDS_DEFAULT_PROFILES_FILE"] for spec in bringup.build_commands(args)} == \
        {user_profile}
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE")
    shipped = {spec.env_overrides["FASTDDS_DEFAULT_PROFILES_FILE"] for spec in bringup.build_commands(args)}
    assert {Path(path).name for path in shipped} == {"fastdds_large_data.xml"}


def _env():
    isolate_ros_environment()
    return dict(os.environ)


def test_node_main_exits_with_a_clear_reason_when_the_model_is_missing(tmp_path):
    missing = tmp_path / "nope.safetensors"
    completed = subprocess.run([sys.executable, "-m", "admn_ros.nodes.admn_node", "--ros-args",
                                "-p", f"model:={missing}"],
                               capture_output=True, text=True, timeout=60, env=_env())
    assert completed.returncode == 2
    assert f"bundle not found: {missing}" in completed.stderr


def test_bringup_starts_both_nodes_and_stops_cleanly_on_sigint(ros_context, bundle_path):  # noqa: F811
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import Int32

    from admn_ros.msgs.qos import BUDGET_LATCHED_SUBSCRIPTION_QOS, BUDGET_TOPIC

    namespace = unique_name("bringup")
    process = subprocess.Popen([sys.executable, "-m", "admn_ros.tools.bringup", "--model", bundle_path, "--namespace",
                                namespace], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watcher = Node("bringup_watcher", context=ros_context)
    budgets = []
    watcher.create_subscription(Int32, f"/{namespace}/{BUDGET_TOPIC}", budgets.append,
                                BUDGET_LATCHED_SUBSCRIPTION_QOS)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(watcher)

    def running():
        names = set(watcher.get_node_names_and_namespaces())
        return {("admn_node", f"/{namespace}"), ("thermal_monitor", f"/{namespace}")} <= names

    try:
        assert spin_until(executor, lambda: running() and budgets, 60.0), "bring-up did not start both nodes"
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert time.monotonic() - started < 10.0
        assert "starting admn_node" in output and "FASTDDS_DEFAULT_PROFILES_FILE=" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        watcher.destroy_node()
        executor.shutdown()


# ---------------------------------------------------------- real ros2 pkg / run / launch on the registered package

ROS_TOOLS = ROOT.parent / "shared" / "ros-tools"


def _site_packages(prefix: Path) -> Path:
    return prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


@pytest.fixture(scope="module")
def ros2_tools(request, tmp_path_factory) -> Path:
    """This venv's `ros2`, else that of a tools venv over this one: this venv's packages are on its path (a .pth),
    the kit's wheels (ros2cli, launch, launch_ros, message_filters) only in it, so this venv is left as it is."""
    if (Path(sys.prefix) / "bin" / "ros2").is_file():
        return Path(sys.prefix) / "bin" / "ros2"
    if not (ROS_TOOLS / "install.sh").is_file():
        pytest.skip(f"{ROS_TOOLS} (upstream ROS 2 command-line tools kit) is not on this machine")
    kit = hashlib.sha256((ROS_TOOLS / "wheels" / "SHA256SUMS").read_bytes()).hexdigest()
    cache = request.config.cache
    venv = (cache.mkdir("ros-tools-venv") if cache else tmp_path_factory.mktemp("ros-tools-venv")) / kit[:16]
    stamp = venv / ".installed"
    if not stamp.is_file() or stamp.read_text() != str(_site_packages(Path(sys.prefix))):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        (_site_packages(venv) / "admn_main_venv.pth").write_text(
            f"import site; site.addsitedir({str(_site_packages(Path(sys.prefix)))!r})\n")
        # This process runs bootstrapped (LD_LIBRARY_PATH to the ROS libraries of this venv): the tools inherit it.
        completed = subprocess.run(["bash", str(ROS_TOOLS / "install.sh"), str(venv)], capture_output=True,
                                   text=True, timeout=600)
        if completed.returncode != 0:
            pytest.skip(f"ros-tools install.sh failed (PyPI unreachable?): {completed.stderr[-2000:]}")
        stamp.write_text(str(_site_packages(Path(sys.prefix))))
    return venv / "bin" / "ros2"


@pytest.fixture(scope="module")
def registered_prefix(tmp_path_factory) -> Path:
    """A venv-like prefix holding this venv's console scripts, registered as `make venv` registers .venv."""
    prefix = tmp_path_factory.mktemp("prefix")
    (prefix / "bin").mkdir()
    for name in installed_console_scripts():
        (prefix / "bin" / name).symlink_to(Path(sys.prefix) / "bin" / name)
    register(prefix)
    return prefix


def _ros2_env(ros2: Path, prefix: Path, **extra) -> dict:
    env = _env()
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), str(ros2.parent.parent), sys.prefix])
    env.update(extra)
    return env


def test_register_links_package_files_and_console_scripts_idempotently(registered_prefix):
    share = registered_prefix / "share" / "admn_ros"
    assert (registered_prefix / "share" / "ament_index" / "resource_index" / "packages" / "admn_ros").is_file()
    assert (share / "package.xml").resolve() == ROOT / "package.xml"
    assert (share / "launch").is_dir() and not (share / "launch").is_symlink()  # ros2 launch walks real folders
    assert (share / "launch" / LAUNCH_FILE.name).resolve() == LAUNCH_FILE
    assert {p.name for p in (share / "config").iterdir()} == {p.name for p in CONFIG_DIR.iterdir() if p.is_file()}
    assert (registered_prefix / "lib" / "admn_ros" / "admn_node").resolve() == \
        (Path(sys.prefix) / "bin" / "admn_node").resolve()
    (share / "config" / "removed.yaml").symlink_to(registered_prefix / "gone.yaml")
    assert sorted(register(registered_prefix)) == sorted(register(registered_prefix))
    assert not (share / "config" / "removed.yaml").is_symlink(), "a link to a removed file was left behind"


def test_ros2_pkg_run_and_launch_find_the_registered_package(ros2_tools, registered_prefix):
    env = _ros2_env(ros2_tools, registered_prefix)

    def ros2(*args):
        completed = subprocess.run([str(ros2_tools), *args], capture_output=True, text=True, env=env, timeout=120)
        assert completed.returncode == 0, completed.stdout + completed.stderr
        return completed.stdout

    assert ros2("pkg", "prefix", "admn_ros").strip() == str(registered_prefix)
    assert {"admn_node", "thermal_monitor"} <= {line.split()[1] for line in ros2("pkg", "executables", "admn_ros")
                                                .splitlines()}
    assert ros2("run", "admn_ros", "admn_bringup", "--help").startswith("usage: admn_bringup")
    arguments = ros2("launch", "admn_ros", "gdtm_tracker.launch.py", "--show-args")
    assert "'budget_topic'" in arguments and "(default: 'map')" in arguments
    assert str(registered_prefix / "share" / "admn_ros" / "config" / "admn_node.yaml") in arguments
    assert f"(default: '{registered_prefix / 'share' / 'admn_ros' / 'models' / REFERENCE_MODEL}')" in arguments


def _children_environ(pid: int) -> list[dict[str, str]]:
    """Environments of the processes started by `pid` (Linux /proc)."""
    environments = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            raw = Path(f"/proc/{child}/environ").read_bytes()
            environments.append(dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item))
    return environments


def _launch(ros2, prefix, bundle, env, *arguments):
    return subprocess.Popen([str(ros2), "launch", "admn_ros", "gdtm_tracker.launch.py", f"model:={bundle}",
                             *arguments], env=_ros2_env(ros2, prefix, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _stop_launch(process) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    return output


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child environments from Linux /proc")
@pytest.mark.parametrize("budget_topic", [None, "/compute_budget"])
def test_ros2_launch_in_a_namespace_keeps_a_user_profile_and_places_the_budget_topic(
        ros_context, ros2_tools, registered_prefix, bundle_path, tmp_path, budget_topic):  # noqa: F811
    from rclpy.executors import SingleThreadedExecutor

    namespace = unique_name("launch")
    user_profile = tmp_path / "user_profile.xml"
    user_profile.write_bytes((CONFIG_DIR / "fastdds_large_data.xml").read_bytes())
    arguments = [f"namespace:={namespace}"] + ([f"budget_topic:={budget_topic}"] if budget_topic else [])
    process = _launch(ros2_tools, registered_prefix, bundle_path,
                      {"FASTDDS_DEFAULT_PROFILES_FILE": str(user_profile)}, *arguments)
    watcher = Node("launch_watcher", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(watcher)
    expected_topic = budget_topic or f"/{namespace}/compute_budget"
    try:
        def budget_wired():
            publishers = {(p.node_name, p.node_namespace) for p in watcher.get_publishers_info_by_topic(expected_topic)}
            subscribers = {(s.node_name, s.node_namespace)
                           for s in watcher.get_subscriptions_info_by_topic(expected_topic)}
            return ("thermal_monitor", f"/{namespace}") in publishers and ("admn_node", f"/{namespace}") in subscribers

        assert spin_until(executor, lambda: budget_wired() or process.poll() is not None, 90.0) and \
            process.poll() is None, (f"thermal_monitor -> {expected_topic} -> admn_node not wired; topics: "
                                     f"{sorted(name for name, _ in watcher.get_topic_names_and_types())}")
        profiles = {env.get("FASTDDS_DEFAULT_PROFILES_FILE") for env in _children_environ(process.pid)}
        assert profiles == {str(user_profile)}, "the launch file replaced the user's Fast DDS profile"
    finally:
        output = _stop_launch(process)
        watcher.destroy_node()
        executor.shutdown()
    assert process.returncode == 0, output


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child environments from Linux /proc")
def test_ros2_launch_sets_the_shipped_profile_when_none_is_set(ros2_tools, registered_prefix, bundle_path):
    env = _ros2_env(ros2_tools, registered_prefix)
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    process = subprocess.Popen([str(ros2_tools), "launch", "admn_ros", "gdtm_tracker.launch.py",
                                f"model:={bundle_path}", f"namespace:={unique_name('launch')}"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60.0
        profiles = set()
        while time.monotonic() < deadline and len(profiles) < 1:
            profiles = {child.get("FASTDDS_DEFAULT_PROFILES_FILE") for child in _children_environ(process.pid)}
            time.sleep(0.2)
        shipped = registered_prefix / "share" / "admn_ros" / "config" / "fastdds_large_data.xml"
        assert profiles == {str(shipped)}
    finally:
        output = _stop_launch(process)
    assert process.returncode == 0, output


@pytest.fixture(scope="module")
def reference_prefix(tmp_path_factory) -> tuple[Path, Path]:
    """(prefix, checkout): a checkout whose models/ holds a (micro) reference model, registered in a venv-like prefix
    as `make venv` registers .venv; independent of whether this checkout ships its trained model yet."""
    root = tmp_path_factory.mktemp("reference")
    checkout = root / "checkout"
    checkout.mkdir()
    for name in ("package.xml", "launch", "config"):
        (checkout / name).symlink_to(ROOT / name)
    (checkout / "models").mkdir()
    save_bundle(checkout / "models" / REFERENCE_MODEL, random_bundle(micro_config(), budgets=[6]))
    prefix = root / "prefix"
    (prefix / "bin").mkdir(parents=True)
    for name in installed_console_scripts():
        (prefix / "bin" / name).symlink_to(Path(sys.prefix) / "bin" / name)
    register(prefix, checkout)
    return prefix, checkout


def test_ros2_launch_without_a_model_argument_serves_the_reference_model(ros_context, ros2_tools,  # noqa: F811
                                                                          reference_prefix):
    from rcl_interfaces.srv import GetParameters
    from rclpy.executors import SingleThreadedExecutor

    from admn_core.ros_interface import ALLOCATION_TOPIC, output_topic

    prefix, _checkout = reference_prefix
    namespace = unique_name("launch")
    process = subprocess.Popen([str(ros2_tools), "launch", "admn_ros", "gdtm_tracker.launch.py",
                                f"namespace:={namespace}"], env=_ros2_env(ros2_tools, prefix), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    watcher = Node("launch_watcher", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(watcher)
    parameters = watcher.create_client(GetParameters, f"/{namespace}/admn_node/get_parameters")
    allocation = output_topic(ALLOCATION_TOPIC, namespace)
    try:
        # The node creates its publishers only once the bundle has loaded.
        serving = spin_until(executor, lambda: process.poll() is not None or (
            parameters.service_is_ready() and watcher.count_publishers(allocation) >= 1), 90.0)
        assert serving and process.poll() is None, f"admn_node did not start serving {allocation}"
        future = parameters.call_async(GetParameters.Request(names=["model"]))
        assert spin_until(executor, future.done, 30.0)
        assert future.result().values[0].string_value == str(prefix / "share" / "admn_ros" / "models" /
                                                             REFERENCE_MODEL)
    finally:
        output = _stop_launch(process)
        watcher.destroy_node()
        executor.shutdown()
    assert process.returncode == 0, output
